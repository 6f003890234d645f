//! What the client sends: requests are answered here or routed to the one
//! child that serves the tool, prompt or resource; notifications and
//! answers to children's requests go back to the child they concern.

use super::audit::{Open, Outcome};
use super::catalog::ListKind;
use super::drive::Resend;
use super::era::{self, Era};
use super::ids::{Pending, token_key};
use super::tasks;
use super::{Action, Router, Status};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::{self, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::time::Instant;

impl Router {
    /// A line from the client, already framed. Parse errors are answered.
    pub fn from_client_line(&mut self, line: &[u8], now: Instant) -> Vec<Action> {
        // Arguments are kept as text (jsonrpc::RAW_ARGUMENTS); a modern
        // client's `_meta` is parsed apart and compared with the last one
        // checked (era::MetaCache), or not read at all when that one is
        // found where the parse reads it. A line the split parse refuses
        // is parsed as a whole, for its error.
        self.line_bytes = Some(line.len() + 1);
        if let Some(c) = &self.era.meta_cache
            && self.era.modern()
            && let Some(msg) = jsonrpc::parse_client_line_known_meta(line, c.text.as_bytes())
        {
            self.client_message_as(msg, era::LineMeta::Cached, now);
            return self.take();
        }
        if let Ok((mut msg, text)) = jsonrpc::parse_client_line(line, self.era.era != Era::Legacy)
            && let Some(meta) = self.line_meta(&mut msg, text)
        {
            self.client_message_as(msg, meta, now);
            return self.take();
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v) if jsonrpc::names_raw_arguments(&v) => {
                self.line_bytes = None;
                let id = v.get("id").filter(|i| i.is_string() || i.is_number());
                self.fail(
                    id.cloned().unwrap_or(Value::Null),
                    INVALID_REQUEST,
                    jsonrpc::RAW_ARGUMENTS_REFUSED,
                );
                self.take()
            }
            Ok(v) => self.from_client(v, now),
            Err(e) => {
                self.line_bytes = None;
                self.fail(
                    Value::Null,
                    jsonrpc::PARSE_ERROR,
                    format!("parse error: {e}"),
                );
                self.take()
            }
        }
    }

    /// How a split line's `_meta` (`text`, set aside) reaches the router;
    /// a text other than the kept one is put back into `msg` as a tree.
    /// None if that text is no tree: the split parse only skipped over it,
    /// which lets through what a whole parse refuses (nesting past the
    /// recursion limit, a number out of range, a lone surrogate), so the
    /// line is parsed whole and gets that parse error.
    fn line_meta(&self, msg: &mut Value, text: Option<&RawValue>) -> Option<era::LineMeta> {
        let Some(text) = text else {
            return Some(era::LineMeta::InTree);
        };
        if let Some(c) = &self.era.meta_cache
            && self.era.modern()
            && *c.text == *text.get()
        {
            return Some(era::LineMeta::Cached);
        }
        let tree = serde_json::from_str(text.get()).ok()?;
        if let Some(p) = msg.get_mut("params").and_then(Value::as_object_mut) {
            p.insert("_meta".into(), tree);
        }
        Some(era::LineMeta::Text(text.get().into()))
    }

    /// A line over the size limit was dropped.
    pub fn client_line_too_long(&mut self, limit: usize) -> Vec<Action> {
        self.fail(
            Value::Null,
            INVALID_REQUEST,
            format!("message exceeds the {limit}-byte line limit and was dropped"),
        );
        self.take()
    }

    /// One parsed message from the client.
    pub fn from_client(&mut self, msg: Value, now: Instant) -> Vec<Action> {
        self.client_message(msg, now);
        self.take()
    }

    pub(super) fn client_message(&mut self, msg: Value, now: Instant) {
        self.client_message_as(msg, era::LineMeta::InTree, now)
    }

    fn client_message_as(&mut self, msg: Value, meta: era::LineMeta, now: Instant) {
        // The line's length is this message's alone (not a deferred one's).
        let bytes = self.line_bytes.take();
        let Value::Object(obj) = &msg else {
            let what = if msg.is_array() {
                "batches are not supported"
            } else {
                "a message must be a JSON object"
            };
            self.fail(Value::Null, INVALID_REQUEST, what);
            return;
        };
        let id = obj.get("id").cloned();
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            self.fail(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                "missing \"jsonrpc\": \"2.0\"",
            );
            return;
        }
        if let Some(id) = &id
            && !(id.is_string() || id.is_i64() || id.is_u64())
        {
            self.fail(
                Value::Null,
                INVALID_REQUEST,
                "id must be a string or an integer",
            );
            return;
        }
        match (obj.get("method").and_then(Value::as_str), id) {
            (Some(method), Some(id)) => {
                let method = method.to_owned();
                self.client_request(&method, id, msg, meta, bytes, now)
            }
            (Some(method), None) => {
                let method = method.to_owned();
                let mut msg = msg;
                if meta == era::LineMeta::Cached {
                    self.restore_meta(&mut msg); // it passes to a child as it came
                }
                self.client_notification(&method, msg, now)
            }
            (None, Some(id)) if obj.contains_key("result") || obj.contains_key("error") => {
                let mut msg = msg;
                if meta == era::LineMeta::Cached {
                    self.restore_meta(&mut msg);
                }
                self.client_response(id, msg, now)
            }
            (None, id) => self.fail(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                "not a request, notification or response",
            ),
        }
    }

    /// The client answers a child's request: back to that child, its id restored.
    fn client_response(&mut self, id: Value, mut msg: Value, now: Instant) {
        let Some(gid) = id.as_u64() else { return };
        if self.drive_answer(gid, &msg, now) {
            return;
        }
        let Some((child, orig)) = self.ids.take_outbound(gid) else {
            log::debug!("response to unknown request {gid} dropped");
            return;
        };
        if self.children[child].status == Status::Ready {
            msg["id"] = orig;
            self.out.push(Action::ToChild(child, msg));
        }
    }

    fn client_notification(&mut self, method: &str, msg: Value, now: Instant) {
        if self.era.modern() && method != "notifications/cancelled" {
            // The only client notification of 2026-07-28 (ERAS §1.6).
            return log::debug!("client notification {method} ignored (2026-07-28)");
        }
        match method {
            "notifications/initialized" | "notifications/roots/list_changed" => {
                for i in self.ready() {
                    if !self.children[i].modern {
                        self.out.push(Action::ToChild(i, msg.clone()));
                    }
                }
            }
            "notifications/cancelled" => {
                let Some(rid) = msg.at("/params/requestId") else {
                    return;
                };
                if self.end_listen(rid) {
                    return;
                }
                // Still waiting for a name map or for initialize: drop it.
                if let Some(at) = self.deferred.iter().position(|m| m.get("id") == Some(rid)) {
                    let m = self.deferred.remove(at);
                    let method = m.get("method").and_then(Value::as_str).unwrap_or("");
                    if let Some(open) =
                        Open::start(method, &m, None, now).filter(|_| self.opts.audit)
                    {
                        let r = open.end(None, Outcome::Cancelled, 0, now);
                        self.out.push(Action::Audit(r));
                    }
                    return;
                }
                self.cancel_run(rid);
                if let Some((cid, child)) = self.ids.find_forward(rid) {
                    if let Some(Pending::Forward { audit, .. }) = self.ids.take(cid) {
                        self.record(audit, child, Outcome::Cancelled, 0, now);
                    }
                    self.drop_call(cid, "the client cancelled the request");
                    let mut m = msg.clone();
                    m["params"]["requestId"] = json!(cid);
                    if self.era.modern() && !self.children[child].modern {
                        era::strip_meta(&mut m); // as on the request it cancels
                    }
                    self.out.push(Action::ToChild(child, m));
                }
            }
            "notifications/progress" => {
                if let Some(child) = msg
                    .at("/params/progressToken")
                    .and_then(|t| self.ids.child_of_token(t))
                {
                    self.out.push(Action::ToChild(child, msg));
                }
            }
            _ => log::debug!("client notification {method} not routed"),
        }
    }

    fn client_request(
        &mut self,
        method: &str,
        id: Value,
        msg: Value,
        meta: era::LineMeta,
        bytes: Option<usize>,
        now: Instant,
    ) {
        match self.era.era {
            Era::Modern => return self.modern_request(method, id, msg, meta, bytes, now),
            Era::Unlocked if era::is_modern_request(method, &msg) => {
                return self.modern_request(method, id, msg, meta, bytes, now);
            }
            Era::Legacy if era::is_modern_request(method, &msg) => {
                let v = self.legacy_version();
                let e = era::modern_when_legacy(method, v);
                return self.out.push(Action::ToClient(e.response(id)));
            }
            _ => {}
        }
        match method {
            "initialize" => {
                self.era.era = Era::Legacy;
                return self.initialize(id, msg, now);
            }
            "ping" => return self.reply(id, json!({})),
            _ => {}
        }
        if self.init_params.is_none() {
            let e = era::unlocked(method);
            return self.out.push(Action::ToClient(e.response(id)));
        }
        if self.initializing() {
            return self.defer(msg);
        }
        if self.opts.audit {
            self.opening = Open::start(method, &msg, bytes, now);
        }
        self.route_request(method, id, msg, now);
        self.opening = None; // deferred for a name map: tracked when retried
    }

    pub(super) fn route_request(&mut self, method: &str, id: Value, msg: Value, now: Instant) {
        if let Some(kind) = ListKind::from_method(method) {
            if msg.at("/params/cursor").is_some_and(|c| !c.is_null()) {
                return self.fail(
                    id,
                    INVALID_PARAMS,
                    "unknown cursor: this server returns complete lists and mints no cursors",
                );
            }
            return self.start_list(kind, Some(id), now);
        }
        match method {
            "tools/call" => self.route_named(ListKind::Tools, "/params/name", id, msg, now),
            "prompts/get" => self.route_named(ListKind::Prompts, "/params/name", id, msg, now),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                match msg.at("/params/uri").and_then(Value::as_str) {
                    Some(uri) => {
                        let uri = uri.to_owned();
                        self.route_uri(&uri, id, msg, now)
                    }
                    None => self.refuse(
                        id,
                        INVALID_PARAMS,
                        format!("{method}: missing params.uri"),
                        Outcome::Error(INVALID_PARAMS),
                        now,
                    ),
                }
            }
            "completion/complete" => self.route_completion(id, msg, now),
            "logging/setLevel" => self.set_level(id, msg, now),
            m if tasks::is_task_method(m, self.era.modern()) => self.route_task(m, id, msg, now),
            _ => self.fail(id, METHOD_NOT_FOUND, format!("method not found: {method}")),
        }
    }

    fn route_completion(&mut self, id: Value, msg: Value, now: Instant) {
        match msg.at("/params/ref/type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                self.route_named(ListKind::Prompts, "/params/ref/name", id, msg, now)
            }
            Some("ref/resource") => {
                let uri = msg
                    .at("/params/ref/uri")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                self.route_uri(&uri, id, msg, now)
            }
            _ => self.fail(id, INVALID_PARAMS, "completion/complete: unknown ref type"),
        }
    }

    /// Sends a client request to one child under a fresh id.
    pub(super) fn forward(&mut self, child: usize, id: Value, mut msg: Value, now: Instant) {
        if self.era.current.is_some() {
            // A retry's state: one we issued for this very child, or none.
            let pin = self.era.pin.take();
            let why = match &pin {
                Some((_, p)) if *p != child => {
                    Some("requestState: the name now belongs to another server")
                }
                None if Router::foreign_state(&msg, self.children[child].modern) => {
                    Some("requestState: unknown, used or expired (or inputResponses without one)")
                }
                _ => None,
            };
            if let Some(why) = why {
                self.era.current = None;
                return self.refuse(id, INVALID_PARAMS, why, Outcome::Error(INVALID_PARAMS), now);
            }
            if let Some((handle, _)) = pin {
                self.restore_state(&handle, &mut msg);
            }
        }
        if self.children[child].modern
            && self.children[child].status == Status::Ready
            && let Some("resources/subscribe" | "resources/unsubscribe") =
                msg.get("method").and_then(Value::as_str)
        {
            self.opening = None;
            return self.subscribe_modern(child, id, &msg);
        }
        if !self.children[child].modern
            && let Some(m @ ("resources/subscribe" | "resources/unsubscribe")) =
                msg.get("method").and_then(Value::as_str)
            && let Some(uri) = msg.at("/params/uri").and_then(Value::as_str)
        {
            // A subscribe refused below (the child is down) is not kept
            // for its restart; an unsubscribe is honoured either way.
            let subscribe = m == "resources/subscribe";
            if !subscribe || self.children[child].status == Status::Ready {
                self.era.client_sub(child, uri, subscribe);
            }
        }
        if self.children[child].status != Status::Ready {
            self.era.current = None;
            let name = self.children[child].info.name.clone();
            let code = jsonrpc::SERVER_UNAVAILABLE;
            let msg = format!("server {name} is not available");
            return self.refuse(id, code, msg, Outcome::Error(code), now);
        }
        let token = msg.at("/params/_meta/progressToken").map(token_key);
        let mut pending = Pending::Forward {
            child,
            client_id: id,
            token,
            audit: self.opening.take().map(Box::new),
            modern: self.era.current.take(),
            resend: None,
        };
        if let Pending::Forward {
            modern: Some(era::Reply { level: Some(l), .. }),
            ..
        } = &pending
        {
            self.raise_log_level(child, *l);
        }
        let from_modern = matches!(
            &pending,
            Pending::Forward {
                modern: Some(_),
                ..
            }
        );
        if !self.children[child].caps.contains_key("tasks")
            && let Some(p) = msg.get_mut("params").and_then(Value::as_object_mut)
            && jsonrpc::field(p, "task").is_some()
        {
            p.remove("task"); // a child that did not offer tasks makes none
        }
        match (from_modern, self.children[child].modern) {
            (true, false) => era::strip_meta(&mut msg),
            (false, true) => {
                let params = msg
                    .as_object_mut()
                    .map(|m| m.entry("params").or_insert_with(|| json!({})));
                if let Some(p) = params {
                    era::add_meta(p, self.era.client_meta());
                }
            }
            (true, true) => {
                // The client's own `_meta` passes: put back if it was cached.
                if let Some(c) = &self.era.meta_cache
                    && let Some(p) = msg.get_mut("params")
                    && p.get("_meta")
                        .is_none_or(|m| m.get(era::PROTOCOL_VERSION).is_none())
                {
                    era::add_meta(p, &c.map);
                }
            }
            (false, false) => {}
        }
        if !from_modern
            && self.children[child].modern
            && let Pending::Forward { resend, .. } = &mut pending
            && let Some("tools/call" | "prompts/get" | "resources/read") =
                msg.get("method").and_then(Value::as_str)
        {
            *resend = Some(Box::new(Resend {
                msg: msg.clone(),
                rounds: 0,
            }));
        }
        self.send_forward(child, pending, msg, now);
    }

    /// Sends a registered client request to `child` under a fresh id.
    pub(super) fn send_forward(
        &mut self,
        child: usize,
        pending: Pending,
        mut msg: Value,
        now: Instant,
    ) {
        // A legacy `tasks/result` blocks until its task ends: it may take
        // as long as any request with progress (`max_total`), not one timeout.
        let timeout = match msg.get("method").and_then(Value::as_str) {
            Some("tasks/result") => self.opts.max_total,
            _ => self.children[child].info.timeout,
        };
        let cid = self.ids.insert(pending, timeout, now);
        msg["id"] = json!(cid);
        self.out.push(Action::ToChild(child, msg));
    }
}
