//! The gateway drives multi round-trip requests for a legacy client in
//! front of a 2026-07-28 child (ERAS §4.2). The child answers a call
//! `input_required`; each of its input requests goes to the client as the
//! legacy request it stands for (`elicitation/create`,
//! `sampling/createMessage`, `roots/list`), under a gateway id; once every
//! answer is in, the call is sent again with `inputResponses` and the
//! child's `requestState` as it came, and the child's final result answers
//! the client's original id. A request whose capability the client's
//! `initialize` did not declare fails the call with -32021 naming it; an
//! error from the client fails the call with that error.

use super::ids::Pending;
use super::{Action, Router, Status};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::{self, INTERNAL_ERROR};
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::audit::Outcome;

/// Rounds after which a call that keeps asking fails (the SDKs' limit).
const MAX_ROUNDS: u32 = 10;
/// A request needs a client capability it did not declare (2026-07-28).
pub const MISSING_CAPABILITY: i64 = -32021;

/// A legacy client's call to a modern child, kept to be sent again.
#[derive(Debug, Clone, PartialEq)]
pub struct Resend {
    /// The request as sent to the child (no id).
    pub msg: Value,
    /// `input_required` answers so far.
    pub rounds: u32,
}

/// A call waiting for the client's answers to the child's input requests.
struct Run {
    child: usize,
    client_id: Value,
    resend: Box<Resend>,
    token: Option<String>,
    audit: Option<Box<super::audit::Open>>,
    /// The child's `requestState`, echoed as it came.
    state: Option<Value>,
    waiting: BTreeSet<String>,
    answers: Map<String, Value>,
    /// When the client's answers are overdue: the call fails then, as a
    /// request to the child would (the child's request timeout).
    deadline: Instant,
}

#[derive(Default)]
pub struct Drives {
    runs: HashMap<u64, Run>,
    /// Gateway id of a request to the client -> (run, input key).
    asks: HashMap<u64, (u64, String)>,
}

impl Drives {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.asks.is_empty()
    }

    /// The earliest deadline of a run waiting for the client.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.runs.values().map(|r| r.deadline).min()
    }

    fn remove(&mut self, run: u64) -> Option<Run> {
        self.asks.retain(|_, (r, _)| *r != run);
        self.runs.remove(&run)
    }
}

/// The capability the client must have declared for an input request:
/// (name for the message, `requiredCapabilities` value), or None if it did.
fn missing(
    caps: &Value,
    method: &str,
    params: &Value,
) -> Result<Option<(&'static str, Value)>, String> {
    let has = |k: &str| caps.get(k).is_some_and(Value::is_object);
    Ok(match method {
        "elicitation/create" => {
            let url = params.get("mode").and_then(Value::as_str) == Some("url");
            if !has("elicitation") {
                Some(("elicitation", json!({"elicitation": {}})))
            } else if url && caps.at("/elicitation/url").is_none() {
                Some(("elicitation.url", json!({"elicitation": {"url": {}}})))
            } else {
                None
            }
        }
        "sampling/createMessage" => {
            let tools = params.get("tools").is_some();
            if !has("sampling") {
                Some(("sampling", json!({"sampling": {}})))
            } else if tools && caps.at("/sampling/tools").is_none() {
                Some(("sampling.tools", json!({"sampling": {"tools": {}}})))
            } else {
                None
            }
        }
        "roots/list" => (!has("roots")).then(|| ("roots", json!({"roots": {}}))),
        other => return Err(format!("unknown input request {other}")),
    })
}

impl Router {
    /// A modern child answered a legacy client's call `input_required`:
    /// ask the client, or fail the call. True if the answer was that.
    pub(super) fn drive_input(&mut self, cid: u64, msg: &Value, now: Instant) -> bool {
        let Some(result) = msg.get("result") else {
            return false;
        };
        if result.get("resultType").and_then(Value::as_str) != Some("input_required")
            || !matches!(
                self.ids.get(cid),
                Some(Pending::Forward {
                    resend: Some(_),
                    ..
                })
            )
        {
            return false;
        }
        let Some(Pending::Forward {
            child,
            client_id,
            token,
            audit,
            resend: Some(resend),
            ..
        }) = self.ids.take(cid)
        else {
            return false;
        };
        let name = self.children[child].info.name.clone();
        // The call ends here: the client is answered and the call recorded.
        let fail = |r: &mut Router, audit, code: i64, why: String, data: Option<Value>| {
            let mut e = jsonrpc::error(client_id.clone(), code, why);
            if let Some(d) = data {
                e["error"]["data"] = d;
            }
            r.out.push(Action::ToClient(e));
            r.record(audit, child, Outcome::Error(code), 0, now);
        };
        if resend.rounds >= MAX_ROUNDS {
            let why = format!("server {name} asked for input {MAX_ROUNDS} times; giving up");
            fail(self, audit, INTERNAL_ERROR, why, None);
            return true;
        }
        let caps = self
            .init_params
            .as_ref()
            .and_then(|p| p.get("capabilities"))
            .cloned()
            .unwrap_or(Value::Null);
        let empty = Map::new();
        let requests = result
            .get("inputRequests")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for req in requests.values() {
            let method = req.get("method").and_then(Value::as_str).unwrap_or("");
            let params = req.get("params").unwrap_or(&Value::Null);
            match missing(&caps, method, params) {
                Ok(None) => {}
                Ok(Some((cap, required))) => {
                    let why = format!(
                        "server {name} needs the client's {cap} capability, which its initialize did not declare"
                    );
                    let data = json!({"requiredCapabilities": required});
                    fail(self, audit, MISSING_CAPABILITY, why, Some(data));
                    return true;
                }
                Err(why) => {
                    let why = format!("server {name}: {why}");
                    fail(self, audit, INTERNAL_ERROR, why, None);
                    return true;
                }
            }
        }
        let run_id = self.ids.fresh();
        let mut run = Run {
            child,
            client_id,
            resend,
            token,
            audit,
            state: result.get("requestState").cloned(),
            waiting: BTreeSet::new(),
            answers: Map::new(),
            deadline: now + self.children[child].info.timeout,
        };
        for (key, req) in requests {
            let gid = self.ids.fresh();
            let mut params = req.get("params").cloned().unwrap_or_else(|| json!({}));
            if params.get("mode").and_then(Value::as_str) == Some("url")
                && params.get("elicitationId").is_none()
            {
                params["elicitationId"] = json!(format!("m2m-{gid}")); // required in 2025-11-25
            }
            run.waiting.insert(key.clone());
            self.drives.asks.insert(gid, (run_id, key.clone()));
            self.out.push(Action::ToClient(json!({
                "jsonrpc": "2.0", "id": gid, "method": req.get("method"), "params": params,
            })));
        }
        let ready = run.waiting.is_empty(); // only requestState: send again at once
        self.drives.runs.insert(run_id, run);
        if ready {
            self.send_again(run_id, now);
        }
        true
    }

    /// The client answered gateway request `gid`: true if it was one of a
    /// run's input requests.
    pub(super) fn drive_answer(&mut self, gid: u64, msg: &Value, now: Instant) -> bool {
        let Some((run_id, key)) = self.drives.asks.remove(&gid) else {
            return false;
        };
        if let Some(e) = msg.get("error") {
            // MRTR has no slot for an error: the call fails with it.
            if let Some(run) = self.drives.remove(run_id) {
                let code = e
                    .get("code")
                    .and_then(Value::as_i64)
                    .unwrap_or(INTERNAL_ERROR);
                let e = json!({"jsonrpc": "2.0", "id": run.client_id, "error": e});
                self.out.push(Action::ToClient(e));
                self.record(run.audit, run.child, Outcome::Error(code), 0, now);
            }
            return true;
        }
        let Some(run) = self.drives.runs.get_mut(&run_id) else {
            return true;
        };
        run.waiting.remove(&key);
        run.answers
            .insert(key, msg.get("result").cloned().unwrap_or_else(|| json!({})));
        if run.waiting.is_empty() {
            self.send_again(run_id, now);
        }
        true
    }

    /// Sends a run's call again with the client's answers and the child's
    /// `requestState`, under a new id.
    fn send_again(&mut self, run_id: u64, now: Instant) {
        let child = self.drives.runs.get(&run_id).map(|r| r.child);
        if let Some(c) = child
            && self.children[c].status != Status::Ready
        {
            let why = format!("server {} is not serving", self.children[c].info.name);
            self.end_run(run_id, jsonrpc::SERVER_UNAVAILABLE, &why, now);
            return;
        }
        let Some(run) = self.drives.remove(run_id) else {
            return;
        };
        let mut msg = run.resend.msg.clone();
        if let Some(p) = msg.get_mut("params").and_then(Value::as_object_mut) {
            p.insert("inputResponses".into(), Value::Object(run.answers));
            match run.state {
                Some(s) => p.insert("requestState".into(), s),
                None => p.remove("requestState"),
            };
        }
        let pending = Pending::Forward {
            child: run.child,
            client_id: run.client_id,
            token: run.token,
            audit: run.audit,
            modern: None,
            resend: Some(Box::new(Resend {
                msg: run.resend.msg,
                rounds: run.resend.rounds + 1,
            })),
        };
        self.send_forward(run.child, pending, msg, now);
    }

    /// The client cancelled `client_id`: a run waiting for its answers ends.
    pub(super) fn cancel_run(&mut self, client_id: &Value) {
        let runs: Vec<u64> = self
            .drives
            .runs
            .iter()
            .filter(|(_, r)| &r.client_id == client_id)
            .map(|(id, _)| *id)
            .collect();
        for r in runs {
            self.withdraw(r, "the request was cancelled");
            self.drives.remove(r);
        }
    }

    /// Withdraws run `run`'s requests to the client still open.
    fn withdraw(&mut self, run: u64, reason: &str) {
        let mut open: Vec<u64> = self
            .drives
            .asks
            .iter()
            .filter(|(_, (r, _))| *r == run)
            .map(|(gid, _)| *gid)
            .collect();
        open.sort_unstable();
        for gid in open {
            self.out.push(Action::ToClient(json!({"jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": gid, "reason": reason}})));
        }
    }

    /// Ends run `run_id` with an error for the client's call, withdrawing
    /// its requests to the client still open.
    fn end_run(&mut self, run_id: u64, code: i64, why: &str, now: Instant) {
        self.withdraw(run_id, why);
        let Some(run) = self.drives.remove(run_id) else {
            return;
        };
        self.fail(run.client_id, code, why);
        let outcome = if code == jsonrpc::REQUEST_TIMEOUT {
            Outcome::Timeout
        } else {
            Outcome::Error(code)
        };
        self.record(run.audit, run.child, outcome, 0, now);
    }

    /// Fails the runs whose client did not answer by their deadline.
    pub(super) fn expire_runs(&mut self, now: Instant) {
        let mut late: Vec<u64> = self
            .drives
            .runs
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        late.sort_unstable();
        for id in late {
            let info = &self.children[self.drives.runs[&id].child].info;
            let why = format!(
                "the client did not answer the input requests of server {} within its {} s request timeout",
                info.name,
                info.timeout.as_secs_f64()
            );
            self.end_run(id, jsonrpc::REQUEST_TIMEOUT, &why, now);
        }
    }

    /// Child `child` went down: its runs fail like its requests in flight.
    pub(super) fn drop_runs(&mut self, child: usize, why: &str, now: Instant) {
        let mut gone: Vec<u64> = self
            .drives
            .runs
            .iter()
            .filter(|(_, r)| r.child == child)
            .map(|(id, _)| *id)
            .collect();
        gone.sort_unstable();
        for id in gone {
            self.end_run(id, jsonrpc::SERVER_UNAVAILABLE, why, now);
        }
    }
}
