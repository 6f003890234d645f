//! What a child sends: answers to what the gateway asked (forwarded calls
//! and fan-out parts), its own requests and notifications for the client,
//! and its exit; plus the deadlines of everything in flight.

use super::audit::{self, Outcome};
use super::catalog::ListKind;
use super::ids::Pending;
use super::{Action, FanKind, Router, Status};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::{self, Incoming};
use crate::supervise::HUNG_AFTER;
use memchr::memmem;
use serde_json::{Value, json};
use std::sync::LazyLock;
use std::time::Instant;

impl Router {
    /// A classified line from child `child`. A response to a forwarded
    /// request goes out as text with only its id replaced; anything else
    /// takes the general path.
    pub fn from_child_incoming(
        &mut self,
        child: usize,
        msg: Incoming,
        now: Instant,
    ) -> Vec<Action> {
        let (id, is_error, payload) = match msg {
            Incoming::Other(v) => return self.from_child(child, v, now),

            Incoming::Response {
                id,
                is_error,
                payload,
            } => (id, is_error, payload),
        };
        self.children[child].overdue = 0; // it answers
        let cid = id.as_u64();
        let forwarded = cid
            .and_then(|c| self.ids.get(c))
            .is_some_and(|p| matches!(p, Pending::Forward { child: c, .. } if *c == child));
        // A call that asked for input takes the general path (rare).
        let input = (!self.mrtr.is_empty() && cid.is_some_and(|c| self.mrtr.has(c)))
            || (self.children[child].modern
                && !is_error
                && has(payload.get(), &INPUT_REQUIRED))
            // A task id is rewritten (rare).
            || has(payload.get(), &TASK_ID);
        if !forwarded || input || self.children[child].status == Status::Out {
            let key = if is_error { "error" } else { "result" };
            let v = match serde_json::from_str::<Value>(payload.get()) {
                Ok(p) => json!({"jsonrpc": "2.0", "id": id, key: p}),
                Err(_) => return Vec::new(),
            };
            return self.from_child(child, v, now);
        }
        if let Some(Pending::Forward {
            client_id,
            audit,
            modern,
            ..
        }) = cid.and_then(|c| self.ids.take(c))
        {
            let line = match modern {
                None => jsonrpc::response_line(&client_id, is_error, payload.get()),
                Some(m) => self.modern_response_line(&client_id, is_error, payload.get(), m),
            };
            if audit.is_some() {
                let outcome = audit::outcome_of(is_error, payload.get());
                self.record(audit, child, outcome, line.len(), now);
            }
            self.out.push(Action::ToClientRaw(line));
        }
        self.take()
    }

    /// One parsed message from child `child`.
    pub fn from_child(&mut self, child: usize, msg: Value, now: Instant) -> Vec<Action> {
        if self.children[child].status == Status::Out {
            return Vec::new();
        }
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = msg.get("id").cloned();
        match (method, id) {
            (Some(_), Some(id)) => self.child_request(child, id, msg, now),
            (Some(m), None) => self.child_notification(child, &m, msg, now),
            (None, Some(id)) => self.child_response(child, id, msg, now),
            (None, None) => log::debug!(
                "[{}] sent a message with no method and no id",
                self.children[child].info.name
            ),
        }
        self.take()
    }

    /// A child asks the client (sampling, roots, elicitation): under an id
    /// of ours, so two children's ids cannot collide.
    fn child_request(&mut self, child: usize, id: Value, mut msg: Value, now: Instant) {
        if self.era.modern() {
            if self.input_from_child(child, id.clone(), &msg, now) {
                return;
            }
            let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
            let method = method.to_owned();
            return self.modern_child_request(child, id, &method);
        }
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let method = method.to_owned();
        Router::task_ids_in_params(child, &method, &mut msg);
        let token = msg.at("/params/_meta/progressToken");
        let gid = self.ids.outbound(child, id, token);
        msg["id"] = json!(gid);
        self.out.push(Action::ToClient(msg));
    }

    fn child_notification(&mut self, child: usize, method: &str, mut msg: Value, now: Instant) {
        match method {
            "notifications/tools/list_changed" => self.forget_map(ListKind::Tools),
            "notifications/prompts/list_changed" => self.forget_map(ListKind::Prompts),
            "notifications/resources/list_changed" => {
                self.forget_map(ListKind::Resources);
                self.forget_map(ListKind::Templates);
            }
            _ => {}
        }
        if self.era.modern() {
            if method == "notifications/progress" {
                self.progress_from(child, &msg, now);
            }
            return self.modern_child_notification(child, method, msg);
        }
        if self.children[child].modern {
            // From the gateway's own listen: the ack stops here, the rest
            // goes to the legacy client without the stream's tag.
            if method == "notifications/subscriptions/acknowledged" {
                return;
            }
            if let Some(m) = msg.at_mut("/params/_meta").and_then(Value::as_object_mut) {
                m.remove(super::SUBSCRIPTION_ID);
            }
        }
        match method {
            "notifications/progress" => self.progress_from(child, &msg, now),
            "notifications/cancelled" => {
                // The child cancels one of its own requests to the client.
                let Some(rid) = msg.at("/params/requestId") else {
                    return;
                };
                let Some(gid) = self.ids.outbound_id(child, rid) else {
                    return;
                };
                self.ids.take_outbound(gid);
                msg["params"]["requestId"] = json!(gid);
            }
            _ => Router::task_ids_in_params(child, method, &mut msg),
        }
        self.out.push(Action::ToClient(msg));
    }

    /// A child's progress extends its request's deadline.
    fn progress_from(&mut self, child: usize, msg: &Value, now: Instant) {
        if let Some(t) = msg.at("/params/progressToken") {
            let timeout = self.children[child].info.timeout;
            self.ids.progress(t, timeout, self.opts.max_total, now);
        }
    }

    /// An answer to something the gateway asked this child.
    fn child_response(&mut self, child: usize, id: Value, mut msg: Value, now: Instant) {
        self.children[child].overdue = 0;
        let Some(cid) = id.as_u64() else { return };
        if self.ids.get(cid).is_none_or(|p| p.child() != child) {
            log::debug!(
                "[{}] response to unknown id {cid}",
                self.children[child].info.name
            );
            return;
        }
        if self.stash_answer(cid, &msg) {
            return; // the client has not retried yet
        }
        if self.drive_input(cid, &msg, now) {
            return; // the client is asked for the input
        }
        match self.ids.take(cid) {
            Some(Pending::Forward {
                client_id,
                audit,
                modern,
                ..
            }) => {
                msg["id"] = client_id;
                self.task_ids_from_child(child, &mut msg);
                if let Some(m) = modern {
                    if self.children[child].modern {
                        self.wrap_state(child, &mut msg, &m);
                    }
                    self.modern_response(&mut msg, m);
                }
                if audit.is_some() {
                    let outcome = audit::outcome_of_error(msg.get("error"));
                    let bytes = serde_json::to_vec(&msg).map_or(0, |b| b.len() + 1);
                    self.record(audit, child, outcome, bytes, now);
                }
                self.out.push(Action::ToClient(msg));
            }
            Some(Pending::Part { fanout, pages, .. }) => {
                let kind = match self.fanouts.get(&fanout).map(|f| &f.kind) {
                    Some(FanKind::Init | FanKind::Restart(_)) => None,
                    Some(FanKind::List(k)) => Some(Some(*k)),
                    Some(FanKind::SetLevel) => Some(None),
                    None => return,
                };
                match kind {
                    None => self.init_answer(child, fanout, &msg, now),
                    Some(Some(k)) => self.list_page(child, fanout, k, pages, &msg, now),
                    Some(None) => {
                        if let Some(f) = self.fanouts.get_mut(&fanout) {
                            f.waiting -= 1;
                        }
                    }
                }
                self.maybe_finish(fanout, now);
            }
            None => {}
        }
    }

    /// Child `child` was started again (it exited or hung): initialize it
    /// with the client's own params; once it answers, its lists count again
    /// and the client is told they changed.
    pub fn child_restarted(&mut self, child: usize, now: Instant) -> Vec<Action> {
        self.tasks.forget_child(child);
        self.era.forget_tasks(child); // they died with it
        let c = &mut self.children[child];
        c.status = Status::Idle;
        c.overdue = 0;
        if c.modern {
            // Nothing to initialize: it serves as it did, its listens anew.
            c.status = Status::Ready;
            self.era.child_listen[child] = None;
            self.restarted(child);
            if self.init_params.is_some() {
                self.open_child_listens();
                self.relisten(child);
            }
            return self.take();
        }
        if let Some(params) = self.init_params.clone() {
            self.children[child].status = Status::Initializing;
            let fid = self.fan_out(FanKind::Restart(child), None, 1);
            self.send_part(child, fid, 0, "initialize", params, now);
        }
        self.take()
    }

    /// A restarted child answered `initialize`: its tools, prompts and
    /// resources are back, so the maps are rebuilt and the client told.
    pub(super) fn restarted(&mut self, child: usize) {
        if self.children[child].status != Status::Ready {
            return;
        }
        if !self.children[child].modern {
            self.out.push(Action::ToChild(
                child,
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            ));
            self.resubscribe(child);
        }
        for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
            if self.children[child].caps.contains_key(kind.field()) {
                self.forget_map(kind);
                if kind == ListKind::Resources {
                    self.forget_map(ListKind::Templates);
                }
                self.tell_list_changed(kind);
            }
        }
    }

    /// Child `child` exited: fail what it held and leave it out.
    pub fn child_closed(&mut self, child: usize, now: Instant) -> Vec<Action> {
        let was = self.children[child].status;
        self.children[child].status = Status::Out;
        let name = self.children[child].info.name.clone();
        if was == Status::Initializing {
            self.out.push(Action::ChildFailed(
                child,
                "exited during initialize".into(),
            ));
        }
        for cid in self.ids.of_child(child) {
            let why = format!("server {name} exited");
            self.abandon(cid, &why, jsonrpc::SERVER_UNAVAILABLE, now);
        }
        self.ids.forget_outbound(child);
        self.tasks.forget_child(child);
        self.era.forget_tasks(child);
        self.drop_runs(child, &format!("server {name} exited"), now);
        self.take()
    }

    /// Ends a pending child request with an error (timeout or child gone).
    fn abandon(&mut self, cid: u64, why: &str, code: i64, now: Instant) {
        match self.ids.take(cid) {
            Some(Pending::Forward {
                child,
                client_id,
                audit,
                ..
            }) => {
                // A call waiting for a retry has no client request to fail.
                if !self.drop_call(cid, why) {
                    self.fail(client_id, code, why);
                }
                let outcome = if code == jsonrpc::REQUEST_TIMEOUT {
                    Outcome::Timeout
                } else {
                    Outcome::Error(code)
                };
                self.record(audit, child, outcome, 0, now);
            }
            Some(Pending::Part { child, fanout, .. }) => {
                if let Some(f) = self.fanouts.get_mut(&fanout) {
                    f.waiting -= 1;
                    if f.kind.is_init() && self.children[child].status != Status::Out {
                        self.children[child].status = Status::Out;
                        self.out
                            .push(Action::ChildFailed(child, format!("initialize: {why}")));
                    }
                }
                self.maybe_finish(fanout, now);
            }
            None => {}
        }
    }

    /// Expires requests past their deadline: the client gets an error, the
    /// child a `notifications/cancelled` (never for initialize).
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        for cid in self.ids.expired(now) {
            let Some(p) = self.ids.get(cid) else { continue };
            let child = p.child();
            let cancel = match p {
                Pending::Forward { .. } => true,
                Pending::Part { fanout, .. } => {
                    !self.fanouts.get(fanout).is_some_and(|f| f.kind.is_init())
                }
            };
            // A client that does not retry says nothing about the child.
            if matches!(p, Pending::Forward { .. }) && !self.mrtr.waiting(cid) {
                let c = &mut self.children[child];
                c.overdue += 1;
                if c.overdue >= HUNG_AFTER {
                    c.overdue = 0;
                    self.out.push(Action::ChildHung(child));
                }
            }
            let info = &self.children[child].info;
            let why = if self.mrtr.waiting(cid) {
                format!(
                    "the client did not retry within the {} s request timeout of server {}",
                    info.timeout.as_secs_f64(),
                    info.name
                )
            } else {
                format!(
                    "request to server {} timed out after {} s",
                    info.name,
                    info.timeout.as_secs_f64()
                )
            };
            if cancel {
                self.out.push(Action::ToChild(
                    child,
                    json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                           "params": {"requestId": cid, "reason": super::TIMEOUT_REASON}}),
                ));
            }
            self.abandon(cid, &why, jsonrpc::REQUEST_TIMEOUT, now);
        }
        self.expire_runs(now);
        self.take()
    }
}

/// `text` holds `needle` (a SIMD search: it runs over every result).
fn has(text: &str, needle: &memmem::Finder) -> bool {
    needle.find(text.as_bytes()).is_some()
}

/// The searches [`has`] runs over every result, built once.
static INPUT_REQUIRED: LazyLock<memmem::Finder> =
    LazyLock::new(|| memmem::Finder::new(b"\"input_required\""));
static TASK_ID: LazyLock<memmem::Finder> = LazyLock::new(|| memmem::Finder::new(b"\"taskId\""));
