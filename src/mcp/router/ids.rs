//! Who is waiting for what: every id the router has minted, in both
//! directions, and the progress tokens that ride on them. One table owns
//! them all and the rule for removing them, so an answer, a timeout, a
//! cancellation and a child's exit all clean up alike.

use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a request sent to a child belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// A client request forwarded to one child.
    Forward {
        child: usize,
        client_id: Value,
        /// Its progress token, so the child's progress extends its deadline.
        token: Option<String>,
        /// Tracked for the audit log.
        audit: Option<Box<super::audit::Open>>,
        /// For a modern client: how its result is stamped.
        modern: Option<super::era::Reply>,
        /// A legacy client's call to a modern child, as sent: resent with
        /// the client's input if the child answers `input_required`.
        resend: Option<Box<super::drive::Resend>>,
    },
    /// One child's part of a fan-out (initialize, a list, setLevel).
    Part {
        child: usize,
        fanout: u64,
        pages: usize,
    },
}

impl Pending {
    pub fn child(&self) -> usize {
        match self {
            Pending::Forward { child, .. } | Pending::Part { child, .. } => *child,
        }
    }
}

struct Entry {
    pending: Pending,
    deadline: Instant,
    started: Instant,
}

/// A child's request to the client, under the id the client sees.
struct Outbound {
    child: usize,
    /// The child's own id, restored on the answer.
    id: Value,
    token: Option<String>,
}

/// A progress token as a map key (tokens are strings or numbers).
pub fn token_key(v: &Value) -> String {
    v.to_string()
}

#[derive(Default)]
pub struct IdTable {
    next: u64,
    /// Child-side id -> what it belongs to.
    pending: HashMap<u64, Entry>,
    /// Progress token of a forwarded client request -> child-side id.
    client_tokens: HashMap<String, u64>,
    /// Gateway id sent to the client -> the child's request.
    outbound: HashMap<u64, Outbound>,
    /// Progress token of a child's request to the client -> child.
    child_tokens: HashMap<String, usize>,
}

impl IdTable {
    /// A new id, unique in this session for requests and fan-outs alike.
    pub fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Registers a request to a child; returns the id to send it under.
    pub fn insert(&mut self, pending: Pending, timeout: Duration, now: Instant) -> u64 {
        let id = self.fresh();
        if let Pending::Forward { token: Some(t), .. } = &pending {
            self.client_tokens.insert(t.clone(), id);
        }
        let entry = Entry {
            pending,
            deadline: now + timeout,
            started: now,
        };
        self.pending.insert(id, entry);
        id
    }

    pub fn get(&self, id: u64) -> Option<&Pending> {
        self.pending.get(&id).map(|e| &e.pending)
    }

    /// Ends a request (answered, timed out, cancelled, child gone).
    pub fn take(&mut self, id: u64) -> Option<Pending> {
        let e = self.pending.remove(&id)?;
        if let Pending::Forward { token: Some(t), .. } = &e.pending {
            self.client_tokens.remove(t);
        }
        Some(e.pending)
    }

    /// Points forwarded request `id` at another client request (a retry of
    /// 2026-07-28, or Null while it waits for one) with its progress token
    /// and a new deadline.
    pub fn retarget(&mut self, id: u64, to: Value, token: Option<String>, deadline: Instant) {
        let Some(e) = self.pending.get_mut(&id) else {
            return;
        };
        e.deadline = deadline;
        if let Pending::Forward {
            client_id,
            token: t,
            ..
        } = &mut e.pending
        {
            *client_id = to;
            if let Some(old) = std::mem::replace(t, token.clone()) {
                self.client_tokens.remove(&old);
            }
            if let Some(new) = token {
                self.client_tokens.insert(new, id);
            }
        }
    }

    /// `child`'s open calls of a modern client that may take input, oldest
    /// first: (id, the client's id, the call).
    pub fn input_legs(&self, child: usize) -> Vec<(u64, Value, super::era::InputCall)> {
        let mut legs: Vec<_> = self
            .pending
            .iter()
            .filter_map(|(id, e)| match &e.pending {
                Pending::Forward {
                    child: c,
                    client_id,
                    modern: Some(m),
                    ..
                } if *c == child && !client_id.is_null() => m
                    .input
                    .as_ref()
                    .map(|i| (*id, client_id.clone(), (**i).clone())),
                _ => None,
            })
            .collect();
        legs.sort_by_key(|l| l.0);
        legs
    }

    /// The forwarded request the client knows as `client_id`.
    pub fn find_forward(&self, client_id: &Value) -> Option<(u64, usize)> {
        self.pending.iter().find_map(|(id, e)| match &e.pending {
            Pending::Forward {
                child,
                client_id: c,
                ..
            } if c == client_id => Some((*id, *child)),
            _ => None,
        })
    }

    /// The most verbose `logLevel` among the modern requests in flight to
    /// `child`: its log messages at or above it reach the client.
    pub fn log_level(&self, child: usize) -> Option<u8> {
        self.pending
            .values()
            .filter_map(|e| match &e.pending {
                Pending::Forward {
                    child: c,
                    modern: Some(m),
                    ..
                } if *c == child => m.level,
                _ => None,
            })
            .min()
    }

    /// A child reported progress on `token`: its request may run another
    /// `timeout`, but never past `max_total` from its start.
    pub fn progress(
        &mut self,
        token: &Value,
        timeout: Duration,
        max_total: Duration,
        now: Instant,
    ) {
        if let Some(id) = self.client_tokens.get(&token_key(token))
            && let Some(e) = self.pending.get_mut(id)
        {
            e.deadline = (now + timeout).min(e.started + max_total);
        }
    }

    /// The requests waiting for `child`.
    pub fn of_child(&self, child: usize) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, e)| e.pending.child() == child)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|e| e.deadline).min()
    }

    /// The requests past their deadline, oldest id first.
    pub fn expired(&self, now: Instant) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Registers a child's request to the client; returns the id the
    /// client sees.
    pub fn outbound(&mut self, child: usize, id: Value, token: Option<&Value>) -> u64 {
        let gid = self.fresh();
        let token = token.map(token_key);
        if let Some(t) = &token {
            self.child_tokens.insert(t.clone(), child);
        }
        self.outbound.insert(gid, Outbound { child, id, token });
        gid
    }

    /// The client answered (or the child cancelled) request `gid`: the
    /// child and its own id.
    pub fn take_outbound(&mut self, gid: u64) -> Option<(usize, Value)> {
        let o = self.outbound.remove(&gid)?;
        if let Some(t) = o.token {
            self.child_tokens.remove(&t);
        }
        Some((o.child, o.id))
    }

    /// The id the client knows for `child`'s request `id`.
    pub fn outbound_id(&self, child: usize, id: &Value) -> Option<u64> {
        self.outbound
            .iter()
            .find(|(_, o)| o.child == child && o.id == *id)
            .map(|(g, _)| *g)
    }

    /// Which child a client's progress notification belongs to.
    pub fn child_of_token(&self, token: &Value) -> Option<usize> {
        self.child_tokens.get(&token_key(token)).copied()
    }

    /// Forgets `child`'s requests to the client (it exited).
    pub fn forget_outbound(&mut self, child: usize) {
        let gone: Vec<u64> = self
            .outbound
            .iter()
            .filter(|(_, o)| o.child == child)
            .map(|(g, _)| *g)
            .collect();
        for g in gone {
            self.take_outbound(g);
        }
    }

    /// Nothing is in flight either way (tests check for leaks with it).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
            && self.outbound.is_empty()
            && self.client_tokens.is_empty()
            && self.child_tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn ending_a_request_any_way_removes_its_token() {
        let now = Instant::now();
        let mut t = IdTable::default();
        let fwd = |tok: &str| Pending::Forward {
            child: 1,
            client_id: json!("c"),
            token: Some(tok.into()),
            audit: None,
            modern: None,
            resend: None,
        };
        let a = t.insert(fwd("\"p\""), T, now);
        assert_eq!(t.find_forward(&json!("c")), Some((a, 1)));
        t.progress(&json!("p"), T, Duration::from_secs(15), now + T);
        assert_eq!(
            t.next_deadline(),
            Some(now + Duration::from_secs(15)),
            "capped"
        );
        assert_eq!(t.take(a), Some(fwd("\"p\"")));
        assert!(t.is_empty(), "the token went with the request");
        let b = t.insert(fwd("\"q\""), T, now);
        assert_eq!(t.expired(now + T), vec![b]);
        assert_eq!(t.of_child(1), vec![b]);
        t.take(b);
        assert!(t.is_empty());
    }

    #[test]
    fn a_childs_requests_to_the_client_map_back_and_forget_their_tokens() {
        let mut t = IdTable::default();
        let g = t.outbound(2, json!(7), Some(&json!("tok")));
        assert_eq!(t.child_of_token(&json!("tok")), Some(2));
        assert_eq!(t.outbound_id(2, &json!(7)), Some(g));
        assert_eq!(t.outbound_id(1, &json!(7)), None, "another child's id 7");
        assert_eq!(t.take_outbound(g), Some((2, json!(7))));
        assert!(t.is_empty());
        t.outbound(3, json!(1), Some(&json!(5)));
        t.forget_outbound(3);
        assert!(t.is_empty());
    }
}
