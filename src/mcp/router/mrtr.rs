//! Multi round-trip requests for a 2026-07-28 client in front of a legacy
//! child (ERAS §4.1). A legacy child asks its client for input with a
//! request of its own (`elicitation/create`, `sampling/createMessage`,
//! `roots/list`); a 2026-07-28 client takes no requests, so the call that
//! is waiting is answered `input_required` instead, and the child's call
//! stays open at the child. The client's retry (a new id, the same method
//! and name, `inputResponses`, `requestState`) answers the child's
//! requests, and the child's final result answers the retry.
//!
//! `requestState` is a random 128-bit handle into this connection's table,
//! removed when used: a tampered, replayed or foreign state is simply not
//! there, and is refused with -32602 (ERAS §5.12). A client that does not
//! retry within the server's request timeout gets the child's call
//! cancelled. Which call a legacy child's request belongs to is not on the
//! wire: it goes to the child's oldest open call that may take input
//! (ERAS §5.3).

use super::audit::Outcome;
use super::era::{self, Inputs};
use super::ids::{Pending, token_key};
use super::{Action, Router, Status};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::{self, INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// The connection's calls that asked for input.
#[derive(Default)]
pub struct Mrtr {
    /// By the child-side id of the call.
    calls: HashMap<u64, Call>,
    /// `requestState` handle -> the call it resumes.
    handles: HashMap<String, u64>,
    next_key: u64,
    /// A modern child's `requestState`, under a handle of ours (ERAS §4.3).
    wrapped: HashMap<String, Wrapped>,
    seq: u64,
}

/// Most wrapped states a connection keeps (a child that answers
/// `input_required` forever cannot grow the table).
const MAX_WRAPPED: usize = 256;

/// A modern child's `input_required` passed to a modern client.
struct Wrapped {
    child: usize,
    /// The child's own `requestState`, restored as it came.
    state: Value,
    method: &'static str,
    target: Value,
    seq: u64,
}

struct Call {
    child: usize,
    /// The client's method and its `params.name` or `params.uri`: a retry
    /// must repeat them.
    method: &'static str,
    target: Value,
    inputs: Inputs,
    /// Set while the client holds `input_required` and no retry came.
    handle: Option<String>,
    /// The child's requests not yet answered: key -> (its id, the request).
    asked: BTreeMap<String, (Value, Value)>,
    /// The keys the client was given under `handle`.
    issued: BTreeSet<String>,
    /// The child's final answer, if it came while no retry was open.
    stash: Option<Value>,
}

impl Mrtr {
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub fn has(&self, cid: u64) -> bool {
        self.calls.contains_key(&cid)
    }

    /// Whether call `cid` waits for the client's retry.
    pub fn waiting(&self, cid: u64) -> bool {
        self.calls.get(&cid).is_some_and(|c| c.handle.is_some())
    }

    /// The call is over: forget it and its handle.
    fn remove(&mut self, cid: u64) -> Option<Call> {
        let c = self.calls.remove(&cid)?;
        if let Some(h) = &c.handle {
            self.handles.remove(h);
        }
        Some(c)
    }

    #[cfg(test)]
    pub fn handles(&self) -> usize {
        self.handles.len()
    }
}

/// The target a retry must repeat (the client's name or uri).
pub fn target_of(msg: &Value) -> Value {
    let Some(Value::Object(p)) = msg.as_object().and_then(|m| jsonrpc::field(m, "params")) else {
        return Value::Null;
    };
    jsonrpc::field(p, "name")
        .or_else(|| jsonrpc::field(p, "uri"))
        .cloned()
        .unwrap_or(Value::Null)
}

impl Router {
    /// A modern child answered a modern client's call `input_required`:
    /// its `requestState` goes out under a handle of ours, so the retry
    /// reaches this child with the state restored, and a state we never
    /// issued is refused like any other.
    pub(super) fn wrap_state(&mut self, child: usize, msg: &mut Value, reply: &era::Reply) {
        let Some(call) = &reply.input else { return };
        let Some(r) = msg.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        if r.get("resultType").and_then(Value::as_str) != Some("input_required") {
            return;
        }
        let Some(state) = r.get("requestState").cloned() else {
            return;
        };
        let m = &mut self.mrtr;
        if m.wrapped.len() >= MAX_WRAPPED
            && let Some(oldest) = m
                .wrapped
                .iter()
                .min_by_key(|(_, w)| w.seq)
                .map(|(k, _)| k.clone())
        {
            m.wrapped.remove(&oldest);
        }
        m.seq += 1;
        let handle = format!("{:032x}", rand::random::<u128>());
        m.wrapped.insert(
            handle.clone(),
            Wrapped {
                child,
                state,
                method: call.method,
                target: call.target.clone(),
                seq: m.seq,
            },
        );
        r.insert("requestState".into(), Value::String(handle));
    }

    /// A retry carrying a wrapped state: Ok(Some((handle, child))) if the
    /// state is one of ours for this request (the retry must reach that
    /// child: [`Router::restore_state`]); Ok(None) if not ours.
    pub(super) fn wrapped_state(&self, msg: &Value) -> Result<Option<(String, usize)>, String> {
        let Some(state) = msg.at("/params/requestState").and_then(Value::as_str) else {
            return Ok(None);
        };
        let Some(w) = self.mrtr.wrapped.get(state) else {
            return Ok(None);
        };
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        if method != w.method || target_of(msg) != w.target {
            return Err(
                "requestState belongs to another request (method, name or uri differ)".into(),
            );
        }
        Ok(Some((state.to_owned(), w.child)))
    }

    /// The retry goes out: the handle is spent and the child's own state
    /// put back as it came.
    pub(super) fn restore_state(&mut self, handle: &str, msg: &mut Value) {
        if let Some(w) = self.mrtr.wrapped.remove(handle) {
            msg["params"]["requestState"] = w.state;
        }
    }

    /// A legacy child asks for input while the client is 2026-07-28:
    /// attached to its oldest call that may take input; false if none.
    pub(super) fn input_from_child(
        &mut self,
        child: usize,
        id: Value,
        msg: &Value,
        now: Instant,
    ) -> bool {
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let open = self.ids.input_legs(child).into_iter().next();
        let open = open.map(|(cid, client_id, call)| (cid, (client_id, call)));
        let waiting = self
            .mrtr
            .calls
            .iter()
            .filter(|(_, c)| c.child == child && c.handle.is_some())
            .map(|(cid, _)| *cid)
            .min();
        let Some((cid, leg)) = open
            .map(|(cid, leg)| (cid, Some(leg)))
            .or(waiting.map(|c| (c, None)))
        else {
            return false;
        };
        let inputs = match (&leg, self.mrtr.calls.get(&cid)) {
            (_, Some(c)) => c.inputs,
            (Some((_, call)), None) => call.inputs,
            (None, None) => return false,
        };
        match inputs.lacks(method) {
            Err(()) => return false,
            Ok(Some(cap)) => {
                // What a legacy client lacking it would say; never listed
                // in inputRequests (mrtr.mdx: only declared capabilities).
                let e = jsonrpc::error(
                    id,
                    METHOD_NOT_FOUND,
                    format!("{method}: the client did not declare the {cap} capability"),
                );
                self.out.push(Action::ToChild(child, e));
                return true;
            }
            Ok(None) => {}
        }
        self.mrtr.next_key += 1;
        let key = format!(
            "{}{}",
            method.split('/').next().unwrap_or("input"),
            self.mrtr.next_key
        );
        let request =
            json!({"method": method, "params": msg.get("params").cloned().unwrap_or(json!({}))});
        let call = self.mrtr.calls.entry(cid).or_insert_with(|| Call {
            child,
            method: "",
            target: Value::Null,
            inputs,
            handle: None,
            asked: BTreeMap::new(),
            issued: BTreeSet::new(),
            stash: None,
        });
        call.asked.insert(key, (id, request));
        if let Some((client_id, c)) = leg {
            call.method = c.method;
            call.target = c.target;
            self.suspend(cid, client_id, now);
        }
        true
    }

    /// Answers the open leg of call `cid` with `input_required` for every
    /// child request not yet answered, under a fresh handle; the call then
    /// waits (at most the server's request timeout) for the retry.
    fn suspend(&mut self, cid: u64, answer_to: Value, now: Instant) {
        let Some(call) = self.mrtr.calls.get_mut(&cid) else {
            return;
        };
        let handle = format!("{:032x}", rand::random::<u128>());
        let requests: Map<String, Value> = call
            .asked
            .iter()
            .map(|(k, (_, r))| (k.clone(), r.clone()))
            .collect();
        call.issued = call.asked.keys().cloned().collect();
        if let Some(old) = call.handle.replace(handle.clone()) {
            self.mrtr.handles.remove(&old);
        }
        self.mrtr.handles.insert(handle.clone(), cid);
        let timeout = self.children[call.child].info.timeout;
        self.ids.retarget(cid, Value::Null, None, now + timeout);
        let mut r = json!({"resultType": "input_required", "inputRequests": requests,
                           "requestState": handle});
        self.era.stamp(&mut r, false);
        self.out
            .push(Action::ToClient(jsonrpc::result(answer_to, r)));
    }

    /// A `tools/call`, `prompts/get` or `resources/read` of a modern
    /// client: if it carries a `requestState` of ours, it is a retry and is
    /// handled here (true). A state that is not ours is left to the route:
    /// a modern child judges its own, a legacy child's request refuses it.
    pub(super) fn retry(&mut self, id: &Value, msg: &Value, now: Instant) -> bool {
        let Some(state) = msg.at("/params/requestState").and_then(Value::as_str) else {
            return false;
        };
        let Some(&cid) = self.mrtr.handles.get(state) else {
            return false;
        };
        let refuse = |r: &mut Router, why: String| {
            let outcome = Outcome::Error(INVALID_PARAMS);
            r.refuse(id.clone(), INVALID_PARAMS, why, outcome, now); // and its audit record
            true
        };
        let Some(call) = self.mrtr.calls.get(&cid) else {
            return refuse(self, "requestState: unknown, used or expired".into());
        };
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        if method != call.method || target_of(msg) != call.target {
            return refuse(
                self,
                "requestState belongs to another request (method, name or uri differ)".into(),
            );
        }
        let empty = Map::new();
        let responses = match msg.at("/params/inputResponses") {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => return refuse(self, "params.inputResponses must be an object".into()),
        };
        for (k, v) in responses {
            if !call.issued.contains(k) {
                return refuse(
                    self,
                    format!("inputResponses: key {k:?} was not asked for under this requestState"),
                );
            }
            if !v.is_object() {
                return refuse(
                    self,
                    format!("inputResponses[{k:?}] must be an object (the result)"),
                );
            }
        }
        // Valid: the handle is spent, the child's requests are answered.
        let child = call.child;
        self.mrtr.handles.remove(state);
        let Some(call) = self.mrtr.calls.get_mut(&cid) else {
            return true;
        };
        call.handle = None;
        call.issued.clear();
        let mut answers = Vec::new();
        for (k, v) in responses {
            if let Some((child_id, _)) = call.asked.remove(k) {
                answers.push(json!({"jsonrpc": "2.0", "id": child_id, "result": v}));
            }
        }
        let more = !call.asked.is_empty();
        let stash = if more { None } else { call.stash.take() };
        if self.children[child].status == Status::Ready {
            for a in answers {
                self.out.push(Action::ToChild(child, a));
            }
        }
        let token = msg.at("/params/_meta/progressToken").map(token_key);
        let timeout = self.children[child].info.timeout;
        self.ids.retarget(cid, id.clone(), token, now + timeout);
        if more {
            // Keys the retry left out, or asked since: ask again at once.
            self.suspend(cid, id.clone(), now);
        } else if let Some(done) = stash {
            self.finish_call(cid, done, now);
        }
        true
    }

    /// The child answered call `cid`: true if the call waits for a retry,
    /// so the answer is kept for it.
    pub(super) fn stash_answer(&mut self, cid: u64, msg: &Value) -> bool {
        match self.mrtr.calls.get_mut(&cid) {
            Some(c) if c.handle.is_some() => {
                c.stash = Some(msg.clone());
                true
            }
            Some(_) => {
                self.mrtr.remove(cid);
                false
            }
            None => false,
        }
    }

    /// Delivers a kept final answer to the retry that call `cid` now serves.
    fn finish_call(&mut self, cid: u64, mut msg: Value, now: Instant) {
        self.mrtr.remove(cid);
        if let Some(Pending::Forward {
            child,
            client_id,
            audit,
            modern,
            ..
        }) = self.ids.take(cid)
        {
            msg["id"] = client_id;
            if let Some(m) = modern {
                self.modern_response(&mut msg, m);
            }
            let outcome = super::audit::outcome_of_error(msg.get("error"));
            let bytes = serde_json::to_vec(&msg).map_or(0, |b| b.len() + 1);
            self.record(audit, child, outcome, bytes, now);
            self.out.push(Action::ToClient(msg));
        }
    }

    /// Call `cid` ends without an answer to the client (no retry in time,
    /// the child exited, the client cancelled): the child's requests still
    /// pending get an error. True if it was waiting for a retry.
    pub(super) fn drop_call(&mut self, cid: u64, why: &str) -> bool {
        let Some(call) = self.mrtr.remove(cid) else {
            return false;
        };
        if self.children[call.child].status == Status::Ready {
            for (child_id, _) in call.asked.into_values() {
                let e = jsonrpc::error(child_id, INTERNAL_ERROR, why);
                self.out.push(Action::ToChild(call.child, e));
            }
        }
        call.handle.is_some()
    }

    /// A modern client's request that carries MRTR fields the gateway did
    /// not issue: any `requestState` (ours were taken off before), and for a
    /// legacy child `inputResponses` too (a modern child may ask for input
    /// without a state, and its retry then carries only the answers).
    pub(super) fn foreign_state(msg: &Value, modern_child: bool) -> bool {
        let Some(p) = msg.get("params").and_then(Value::as_object) else {
            return false;
        };
        jsonrpc::field(p, "requestState").is_some()
            || (!modern_child && jsonrpc::field(p, "inputResponses").is_some())
    }
}
