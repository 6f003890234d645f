//! Serving a 2026-07-28 client (ERAS §2.1, §4 column A): every request's
//! `_meta` checked, `server/discover` answered by the gateway, the
//! session's legacy children initialized on the client's behalf, list
//! changes delivered on `subscriptions/listen` streams, and a child's log
//! messages passed on only for requests that asked for them.

use super::audit::{Open, Outcome};
use super::catalog::ListKind;
use super::era::{self, Era, Refusal};
use super::tasks;
use super::{Action, Router, Status};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::{self, INTERNAL_ERROR, INVALID_PARAMS};
use serde_json::{Value, json};
use std::time::Instant;

impl Router {
    fn refuse_with(&mut self, id: Value, e: Refusal) {
        self.out.push(Action::ToClient(e.response(id)));
    }

    /// A request on a modern connection, or the first modern request of an
    /// unlocked one (a refused request does not lock the era). `meta`: how
    /// its `_meta` came (see [`era::MetaCache`]).
    pub(super) fn modern_request(
        &mut self,
        method: &str,
        id: Value,
        msg: Value,
        meta: era::LineMeta,
        bytes: Option<usize>,
        now: Instant,
    ) {
        let locked = self.era.modern();
        if locked && method == "initialize" {
            return self.refuse_with(id, era::initialize_when_modern(&msg));
        }
        if let Some(e) = era::not_modern(method).filter(|_| !tasks::is_task_method(method, true)) {
            return self.refuse_with(id, e);
        }
        let cached = match (&meta, &self.era.meta_cache) {
            (era::LineMeta::Cached, Some(c)) if locked => Some(c),
            _ => None, // (Cached without a cache cannot happen: refused as missing)
        };
        let (inputs, level, declares_tasks) = match cached {
            Some(c) => (c.inputs, c.level, c.tasks),
            None => {
                let m = match era::check_meta(&msg, locked) {
                    Ok(m) => m,
                    Err(e) => return self.refuse_with(id, e),
                };
                let facts = (era::Inputs::of(m.capabilities), m.level, m.declares_tasks());
                if let era::LineMeta::Text(text) = meta
                    && let Some(Value::Object(map)) = msg.at("/params/_meta")
                    && let Some(c) = era::MetaCache::of(text, map, m)
                {
                    self.era.meta_cache = Some(c); // one with a per-request key leaves it
                }
                if !locked {
                    self.lock_modern(m, now);
                }
                facts
            }
        };
        if self.initializing() {
            return self.defer(msg);
        }
        if tasks::is_task_method(method, true) && !declares_tasks {
            // The extension's rule (ERAS §3): only a client that declares it.
            return self.refuse_with(id, tasks::undeclared(method));
        }
        match method {
            "server/discover" => return self.discover(id),
            "subscriptions/listen" => return self.listen(id, &msg, declares_tasks, now),
            _ => {}
        }
        if self.opts.audit {
            self.opening = Open::start(method, &msg, bytes, now);
        }
        let input = era::input_method(method).map(|method| {
            Box::new(era::InputCall {
                method,
                target: super::mrtr::target_of(&msg),
                inputs,
            })
        });
        // A retry carries `requestState`; a first call (the common case)
        // skips both checks below.
        let state = input.is_some() && msg.at("/params/requestState").is_some();
        if state && self.retry(&id, &msg, now) {
            self.opening = None; // not left for a later request to end
            return;
        }
        if state {
            match self.wrapped_state(&msg) {
                Ok(pin) => self.era.pin = pin,
                Err(why) => {
                    let outcome = Outcome::Error(INVALID_PARAMS);
                    return self.refuse(id, INVALID_PARAMS, why, outcome, now);
                }
            }
        }
        self.era.current = Some(era::Reply {
            cacheable: method == "resources/read",
            level,
            input,
        });
        self.route_request(method, id, msg, now);
        self.opening = None;
        self.era.current = None; // deferred for a name map: set again on the retry
        self.era.pin = None;
    }

    /// Locks the connection to 2026-07-28 and initializes the session's
    /// legacy children with this first request's capabilities and info
    /// (ERAS §5.8); requests wait for them as they wait for `initialize`.
    fn lock_modern(&mut self, meta: era::Meta, now: Instant) {
        self.era.era = Era::Modern;
        self.era.modern_client(meta);
        let params =
            era::legacy_init_params(meta, &self.opts.server_name, &self.opts.server_version);
        self.start_init(params, None, now);
    }

    /// The children initialized for a modern client: the gateway is their
    /// client, so it sends `notifications/initialized`.
    pub(super) fn initialized_for_modern(&mut self) {
        for i in self.ready() {
            if self.children[i].modern {
                continue;
            }
            self.out.push(Action::ToChild(
                i,
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            ));
        }
    }

    /// `server/discover`: the children's capabilities merged, as for
    /// `initialize`, and only the modern version (ERAS §1.3, §5.4).
    fn discover(&mut self, id: Value) {
        let (mut caps, instructions) = self.merged_caps();
        // The modern children's extensions, as the issue asks (ERAS §5.15
        // would list only the ones the gateway routes).
        let mut ext = serde_json::Map::new();
        for c in self.children.iter().filter(|c| c.status == Status::Ready) {
            if let Some(e) = c.caps.get("extensions").and_then(Value::as_object) {
                // Tasks do not cross eras (ERAS §3).
                for (k, v) in e.iter().filter(|(k, _)| c.modern || *k != tasks::EXTENSION) {
                    ext.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        if !ext.is_empty() {
            caps.insert("extensions".into(), Value::Object(ext));
        }
        let mut r = json!({"supportedVersions": [era::MODERN], "capabilities": caps});
        if let Some(i) = instructions {
            r["instructions"] = Value::String(i);
        }
        self.era.stamp(&mut r, true);
        self.reply(id, r);
    }

    /// Before a request with `logLevel` goes to a child that logs: lowers
    /// the child's level to it if the child may now be too quiet.
    pub(super) fn raise_log_level(&mut self, child: usize, level: u8) {
        if self.children[child].modern // it reads `logLevel` from `_meta`
            || !self.children[child].caps.contains_key("logging")
            || self.era.sent_level[child].is_some_and(|s| s <= level)
        {
            return;
        }
        self.era.sent_level[child] = Some(level);
        let id = self.ids.fresh(); // its answer is dropped as unknown
        self.out.push(Action::ToChild(
            child,
            json!({"jsonrpc": "2.0", "id": id, "method": "logging/setLevel",
                   "params": {"level": era::level_name(level)}}),
        ));
    }

    /// A child's notification for a modern client: progress passes, log
    /// messages only while a request to that child asked for them at that
    /// level (ERAS §5.10), list changes go to listen streams, the rest
    /// (legacy-only notifications) stops here.
    pub(super) fn modern_child_notification(&mut self, child: usize, method: &str, msg: Value) {
        match method {
            "notifications/progress" => self.out.push(Action::ToClient(msg)),
            "notifications/message" => {
                let level = msg
                    .at("/params/level")
                    .and_then(Value::as_str)
                    .and_then(era::level_rank);
                if let (Some(l), Some(min)) = (level, self.ids.log_level(child))
                    && l >= min
                {
                    self.out.push(Action::ToClient(msg));
                }
            }
            "notifications/resources/updated" => self.resource_updated(child, msg),
            "notifications/tasks" => self.task_status(child, msg),
            "notifications/tools/list_changed" => self.tell_list_changed(ListKind::Tools),
            "notifications/prompts/list_changed" => self.tell_list_changed(ListKind::Prompts),
            "notifications/resources/list_changed" => self.tell_list_changed(ListKind::Resources),
            _ => log::debug!(
                "[{}] {method} not passed to a 2026-07-28 client",
                self.children[child].info.name
            ),
        }
    }

    /// A child asks the client something, but a 2026-07-28 client takes
    /// no requests: `ping` is answered here, the rest refused.
    pub(super) fn modern_child_request(&mut self, child: usize, id: Value, method: &str) {
        let answer = if method == "ping" {
            jsonrpc::result(id, json!({}))
        } else {
            jsonrpc::error(
                id,
                INTERNAL_ERROR,
                format!(
                    "{method}: the client speaks 2026-07-28, which has no requests \
                     from server to client; the gateway cannot pass this on"
                ),
            )
        };
        if self.children[child].status == Status::Ready {
            self.out.push(Action::ToChild(child, answer));
        }
    }

    /// A forwarded request's answer for a modern client, as a line: a
    /// result stamped ([`era::EraState::stamp_into`]), an error with a
    /// legacy-only code mapped.
    pub(super) fn modern_response_line(
        &self,
        client_id: &Value,
        is_error: bool,
        payload: &str,
        reply: era::Reply,
    ) -> Vec<u8> {
        if is_error {
            let mut e: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
            modern_error(&mut e);
            return jsonrpc::to_line(&json!({"jsonrpc": "2.0", "id": client_id, "error": e}));
        }
        jsonrpc::response_line_with(client_id, false, payload.len() + 160, |out| {
            self.era.stamp_into(out, payload, reply.cacheable)
        })
    }

    /// The same for a response already parsed.
    pub(super) fn modern_response(&self, msg: &mut Value, reply: era::Reply) {
        if let Some(r) = msg.get_mut("result") {
            self.era.stamp(r, reply.cacheable);
        } else if let Some(e) = msg.get_mut("error") {
            modern_error(e);
        }
    }
}

/// A child's -32002 (resource not found in legacy) is -32602 in 2026-07-28.
fn modern_error(e: &mut Value) {
    if e.get("code").and_then(Value::as_i64) == Some(jsonrpc::SERVER_UNAVAILABLE) {
        e["code"] = json!(INVALID_PARAMS);
    }
}
