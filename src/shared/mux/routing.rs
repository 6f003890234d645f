//! The mux's session side: a session's lines routed to a process (calls,
//! listens, subscriptions, cancels, answers to a process's requests), a
//! process's messages routed to the sessions they concern, a leaving
//! session's calls and listens ended, and where retries go ([`Pins`]).

use super::*;

/// The `requestState`s of `input_required` results kept to pin their
/// retries, at most (in all, and for one session), and for how long: a
/// process keeps its own states, so a retry must go back to the process
/// that issued it.
const STATES_MAX: usize = 4096;
const SESSION_STATES_MAX: usize = 256;
const STATE_TTL: Duration = Duration::from_secs(3600);

impl Mux {
    /// The ids of the calls in flight that `f` picks.
    pub(super) fn calls_where(&self, f: impl Fn(&Call) -> bool) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| f(c))
            .map(|(g, _)| *g)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Removes a finished call and its token.
    pub(super) fn end_call(&mut self, id: u64) -> Option<Call> {
        let c = self.calls.remove(&id)?;
        if let Some(t) = &c.token {
            self.tokens.remove(t);
        }
        let p = &mut self.procs[c.proc_];
        p.inflight = p.inflight.saturating_sub(1);
        Some(c)
    }

    pub(super) fn session_line(&mut self, s: u64, mut msg: Value) {
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        // The unit tests' stand-in for a bug in the mux.
        #[cfg(test)]
        assert!(method.as_deref() != Some("test/panic"), "a bug in the mux");
        let id = msg.get("id").cloned();
        match (method.as_deref(), id) {
            (Some("initialize"), Some(id)) => match &self.init {
                Some(r) => self.to_session(s, jsonrpc::result(id, r.clone())),
                None if self.any_coming() => self.waiting.push_back((s, msg)),
                None => self.unavailable(s, id),
            },
            (Some("logging/setLevel"), Some(id)) => self.answer_empty(s, id),
            (Some("resources/subscribe"), Some(id)) => {
                let uri = uri_of(&msg);
                if self.subs.get(&uri).is_none_or(HashSet::is_empty) {
                    // The first subscriber: the process that takes it holds
                    // the subscription (a queued one comes back here).
                    if let Some(p) = self.call_on(s, msg, None) {
                        self.holder.insert(uri.clone(), p);
                        self.subs.entry(uri).or_default().insert(s);
                    }
                } else {
                    self.subs.entry(uri).or_default().insert(s);
                    self.answer_empty(s, id);
                }
            }
            (Some("resources/unsubscribe"), Some(id)) => {
                let uri = uri_of(&msg);
                let was = self.subs.get_mut(&uri).is_some_and(|set| set.remove(&s));
                let last = was && self.subs.get(&uri).is_some_and(HashSet::is_empty);
                match self.holder.get(&uri).copied() {
                    Some(p) if last && self.is_ready(p) => {
                        self.subs.remove(&uri);
                        self.holder.remove(&uri);
                        self.call_on(s, msg, Some(p));
                    }
                    _ => {
                        if last {
                            self.subs.remove(&uri);
                            self.holder.remove(&uri);
                        }
                        self.answer_empty(s, id);
                    }
                }
            }
            (Some("subscriptions/listen"), Some(_)) => self.listen(s, msg),
            (Some(_), Some(_)) => {
                // A retry goes back to the process whose state it carries
                // (once: a state is good for one retry).
                let state = msg.at("/params/requestState").and_then(Value::as_str);
                let on = state.and_then(|st| self.pins.take(s, st, Instant::now()));
                self.call_on(s, msg, on);
            }
            (Some("notifications/cancelled"), None) => {
                let rid = msg.at("/params/requestId").cloned();
                let listen = self
                    .listens
                    .iter()
                    .find(|(_, l)| l.session == s && Some(&l.id) == rid.as_ref())
                    .map(|(g, _)| *g);
                if let Some(l) = listen.and_then(|g| self.listens.remove(&g).map(|l| (g, l))) {
                    msg["params"]["requestId"] = json!(l.0);
                    if self.is_ready(l.1.proc_) {
                        self.send(l.1.proc_, &msg);
                    }
                    return;
                }
                // Still waiting for a process: dropped, never sent.
                let before = self.waiting.len();
                self.waiting
                    .retain(|(w, m)| !(*w == s && m.get("id") == rid.as_ref()));
                if self.waiting.len() != before {
                    return;
                }
                let timed_out = msg.at("/params/reason").and_then(Value::as_str)
                    == Some(crate::mcp::router::TIMEOUT_REASON);
                let found = self
                    .calls
                    .iter()
                    .find(|(_, c)| c.session == s && Some(&c.id) == rid.as_ref())
                    .map(|(g, c)| (*g, c.proc_));
                if let Some((g, p)) = found {
                    self.end_call(g);
                    if timed_out {
                        self.note_overdue(p);
                    }
                    msg["params"]["requestId"] = json!(g);
                    self.send(p, &msg);
                }
            }
            (Some(_), None) => {} // initialized, roots changes: the mux is the client
            (None, Some(id)) => {
                // A session answers a process's request.
                if let Some(a) = id.as_u64().and_then(|m| self.asks.remove(&m))
                    && a.session == s
                {
                    msg["id"] = a.id;
                    self.send(a.proc_, &msg);
                }
            }
            (None, None) => {}
        }
    }

    /// Forwards a session's request to the least busy ready process.
    /// Forwards a session's request to process `on` if given and ready,
    /// else to the least busy ready one; returns the process, or None when
    /// the request was queued or refused.
    pub(super) fn call_on(&mut self, s: u64, mut msg: Value, on: Option<usize>) -> Option<usize> {
        let ready = on.filter(|&p| self.is_ready(p)).or_else(|| {
            (0..self.procs.len())
                .filter(|&p| self.is_ready(p))
                .min_by_key(|&p| self.procs[p].inflight)
        });
        let Some(p) = ready else {
            if self.backoff.failed || !self.any_coming() {
                if let Some(id) = msg.get("id").cloned() {
                    self.unavailable(s, id);
                }
            } else {
                self.waiting.push_back((s, msg));
            }
            return None;
        };
        let g = self.fresh();
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let token = msg.at("/params/_meta/progressToken").cloned().map(|t| {
            let mine = format!("m{g}");
            self.tokens.insert(mine.clone(), (s, t));
            mine
        });
        if let Some(t) = &token {
            msg["params"]["_meta"]["progressToken"] = json!(t);
        }
        msg["id"] = json!(g);
        self.calls.insert(
            g,
            Call {
                session: s,
                id,
                proc_: p,
                token,
                deadline: Instant::now() + self.timeout,
            },
        );
        self.procs[p].inflight += 1;
        self.send(p, &msg);
        Some(p)
    }

    /// A session's `subscriptions/listen` (to a modern process): not a
    /// call, since it is answered only when it ends, so no deadline and no
    /// place in the in-flight count; kept to be routed, cancelled and sent
    /// again after a restart.
    pub(super) fn listen(&mut self, s: u64, mut msg: Value) {
        let ready = (0..self.procs.len())
            .filter(|&p| self.is_ready(p))
            .min_by_key(|&p| self.procs[p].inflight);
        if ready.is_none() && self.any_coming() {
            return self.waiting.push_back((s, msg));
        }
        // With none ready or on its way (restarting after a backoff), it
        // waits at the first process, sent when that one is back: a
        // session's listen lasts as long as the session.
        let p = ready.unwrap_or(0);
        let g = self.fresh();
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        msg["id"] = json!(g);
        if self.is_ready(p) {
            self.send(p, &msg);
        }
        self.listens.insert(
            g,
            Listen {
                session: s,
                id,
                proc_: p,
                msg,
            },
        );
    }

    /// Answers a request of session `s` here, with an empty result.
    pub(super) fn answer_empty(&self, s: u64, id: Value) {
        self.to_session(s, jsonrpc::result(id, json!({})));
    }

    pub(super) fn unavailable(&self, s: u64, id: Value) {
        let why = format!("server {} is not available (restarting)", self.spec.name);
        self.to_session(s, jsonrpc::error(id, jsonrpc::SERVER_UNAVAILABLE, why));
    }

    pub(super) fn process_message(&mut self, p: usize, mut msg: Value) {
        let method = msg
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if let Some(id) = msg.get("id").cloned()
            && matches!(self.era, Some(ChildEra::Modern(_)))
        {
            let why = format!("{method}: a 2026-07-28 server sends no requests to clients");
            return self.send(p, &jsonrpc::error(id, jsonrpc::METHOD_NOT_FOUND, why));
        }
        if let Some(id) = msg.get("id").cloned() {
            // A request for a client: the one session with a call here.
            let mut on_it: Vec<u64> = self
                .calls
                .values()
                .filter(|c| c.proc_ == p)
                .map(|c| c.session)
                .collect();
            on_it.sort_unstable();
            on_it.dedup();
            let [s] = on_it[..] else {
                let why = format!(
                    "{method}: this shared server serves {} session(s) with calls in flight, so the gateway cannot tell whom to ask",
                    on_it.len()
                );
                return self.send(p, &jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, why));
            };
            let m = self.fresh();
            self.asks.insert(
                m,
                Ask {
                    proc_: p,
                    id,
                    session: s,
                },
            );
            msg["id"] = json!(m);
            return self.to_session(s, msg);
        }
        let tag = msg
            .get("params")
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(SUBSCRIPTION_ID))
            .cloned();
        if let Some(tag) = tag
            && method != "notifications/message"
        {
            // On a listen: to its session, under the session's id (one
            // no longer open is dropped).
            if let Some(l) = tag.as_u64().and_then(|g| self.listens.get(&g))
                && l.proc_ == p
            {
                msg["params"]["_meta"][SUBSCRIPTION_ID] = l.id.clone();
                self.to_session(l.session, msg);
            }
            return;
        }
        match method.as_str() {
            "notifications/progress" => {
                let tok = msg
                    .at("/params/progressToken")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Some((s, orig)) = self.tokens.get(tok).cloned() {
                    // Progress keeps the call alive, as in the router.
                    let deadline = Instant::now() + self.timeout;
                    if let Some(c) = self
                        .calls
                        .values_mut()
                        .find(|c| c.token.as_deref() == Some(tok))
                    {
                        c.deadline = deadline;
                    }
                    msg["params"]["progressToken"] = orig;
                    self.to_session(s, msg);
                }
            }
            "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed" => self.broadcast(&msg),
            "notifications/resources/updated" => {
                let uri = msg.at("/params/uri").and_then(Value::as_str).unwrap_or("");
                for s in self.subs.get(uri).into_iter().flatten() {
                    self.to_session(*s, msg.clone());
                }
            }
            "notifications/message" => {
                log::info!(
                    "[{}] {}",
                    self.spec.name,
                    msg.get("params").unwrap_or(&Value::Null)
                );
            }
            "notifications/cancelled" => {
                let rid = msg.at("/params/requestId").cloned();
                let m = self
                    .asks
                    .iter()
                    .find(|(_, a)| a.proc_ == p && Some(&a.id) == rid.as_ref())
                    .map(|(m, a)| (*m, a.session));
                if let Some((m, s)) = m {
                    self.asks.remove(&m);
                    msg["params"]["requestId"] = json!(m);
                    self.to_session(s, msg);
                }
            }
            _ => log::debug!("[{}] notification {method} not routed", self.spec.name),
        }
    }

    /// A session is gone: cancel its calls, drop its subscriptions.
    pub(super) fn detach(&mut self, s: u64) {
        self.sessions.remove(&s);
        self.waiting.retain(|(w, _)| *w != s);
        self.pins.forget(|w, _| w == s);
        self.asks.retain(|_, a| a.session != s);
        let mut listens: Vec<(u64, usize)> = self
            .listens
            .iter()
            .filter(|(_, l)| l.session == s)
            .map(|(g, l)| (*g, l.proc_))
            .collect();
        listens.sort_unstable();
        for (g, p) in listens {
            self.listens.remove(&g);
            if self.is_ready(p) {
                let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": g, "reason": "the session ended"}});
                self.send(p, &cancel);
            }
        }
        let mine = self.calls_where(|c| c.session == s);
        for g in mine {
            if let Some(c) = self.end_call(g) {
                let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": g, "reason": "the session ended"}});
                self.send(c.proc_, &cancel);
            }
        }
        let emptied: Vec<String> = self
            .subs
            .iter_mut()
            .filter_map(|(uri, set)| (set.remove(&s) && set.is_empty()).then(|| uri.clone()))
            .collect();
        for uri in emptied {
            self.subs.remove(&uri);
            if let Some(p) = self.holder.remove(&uri).filter(|&p| self.is_ready(p)) {
                self.internal_request(p, "resources/unsubscribe", json!({ "uri": uri }));
            }
        }
    }
}

/// Where `input_required` retries go: (session, digest of a
/// `requestState` it got) -> (the process that issued it, when). A digest,
/// so a big state costs nothing to keep; a keyed one, so no client can make
/// two states collide.
#[derive(Default)]
pub(super) struct Pins {
    map: HashMap<(u64, u64), (usize, Instant)>,
    digest: std::hash::RandomState,
}

impl Pins {
    /// Pins the retry of session `s` that will carry `state` to process
    /// `p`. The oldest pin goes first: the session's own past its share,
    /// anyone's past the total (after the expired ones).
    pub(super) fn keep(&mut self, s: u64, state: &str, p: usize, now: Instant) {
        if self.map.keys().filter(|(w, _)| *w == s).count() >= SESSION_STATES_MAX {
            self.drop_oldest(Some(s));
        }
        if self.map.len() >= STATES_MAX {
            self.map
                .retain(|_, (_, at)| now.duration_since(*at) < STATE_TTL);
        }
        if self.map.len() >= STATES_MAX {
            self.drop_oldest(None);
        }
        let key = (s, self.digest.hash_one(state));
        self.map.insert(key, (p, now));
    }

    /// The process for session `s`'s retry carrying `state`, once.
    pub(super) fn take(&mut self, s: u64, state: &str, now: Instant) -> Option<usize> {
        let (p, at) = self.map.remove(&(s, self.digest.hash_one(state)))?;
        (now.duration_since(at) < STATE_TTL).then_some(p)
    }

    /// Drops the pins `gone(session, process)` names.
    pub(super) fn forget(&mut self, gone: impl Fn(u64, usize) -> bool) {
        self.map.retain(|(w, _), (p, _)| !gone(*w, *p));
    }

    fn drop_oldest(&mut self, of: Option<u64>) {
        let oldest = (self.map.iter())
            .filter(|((w, _), _)| of.is_none_or(|o| o == *w))
            .min_by_key(|(_, (_, at))| *at)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.map.remove(&k);
        }
    }
}

/// The `requestState` of an `input_required` result (only results that
/// name it are parsed).
pub(super) fn input_state(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "resultType", borrow)]
        result_type: Option<&'a str>,
        #[serde(rename = "requestState")]
        request_state: Option<String>,
    }
    memchr::memmem::find(text.as_bytes(), b"input_required")?;
    let peek: Peek = serde_json::from_str(text).ok()?;
    (peek.result_type == Some("input_required")).then_some(peek.request_state)?
}

/// The `params.uri` of a resources request ("" when missing).
pub(super) fn uri_of(msg: &Value) -> String {
    msg.at("/params/uri")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_input_required_result_names_a_state_to_pin() {
        let state = input_state;
        assert_eq!(
            state(r#"{"resultType":"input_required","inputRequests":{},"requestState":"s1"}"#),
            Some("s1".to_owned())
        );
        for other in [
            r#"{"resultType":"complete","content":[{"type":"text","text":"input_required"}]}"#,
            r#"{"resultType":"input_required","inputRequests":{}}"#,
            r#"{"resultType":"input_required","requestState":7}"#,
            r#"{"content":[],"requestState":"input_required"}"#,
            r#"["input_required"]"#,
        ] {
            assert_eq!(state(other), None, "{other}");
        }
    }

    #[test]
    fn a_pin_serves_one_retry_of_its_own_session_within_its_time() {
        let t0 = Instant::now();
        let mut pins = Pins::default();
        pins.keep(1, "st", 1, t0);
        pins.keep(2, "st", 0, t0);
        assert_eq!(pins.take(3, "st", t0), None, "another session's state");
        assert_eq!(pins.take(1, "other", t0), None);
        assert_eq!(pins.take(1, "st", t0), Some(1));
        assert_eq!(pins.take(1, "st", t0), None, "spent");
        assert_eq!(pins.take(2, "st", t0 + STATE_TTL), None, "expired");
        pins.keep(1, "a", 0, t0);
        pins.keep(2, "b", 1, t0);
        pins.keep(3, "c", 1, t0);
        pins.forget(|s, _| s == 1);
        pins.forget(|_, p| p == 1);
        assert_eq!(pins.map.len(), 0);
    }

    #[test]
    fn pins_are_bounded_per_session_and_in_all_oldest_first() {
        let t0 = Instant::now();
        let at = |i: usize| t0 + Duration::from_millis(i as u64);
        let mut pins = Pins::default();
        for i in 0..SESSION_STATES_MAX + 10 {
            pins.keep(7, &format!("s{i}"), 0, at(i));
        }
        assert_eq!(pins.map.len(), SESSION_STATES_MAX);
        assert_eq!(pins.take(7, "s9", at(999)), None, "the oldest went");
        assert_eq!(pins.take(7, "s10", at(999)), Some(0));
        // Many sessions: the total holds, and the newest pins stay.
        for i in 0..STATES_MAX + 5 {
            pins.keep(100 + i as u64, "x", 1, at(1000 + i));
        }
        assert_eq!(pins.map.len(), STATES_MAX);
        let last = 100 + (STATES_MAX + 4) as u64;
        assert_eq!(pins.take(last, "x", at(99_999)), Some(1));
    }
}
