//! The aggregated MCP server of one session, as a sans-IO state machine.
//!
//! It takes a message from the client or from child N and returns
//! [`Action`]s (send to the client, send to child N, drop child N); the
//! session loop does all I/O and calls [`Router::tick`] at
//! [`Router::next_deadline`]. Every routing rule is unit-tested below without
//! SSH or processes.

use super::jsonrpc::{self, INVALID_PARAMS, INVALID_REQUEST, Incoming, METHOD_NOT_FOUND};
use super::names::{NameMap, UriMap};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Protocol revisions of the `initialize` era that the gateway speaks.
pub const SUPPORTED_VERSIONS: [&str; 5] = [
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    "2024-11-05",
    "2024-10-07",
];

/// Most child pages followed for one list before giving up on that child.
const MAX_PAGES: usize = 1000;

/// What the session must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    ToClient(Value),
    /// A ready line for the client (a child's response passed through as text).
    ToClientRaw(Vec<u8>),
    ToChild(usize, Value),
    /// The child failed (start-up, initialize): log it and leave it out.
    ChildFailed(usize, String),
}

/// Per-child settings the router needs.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    pub name: String,
    pub timeout: Duration,
    /// Put before this server's tool and prompt names (`namePrefix`).
    pub prefix: String,
}

/// Router-wide settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest a request may run in total, progress notwithstanding.
    pub max_total: Duration,
    pub server_name: String,
    pub server_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Started, not yet asked to initialize.
    Idle,
    Initializing,
    Ready,
    /// Left out for the rest of the session.
    Out,
}

struct Child {
    info: ChildInfo,
    status: Status,
    caps: Map<String, Value>,
    instructions: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }
    fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }
    fn capability(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::Templates => "resources",
        }
    }
    fn from_method(m: &str) -> Option<ListKind> {
        Some(match m {
            "tools/list" => ListKind::Tools,
            "prompts/list" => ListKind::Prompts,
            "resources/list" => ListKind::Resources,
            "resources/templates/list" => ListKind::Templates,
            _ => return None,
        })
    }
}

enum FanKind {
    Init,
    List(ListKind),
    SetLevel,
}

/// A request sent to several children whose answers are combined.
struct Fanout {
    kind: FanKind,
    /// The client request to answer; None for an internal refresh.
    reply_to: Option<Value>,
    waiting: usize,
    items: Vec<Vec<Value>>,
}

enum Pending {
    /// A client request forwarded to one child.
    Forward {
        child: usize,
        client_id: Value,
        token: Option<String>,
    },
    /// One child's part of a fan-out.
    Part {
        child: usize,
        fanout: u64,
        pages: usize,
    },
}

struct Timer {
    deadline: Instant,
    started: Instant,
}

/// One session's aggregated server.
pub struct Router {
    children: Vec<Child>,
    opts: Options,
    next_id: u64,
    /// Child-side id -> what it belongs to.
    pending: HashMap<u64, (Pending, Timer)>,
    /// Gateway id sent to the client -> (child, the child's own id).
    to_client: HashMap<u64, (usize, Value)>,
    fanouts: HashMap<u64, Fanout>,
    tools: Option<NameMap>,
    prompts: Option<NameMap>,
    resources: Option<UriMap>,
    templates: Option<UriMap>,
    /// Internal refreshes in flight, so one is not started twice.
    refreshing: Vec<ListKind>,
    /// Client requests waiting for a name map or for initialize to finish.
    deferred: Vec<Value>,
    /// Progress token of a forwarded client request -> child-side id.
    client_tokens: HashMap<String, u64>,
    /// Progress token of a child's request to the client -> child.
    child_tokens: HashMap<String, usize>,
    init_params: Option<Value>,
    initialized: bool,
    out: Vec<Action>,
}

fn token_key(v: &Value) -> String {
    v.to_string()
}

impl Router {
    pub fn new(children: Vec<ChildInfo>, opts: Options) -> Router {
        Router {
            children: children
                .into_iter()
                .map(|info| Child {
                    info,
                    status: Status::Idle,
                    caps: Map::new(),
                    instructions: None,
                })
                .collect(),
            opts,
            next_id: 1,
            pending: HashMap::new(),
            to_client: HashMap::new(),
            fanouts: HashMap::new(),
            tools: None,
            prompts: None,
            resources: None,
            templates: None,
            refreshing: Vec::new(),
            deferred: Vec::new(),
            client_tokens: HashMap::new(),
            child_tokens: HashMap::new(),
            init_params: None,
            initialized: false,
            out: Vec::new(),
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    fn reply(&mut self, id: Value, result: Value) {
        self.out.push(Action::ToClient(jsonrpc::result(id, result)));
    }

    fn fail(&mut self, id: Value, code: i64, msg: impl Into<String>) {
        self.out
            .push(Action::ToClient(jsonrpc::error(id, code, msg)));
    }

    fn timer(&self, child: usize, now: Instant) -> Timer {
        Timer {
            deadline: now + self.children[child].info.timeout,
            started: now,
        }
    }

    /// Names of the children that are serving.
    pub fn ready_children(&self) -> Vec<&str> {
        self.children
            .iter()
            .filter(|c| c.status == Status::Ready)
            .map(|c| c.info.name.as_str())
            .collect()
    }

    /// Marks a child as unusable from the start (it failed to spawn).
    pub fn child_unavailable(&mut self, child: usize) {
        self.children[child].status = Status::Out;
    }

    /// A line from the client, already framed. Parse errors are answered.
    pub fn from_client_line(&mut self, line: &[u8], now: Instant) -> Vec<Action> {
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => self.from_client(v, now),
            Err(e) => {
                self.fail(
                    Value::Null,
                    jsonrpc::PARSE_ERROR,
                    format!("parse error: {e}"),
                );
                self.take()
            }
        }
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

    fn client_message(&mut self, msg: Value, now: Instant) {
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
                self.client_request(&method, id, msg, now)
            }
            (Some(method), None) => {
                let method = method.to_owned();
                self.client_notification(&method, msg)
            }
            (None, Some(id)) if obj.contains_key("result") || obj.contains_key("error") => {
                self.client_response(id, msg)
            }
            (None, id) => self.fail(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                "not a request, notification or response",
            ),
        }
    }

    fn client_response(&mut self, id: Value, mut msg: Value) {
        let Some(gid) = id.as_u64() else { return };
        let Some((child, orig)) = self.to_client.remove(&gid) else {
            log::debug!("response to unknown request {gid} dropped");
            return;
        };
        if self.children[child].status == Status::Ready {
            msg["id"] = orig;
            self.out.push(Action::ToChild(child, msg));
        }
    }

    fn client_notification(&mut self, method: &str, msg: Value) {
        match method {
            "notifications/initialized" => {
                self.initialized = true;
                for i in self.ready() {
                    self.out.push(Action::ToChild(i, msg.clone()));
                }
            }
            "notifications/roots/list_changed" => {
                for i in self.ready() {
                    self.out.push(Action::ToChild(i, msg.clone()));
                }
            }
            "notifications/cancelled" => {
                let Some(rid) = msg.pointer("/params/requestId") else {
                    return;
                };
                let found = self.pending.iter().find_map(|(cid, (p, _))| match p {
                    Pending::Forward {
                        child, client_id, ..
                    } if client_id == rid => Some((*cid, *child)),
                    _ => None,
                });
                if let Some((cid, child)) = found {
                    self.drop_pending(cid);
                    let mut m = msg.clone();
                    m["params"]["requestId"] = json!(cid);
                    self.out.push(Action::ToChild(child, m));
                }
            }
            "notifications/progress" => {
                let Some(tok) = msg.pointer("/params/progressToken") else {
                    return;
                };
                if let Some(&child) = self.child_tokens.get(&token_key(tok)) {
                    self.out.push(Action::ToChild(child, msg));
                }
            }
            _ => log::debug!("client notification {method} not routed"),
        }
    }

    fn ready(&self) -> Vec<usize> {
        (0..self.children.len())
            .filter(|&i| self.children[i].status == Status::Ready)
            .collect()
    }

    fn drop_pending(&mut self, cid: u64) {
        if let Some((Pending::Forward { token: Some(t), .. }, _)) = self.pending.remove(&cid) {
            self.client_tokens.remove(&t);
        }
    }

    fn client_request(&mut self, method: &str, id: Value, msg: Value, now: Instant) {
        match method {
            "initialize" => return self.initialize(id, msg, now),
            "ping" => return self.reply(id, json!({})),
            _ => {}
        }
        if self.init_params.is_none() {
            return self.fail(
                id,
                INVALID_REQUEST,
                format!("{method}: the session is not initialized; send initialize first"),
            );
        }
        if self
            .fanouts
            .values()
            .any(|f| matches!(f.kind, FanKind::Init))
        {
            self.deferred.push(msg);
            return;
        }
        if let Some(kind) = ListKind::from_method(method) {
            if msg.pointer("/params/cursor").is_some_and(|c| !c.is_null()) {
                return self.fail(
                    id,
                    INVALID_PARAMS,
                    "unknown cursor: this server returns complete lists and mints no cursors",
                );
            }
            return self.start_list(kind, Some(id), now);
        }
        match method {
            "tools/call" => self.route_named(ListKind::Tools, "tool", "/params/name", id, msg, now),
            "prompts/get" => {
                self.route_named(ListKind::Prompts, "prompt", "/params/name", id, msg, now)
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                match msg.pointer("/params/uri").and_then(Value::as_str) {
                    Some(uri) => {
                        let uri = uri.to_owned();
                        self.route_uri(&uri, id, msg, now)
                    }
                    None => self.fail(id, INVALID_PARAMS, format!("{method}: missing params.uri")),
                }
            }
            "completion/complete" => self.route_completion(id, msg, now),
            "logging/setLevel" => self.set_level(id, msg, now),
            _ => self.fail(id, METHOD_NOT_FOUND, format!("method not found: {method}")),
        }
    }

    fn initialize(&mut self, id: Value, msg: Value, now: Instant) {
        if self.init_params.is_some() {
            return self.fail(id, INVALID_REQUEST, "initialize was already received");
        }
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        self.init_params = Some(params.clone());
        let targets: Vec<usize> = (0..self.children.len())
            .filter(|&i| self.children[i].status == Status::Idle)
            .collect();
        let fid = self.fresh_id();
        self.fanouts.insert(
            fid,
            Fanout {
                kind: FanKind::Init,
                reply_to: Some(id),
                waiting: targets.len(),
                items: Vec::new(),
            },
        );
        for i in targets {
            self.children[i].status = Status::Initializing;
            let cid = self.fresh_id();
            let timer = self.timer(i, now);
            self.pending.insert(
                cid,
                (
                    Pending::Part {
                        child: i,
                        fanout: fid,
                        pages: 0,
                    },
                    timer,
                ),
            );
            self.out.push(Action::ToChild(
                i,
                json!({"jsonrpc": "2.0", "id": cid, "method": "initialize", "params": params}),
            ));
        }
        self.maybe_finish(fid, now);
    }

    fn start_list(&mut self, kind: ListKind, reply_to: Option<Value>, now: Instant) {
        let targets: Vec<usize> = self
            .ready()
            .into_iter()
            .filter(|&i| self.children[i].caps.contains_key(kind.capability()))
            .collect();
        if reply_to.is_none() {
            self.refreshing.push(kind);
        }
        let fid = self.fresh_id();
        self.fanouts.insert(
            fid,
            Fanout {
                kind: FanKind::List(kind),
                reply_to,
                waiting: targets.len(),
                items: vec![Vec::new(); self.children.len()],
            },
        );
        for i in targets {
            self.send_page(kind, i, fid, None, 0, now);
        }
        self.maybe_finish(fid, now);
    }

    fn send_page(
        &mut self,
        kind: ListKind,
        child: usize,
        fid: u64,
        cursor: Option<Value>,
        pages: usize,
        now: Instant,
    ) {
        let cid = self.fresh_id();
        let timer = self.timer(child, now);
        self.pending.insert(
            cid,
            (
                Pending::Part {
                    child,
                    fanout: fid,
                    pages,
                },
                timer,
            ),
        );
        let params = match cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        self.out.push(Action::ToChild(
            child,
            json!({"jsonrpc": "2.0", "id": cid, "method": kind.method(), "params": params}),
        ));
    }

    fn set_level(&mut self, id: Value, msg: Value, now: Instant) {
        let targets: Vec<usize> = self
            .ready()
            .into_iter()
            .filter(|&i| self.children[i].caps.contains_key("logging"))
            .collect();
        let fid = self.fresh_id();
        self.fanouts.insert(
            fid,
            Fanout {
                kind: FanKind::SetLevel,
                reply_to: Some(id),
                waiting: targets.len(),
                items: Vec::new(),
            },
        );
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        for i in targets {
            let cid = self.fresh_id();
            let timer = self.timer(i, now);
            self.pending.insert(
                cid,
                (
                    Pending::Part {
                        child: i,
                        fanout: fid,
                        pages: 0,
                    },
                    timer,
                ),
            );
            self.out.push(Action::ToChild(
                i,
                json!({"jsonrpc": "2.0", "id": cid, "method": "logging/setLevel", "params": params}),
            ));
        }
        self.maybe_finish(fid, now);
    }

    fn map_ready(&self, kind: ListKind) -> bool {
        match kind {
            ListKind::Tools => self.tools.is_some(),
            ListKind::Prompts => self.prompts.is_some(),
            ListKind::Resources => self.resources.is_some(),
            ListKind::Templates => self.templates.is_some(),
        }
    }

    /// Defers `msg` until the maps in `kinds` exist; true if deferred.
    fn need_maps(&mut self, kinds: &[ListKind], msg: &Value, now: Instant) -> bool {
        let missing: Vec<ListKind> = kinds
            .iter()
            .copied()
            .filter(|k| !self.map_ready(*k))
            .collect();
        if missing.is_empty() {
            return false;
        }
        for k in missing {
            if !self.refreshing.contains(&k) {
                self.start_list(k, None, now);
            }
        }
        if kinds.iter().all(|k| self.map_ready(*k)) {
            return false; // lists with no children finish at once
        }
        self.deferred.push(msg.clone());
        true
    }

    /// Routes by the exposed name at JSON pointer `at` (`/params/name`, or
    /// `/params/ref/name` for completions) and puts the child's own name there.
    fn route_named(
        &mut self,
        kind: ListKind,
        what: &str,
        at: &str,
        id: Value,
        mut msg: Value,
        now: Instant,
    ) {
        if self.need_maps(&[kind], &msg, now) {
            return;
        }
        let Some(name) = msg.pointer(at).and_then(Value::as_str) else {
            let field = at.trim_start_matches('/').replace('/', ".");
            return self.fail(
                id,
                INVALID_PARAMS,
                format!("missing {field} for the {what}"),
            );
        };
        let map = if kind == ListKind::Tools {
            &self.tools
        } else {
            &self.prompts
        };
        let Some((child, orig)) = map.as_ref().and_then(|m| m.get(name)) else {
            return self.fail(id, INVALID_PARAMS, format!("unknown {what}: {name}"));
        };
        let orig = Value::String(orig.to_owned());
        if let Some(slot) = msg.pointer_mut(at) {
            *slot = orig;
        }
        self.forward(child, id, msg, now);
    }

    fn route_uri(&mut self, uri: &str, id: Value, msg: Value, now: Instant) {
        if self.need_maps(&[ListKind::Resources, ListKind::Templates], &msg, now) {
            return;
        }
        let child = self.uri_child(uri);
        match child {
            Some(c) => self.forward(c, id, msg, now),
            None => self.fail(id, INVALID_PARAMS, format!("unknown resource: {uri}")),
        }
    }

    fn uri_child(&self, uri: &str) -> Option<usize> {
        self.resources
            .as_ref()
            .and_then(|r| r.route(uri))
            .or_else(|| self.templates.as_ref().and_then(|t| t.route(uri)))
    }

    fn route_completion(&mut self, id: Value, msg: Value, now: Instant) {
        match msg.pointer("/params/ref/type").and_then(Value::as_str) {
            Some("ref/prompt") => self.route_named(
                ListKind::Prompts,
                "prompt",
                "/params/ref/name",
                id,
                msg,
                now,
            ),
            Some("ref/resource") => {
                let uri = msg
                    .pointer("/params/ref/uri")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                self.route_uri(&uri, id, msg, now)
            }
            _ => self.fail(id, INVALID_PARAMS, "completion/complete: unknown ref type"),
        }
    }

    /// Sends a client request to one child under a fresh id.
    fn forward(&mut self, child: usize, id: Value, mut msg: Value, now: Instant) {
        if self.children[child].status != Status::Ready {
            let name = self.children[child].info.name.clone();
            return self.fail(
                id,
                jsonrpc::SERVER_UNAVAILABLE,
                format!("server {name} is not available"),
            );
        }
        let cid = self.fresh_id();
        let token = msg.pointer("/params/_meta/progressToken").map(token_key);
        if let Some(t) = &token {
            self.client_tokens.insert(t.clone(), cid);
        }
        msg["id"] = json!(cid);
        let timer = self.timer(child, now);
        self.pending.insert(
            cid,
            (
                Pending::Forward {
                    child,
                    client_id: id,
                    token,
                },
                timer,
            ),
        );
        self.out.push(Action::ToChild(child, msg));
    }

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
        let cid = id.as_u64();
        let forwarded = cid
            .and_then(|c| self.pending.get(&c))
            .is_some_and(|(p, _)| matches!(p, Pending::Forward { child: c, .. } if *c == child));
        if !forwarded || self.children[child].status == Status::Out {
            let key = if is_error { "error" } else { "result" };
            let v = match serde_json::from_str::<Value>(payload.get()) {
                Ok(p) => json!({"jsonrpc": "2.0", "id": id, key: p}),
                Err(_) => return Vec::new(),
            };
            return self.from_child(child, v, now);
        }
        if let Some((
            Pending::Forward {
                client_id, token, ..
            },
            _,
        )) = cid.and_then(|c| self.pending.remove(&c))
        {
            if let Some(t) = token {
                self.client_tokens.remove(&t);
            }
            self.out.push(Action::ToClientRaw(jsonrpc::response_line(
                &client_id, is_error, &payload,
            )));
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
            (Some(m), Some(id)) => self.child_request(child, &m, id, msg),
            (Some(m), None) => self.child_notification(child, &m, msg, now),
            (None, Some(id)) => self.child_response(child, id, msg, now),
            (None, None) => log::debug!(
                "[{}] sent a message with no method and no id",
                self.children[child].info.name
            ),
        }
        self.take()
    }

    fn child_request(&mut self, child: usize, _method: &str, id: Value, mut msg: Value) {
        let gid = self.fresh_id();
        if let Some(t) = msg.pointer("/params/_meta/progressToken") {
            self.child_tokens.insert(token_key(t), child);
        }
        self.to_client.insert(gid, (child, id));
        msg["id"] = json!(gid);
        self.out.push(Action::ToClient(msg));
    }

    fn child_notification(&mut self, child: usize, method: &str, mut msg: Value, now: Instant) {
        match method {
            "notifications/tools/list_changed" => self.tools = None,
            "notifications/prompts/list_changed" => self.prompts = None,
            "notifications/resources/list_changed" => {
                self.resources = None;
                self.templates = None;
            }
            "notifications/progress" => {
                if let Some(t) = msg.pointer("/params/progressToken")
                    && let Some(cid) = self.client_tokens.get(&token_key(t)).copied()
                    && let Some((_, timer)) = self.pending.get_mut(&cid)
                {
                    let t = self.children[child].info.timeout;
                    timer.deadline = (now + t).min(timer.started + self.opts.max_total);
                }
            }
            "notifications/cancelled" => {
                // The child cancels one of its own requests to the client.
                let Some(rid) = msg.pointer("/params/requestId").cloned() else {
                    return;
                };
                let gid = self
                    .to_client
                    .iter()
                    .find(|(_, (c, orig))| *c == child && *orig == rid)
                    .map(|(g, _)| *g);
                match gid {
                    Some(g) => {
                        self.to_client.remove(&g);
                        msg["params"]["requestId"] = json!(g);
                    }
                    None => return,
                }
            }
            _ => {}
        }
        self.out.push(Action::ToClient(msg));
    }

    fn child_response(&mut self, child: usize, id: Value, mut msg: Value, now: Instant) {
        let Some(cid) = id.as_u64() else { return };
        let Some((p, _)) = self.pending.remove(&cid) else {
            log::debug!(
                "[{}] response to unknown id {cid}",
                self.children[child].info.name
            );
            return;
        };
        match p {
            Pending::Forward {
                child: c,
                client_id,
                token,
            } => {
                if c != child {
                    return;
                }
                if let Some(t) = token {
                    self.client_tokens.remove(&t);
                }
                msg["id"] = client_id;
                self.out.push(Action::ToClient(msg));
            }
            Pending::Part {
                child: c,
                fanout,
                pages,
            } => {
                if c != child {
                    return;
                }
                self.part_answer(child, fanout, pages, &msg, now);
            }
        }
    }

    fn part_answer(&mut self, child: usize, fid: u64, pages: usize, msg: &Value, now: Instant) {
        let Some(f) = self.fanouts.get_mut(&fid) else {
            return;
        };
        let name = self.children[child].info.name.clone();
        let result = msg.get("result");
        match &f.kind {
            FanKind::Init => match result {
                Some(r) => {
                    let c = &mut self.children[child];
                    c.caps = r
                        .get("capabilities")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    c.instructions = r
                        .get("instructions")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    c.status = Status::Ready;
                    f.waiting -= 1;
                }
                None => {
                    let why = msg
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("no result")
                        .to_owned();
                    f.waiting -= 1;
                    self.children[child].status = Status::Out;
                    self.out.push(Action::ChildFailed(
                        child,
                        format!("initialize failed: {why}"),
                    ));
                }
            },
            FanKind::List(kind) => {
                let kind = *kind;
                if let Some(items) = result
                    .and_then(|r| r.get(kind.field()))
                    .and_then(Value::as_array)
                {
                    f.items[child].extend(items.iter().cloned());
                } else {
                    log::warn!(
                        "[{name}] {} failed: {}",
                        kind.method(),
                        msg.get("error").unwrap_or(&Value::Null)
                    );
                }
                let next = result
                    .and_then(|r| r.get("nextCursor"))
                    .filter(|c| c.as_str().is_some_and(|s| !s.is_empty()))
                    .cloned();
                match next {
                    Some(c) if pages + 1 < MAX_PAGES => {
                        return self.send_page(kind, child, fid, Some(c), pages + 1, now);
                    }
                    Some(_) => log::warn!(
                        "[{name}] {} has over {MAX_PAGES} pages; truncated",
                        kind.method()
                    ),
                    None => {}
                }
                f.waiting -= 1;
            }
            FanKind::SetLevel => f.waiting -= 1,
        }
        self.maybe_finish(fid, now);
    }

    /// Completes a fan-out once no child part is outstanding.
    fn maybe_finish(&mut self, fid: u64, now: Instant) {
        if self.fanouts.get(&fid).is_none_or(|f| f.waiting > 0) {
            return;
        }
        let Some(f) = self.fanouts.remove(&fid) else {
            return;
        };
        match f.kind {
            FanKind::Init => {
                if let Some(id) = f.reply_to {
                    let r = self.merged_init();
                    self.reply(id, r);
                }
            }
            FanKind::SetLevel => {
                if let Some(id) = f.reply_to {
                    self.reply(id, json!({}));
                }
            }
            FanKind::List(kind) => {
                let merged = self.merge(kind, f.items);
                self.refreshing.retain(|k| *k != kind);
                if let Some(id) = f.reply_to {
                    self.reply(id, json!({ kind.field(): merged }));
                }
            }
        }
        // Retry requests that waited for initialize or for a name map.
        if !self
            .fanouts
            .values()
            .any(|f| matches!(f.kind, FanKind::Init))
        {
            for m in std::mem::take(&mut self.deferred) {
                self.client_message(m, now);
            }
        }
    }

    /// Merges per-child items in config order and rebuilds the route map.
    fn merge(&mut self, kind: ListKind, items: Vec<Vec<Value>>) -> Vec<Value> {
        let mut out = Vec::new();
        match kind {
            ListKind::Tools | ListKind::Prompts => {
                let mut map = NameMap::default();
                for (child, list) in items.into_iter().enumerate() {
                    for mut item in list {
                        let Some(name) = item.get("name").and_then(Value::as_str) else {
                            continue;
                        };
                        let exposed =
                            map.insert_prefixed(child, &self.children[child].info.prefix, name);
                        item["name"] = Value::String(exposed);
                        out.push(item);
                    }
                }
                if kind == ListKind::Tools {
                    self.tools = Some(map);
                } else {
                    self.prompts = Some(map);
                }
            }
            ListKind::Resources | ListKind::Templates => {
                let mut map = UriMap::default();
                let key = if kind == ListKind::Resources {
                    "uri"
                } else {
                    "uriTemplate"
                };
                for (child, list) in items.into_iter().enumerate() {
                    for item in list {
                        let Some(uri) = item.get(key).and_then(Value::as_str) else {
                            continue;
                        };
                        let fresh = if kind == ListKind::Resources {
                            map.insert_uri(child, uri)
                        } else {
                            map.insert_template(child, uri)
                        };
                        if fresh {
                            out.push(item);
                        } else {
                            log::debug!(
                                "duplicate {key} {uri} from {} left out",
                                self.children[child].info.name
                            );
                        }
                    }
                }
                if kind == ListKind::Resources {
                    self.resources = Some(map);
                } else {
                    self.templates = Some(map);
                }
            }
        }
        out
    }

    fn merged_init(&self) -> Value {
        let mut caps = Map::new();
        let mut instructions = Vec::new();
        for c in self.children.iter().filter(|c| c.status == Status::Ready) {
            for key in ["tools", "prompts", "resources", "logging", "completions"] {
                let Some(v) = c.caps.get(key) else { continue };
                let entry = caps.entry(key).or_insert_with(|| json!({}));
                if let (Some(dst), Some(src)) = (entry.as_object_mut(), v.as_object()) {
                    for (k, b) in src {
                        // Union of boolean flags (listChanged, subscribe).
                        if b.as_bool() == Some(true) || !dst.contains_key(k) {
                            dst.insert(k.clone(), b.clone());
                        }
                    }
                }
            }
            if let Some(i) = &c.instructions {
                instructions.push(format!("[{}] {i}", c.info.name));
            }
        }
        let requested = self
            .init_params
            .as_ref()
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or(SUPPORTED_VERSIONS[0]);
        let version = if SUPPORTED_VERSIONS.contains(&requested) {
            requested
        } else {
            SUPPORTED_VERSIONS[0]
        };
        let mut r = json!({
            "protocolVersion": version,
            "capabilities": caps,
            "serverInfo": {"name": self.opts.server_name, "version": self.opts.server_version},
        });
        if !instructions.is_empty() {
            r["instructions"] = Value::String(instructions.join("\n\n"));
        }
        r
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
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (p, _))| match p {
                Pending::Forward { child: c, .. } | Pending::Part { child: c, .. } => *c == child,
            })
            .map(|(id, _)| *id)
            .collect();
        for cid in ids {
            self.abandon(
                cid,
                &format!("server {name} exited"),
                jsonrpc::SERVER_UNAVAILABLE,
                now,
            );
        }
        self.to_client.retain(|_, (c, _)| *c != child);
        self.child_tokens.retain(|_, c| *c != child);
        self.take()
    }

    /// Ends a pending child request with an error (timeout or child gone).
    fn abandon(&mut self, cid: u64, why: &str, code: i64, now: Instant) {
        let Some((p, _)) = self.pending.remove(&cid) else {
            return;
        };
        match p {
            Pending::Forward {
                client_id, token, ..
            } => {
                if let Some(t) = token {
                    self.client_tokens.remove(&t);
                }
                self.fail(client_id, code, why.to_owned());
            }
            Pending::Part { child, fanout, .. } => {
                if let Some(f) = self.fanouts.get_mut(&fanout) {
                    f.waiting -= 1;
                    if matches!(f.kind, FanKind::Init) && self.children[child].status != Status::Out
                    {
                        self.children[child].status = Status::Out;
                        self.out
                            .push(Action::ChildFailed(child, format!("initialize: {why}")));
                    }
                }
                self.maybe_finish(fanout, now);
            }
        }
    }

    /// When the session should call [`Router::tick`] next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|(_, t)| t.deadline).min()
    }

    /// Expires requests past their deadline: the client gets an error, the
    /// child a `notifications/cancelled` (never for initialize).
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let expired: Vec<(u64, usize, bool)> = self
            .pending
            .iter()
            .filter(|(_, (_, t))| t.deadline <= now)
            .map(|(id, (p, _))| match p {
                Pending::Forward { child, .. } => (*id, *child, true),
                Pending::Part { child, fanout, .. } => (
                    *id,
                    *child,
                    !self
                        .fanouts
                        .get(fanout)
                        .is_some_and(|f| matches!(f.kind, FanKind::Init)),
                ),
            })
            .collect();
        for (cid, child, cancel) in expired {
            let name = self.children[child].info.name.clone();
            let secs = self.children[child].info.timeout.as_secs_f64();
            if cancel {
                self.out.push(Action::ToChild(
                    child,
                    json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                           "params": {"requestId": cid, "reason": "timed out in the gateway"}}),
                ));
            }
            self.abandon(
                cid,
                &format!("request to server {name} timed out after {secs} s"),
                jsonrpc::REQUEST_TIMEOUT,
                now,
            );
        }
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(n: usize) -> Router {
        Router::new(
            (0..n)
                .map(|i| ChildInfo {
                    name: format!("s{i}"),
                    timeout: Duration::from_secs(10),
                    prefix: String::new(),
                })
                .collect(),
            Options {
                max_total: Duration::from_secs(60),
                server_name: "gw".into(),
                server_version: "0".into(),
            },
        )
    }

    fn to_child(a: &[Action]) -> Vec<(usize, Value)> {
        a.iter()
            .filter_map(|x| match x {
                Action::ToChild(i, v) => Some((*i, v.clone())),
                _ => None,
            })
            .collect()
    }

    fn to_client(a: &[Action]) -> Vec<Value> {
        a.iter()
            .filter_map(|x| match x {
                Action::ToClient(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// Initializes every child with the given capabilities.
    fn init(r: &mut Router, caps: Value, now: Instant) {
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{}},"clientInfo":{"name":"t","version":"1"}}}),
            now,
        );
        let sent = to_child(&a);
        assert_eq!(sent.len(), r.children.len());
        let mut last = a.clone();
        for (i, m) in sent {
            assert_eq!(m["params"]["capabilities"]["sampling"], json!({}));
            last = r.from_child(
                i,
                json!({"jsonrpc":"2.0","id":m["id"],"result":{"protocolVersion":"2025-06-18","capabilities":caps,"serverInfo":{"name":"x","version":"1"}}}),
                now,
            );
        }
        let reply = to_client(&last);
        assert_eq!(reply[0]["id"], 0);
        assert_eq!(reply[0]["result"]["protocolVersion"], "2025-06-18");
    }

    #[test]
    fn lists_merge_with_pagination_and_duplicates_route_back() {
        let now = Instant::now();
        let mut r = router(2);
        init(&mut r, json!({"tools":{"listChanged":true}}), now);
        let a = r.from_client(json!({"jsonrpc":"2.0","id":"L","method":"tools/list"}), now);
        let sent = to_child(&a);
        assert_eq!(sent.len(), 2);
        // child 0 pages: first page then a second one.
        let a = r.from_child(0, json!({"jsonrpc":"2.0","id":sent[0].1["id"],"result":{"tools":[{"name":"echo"}],"nextCursor":"p2"}}), now);
        let next = to_child(&a);
        assert_eq!(next[0].1["params"]["cursor"], "p2");
        r.from_child(
            0,
            json!({"jsonrpc":"2.0","id":next[0].1["id"],"result":{"tools":[{"name":"add"}]}}),
            now,
        );
        let a = r.from_child(1, json!({"jsonrpc":"2.0","id":sent[1].1["id"],"result":{"tools":[{"name":"echo","extra":{"k":1}}]}}), now);
        let reply = &to_client(&a)[0];
        assert_eq!(reply["id"], "L");
        let names: Vec<&str> = reply["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["echo", "add", "echo_1"]);
        assert_eq!(reply["result"]["tools"][2]["extra"]["k"], 1);
        assert!(reply["result"].get("nextCursor").is_none());
        // echo_1 goes to child 1 under its own name with a fresh id.
        let a = r.from_client(json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo_1","arguments":{}}}), now);
        let (c, m) = &to_child(&a)[0];
        assert_eq!(*c, 1);
        assert_eq!(m["params"]["name"], "echo");
        let a = r.from_child(
            1,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"content":[]}}),
            now,
        );
        assert_eq!(to_client(&a)[0]["id"], 7);
        // unknown tool
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"zzz"}}),
            now,
        );
        assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
        assert!(
            to_client(&a)[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("zzz")
        );
        // a cursor the gateway did not mint
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"cursor":"x"}}),
            now,
        );
        assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn forwarded_responses_pass_through_as_text_with_the_client_id() {
        let now = Instant::now();
        let mut r = router(1);
        init(&mut r, json!({"tools":{}}), now);
        let a = r.from_client(json!({"jsonrpc":"2.0","id":"L","method":"tools/list"}), now);
        let (_, l) = &to_child(&a)[0];
        // A list answer (a fan-out part) arrives raw and still merges.
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[{{"name":"t"}}]}}}}"#,
            l["id"]
        );
        let a = r.from_child_incoming(0, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
        assert_eq!(to_client(&a)[0]["result"]["tools"][0]["name"], "t");
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"t"}}),
            now,
        );
        let (_, call) = &to_child(&a)[0];
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"z":1, "a" : [ ]}}}}"#,
            call["id"]
        );
        let a = r.from_child_incoming(0, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
        let Action::ToClientRaw(bytes) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(
            std::str::from_utf8(bytes).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":\"c1\",\"result\":{\"z\":1, \"a\" : [ ]}}\n"
        );
        assert!(r.next_deadline().is_none());
        // A late duplicate is dropped.
        let a = r.from_child_incoming(0, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
        assert!(a.is_empty());
    }

    #[test]
    fn call_before_list_fetches_the_map_first() {
        let now = Instant::now();
        let mut r = router(1);
        init(&mut r, json!({"tools":{}}), now);
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}),
            now,
        );
        let (_, list) = &to_child(&a)[0];
        assert_eq!(list["method"], "tools/list");
        let a = r.from_child(
            0,
            json!({"jsonrpc":"2.0","id":list["id"],"result":{"tools":[{"name":"echo"}]}}),
            now,
        );
        let (_, call) = &to_child(&a)[0];
        assert_eq!(call["method"], "tools/call");
        assert!(to_client(&a).is_empty());
    }

    #[test]
    fn child_requests_get_fresh_ids_and_answers_go_back() {
        let now = Instant::now();
        let mut r = router(2);
        init(&mut r, json!({}), now);
        let a = r.from_child(1, json!({"jsonrpc":"2.0","id":"abc","method":"sampling/createMessage","params":{"_meta":{"progressToken":"t1"}}}), now);
        let m = &to_client(&a)[0];
        let gid = m["id"].clone();
        assert!(gid.is_u64());
        // client progress for that token goes to child 1 only
        let a = r.from_client(json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t1","progress":1}}), now);
        assert_eq!(to_child(&a)[0].0, 1);
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":gid,"result":{"role":"assistant"}}),
            now,
        );
        let (c, back) = &to_child(&a)[0];
        assert_eq!(*c, 1);
        assert_eq!(back["id"], "abc");
        // an unknown method is forwarded too: the client decides
        let a = r.from_child(
            0,
            json!({"jsonrpc":"2.0","id":5,"method":"future/thing"}),
            now,
        );
        assert_eq!(to_client(&a)[0]["method"], "future/thing");
    }

    #[test]
    fn cancellation_reaches_the_right_child_with_its_id() {
        let now = Instant::now();
        let mut r = router(2);
        init(&mut r, json!({"prompts":{}}), now);
        let a = r.from_client(json!({"jsonrpc":"2.0","id":1,"method":"prompts/list"}), now);
        for (i, m) in to_child(&a) {
            r.from_child(i, json!({"jsonrpc":"2.0","id":m["id"],"result":{"prompts":[{"name":format!("p{i}")}]}}), now);
        }
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":"x","method":"prompts/get","params":{"name":"p1"}}),
            now,
        );
        let (c, m) = to_child(&a)[0].clone();
        assert_eq!(c, 1);
        let a = r.from_client(
            json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}),
            now,
        );
        let (c2, n) = &to_child(&a)[0];
        assert_eq!(*c2, 1);
        assert_eq!(n["params"]["requestId"], m["id"]);
        // a late answer is dropped
        let a = r.from_child(1, json!({"jsonrpc":"2.0","id":m["id"],"result":{}}), now);
        assert!(to_client(&a).is_empty());
    }

    #[test]
    fn timeouts_fail_the_client_and_cancel_the_child_progress_extends() {
        let now = Instant::now();
        let mut r = router(1);
        init(&mut r, json!({"tools":{}}), now);
        let a = r.from_client(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}), now);
        let (_, l) = &to_child(&a)[0];
        r.from_child(
            0,
            json!({"jsonrpc":"2.0","id":l["id"],"result":{"tools":[{"name":"slow"}]}}),
            now,
        );
        let a = r.from_client(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","_meta":{"progressToken":9}}}), now);
        let (_, call) = &to_child(&a)[0];
        let t8 = now + Duration::from_secs(8);
        r.from_child(0, json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":9,"progress":1}}), t8);
        assert!(
            r.tick(now + Duration::from_secs(11)).is_empty(),
            "progress reset the deadline"
        );
        let a = r.tick(now + Duration::from_secs(19));
        let err = &to_client(&a)[0];
        assert_eq!(err["id"], 2);
        assert_eq!(err["error"]["code"], jsonrpc::REQUEST_TIMEOUT);
        let (_, cancel) = &to_child(&a)[0];
        assert_eq!(cancel["method"], "notifications/cancelled");
        assert_eq!(cancel["params"]["requestId"], call["id"]);
        assert!(r.next_deadline().is_none());
    }

    #[test]
    fn a_dead_child_fails_its_requests_and_the_rest_serve() {
        let now = Instant::now();
        let mut r = router(2);
        init(&mut r, json!({"tools":{}}), now);
        let a = r.from_client(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}), now);
        for (i, m) in to_child(&a) {
            r.from_child(
                i,
                json!({"jsonrpc":"2.0","id":m["id"],"result":{"tools":[{"name":format!("t{i}")}]}}),
                now,
            );
        }
        r.from_client(
            json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t0"}}),
            now,
        );
        let a = r.child_closed(0, now);
        let e = &to_client(&a)[0];
        assert_eq!(e["id"], 2);
        assert!(e["error"]["message"].as_str().unwrap().contains("s0"));
        let a = r.from_client(json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}), now);
        assert_eq!(to_child(&a).len(), 1);
    }

    #[test]
    fn init_failure_leaves_the_child_out_and_merges_capabilities() {
        let now = Instant::now();
        let mut r = router(2);
        let a = r.from_client(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2099-01-01"}}), now);
        let sent = to_child(&a);
        let a = r.from_child(
            0,
            json!({"jsonrpc":"2.0","id":sent[0].1["id"],"error":{"code":-1,"message":"boom"}}),
            now,
        );
        assert!(matches!(a[0], Action::ChildFailed(0, _)));
        let a = r.from_child(1, json!({"jsonrpc":"2.0","id":sent[1].1["id"],"result":{"capabilities":{"tools":{"listChanged":true},"tasks":{}},"instructions":"hi"}}), now);
        let reply = &to_client(&a)[0];
        assert_eq!(reply["result"]["protocolVersion"], SUPPORTED_VERSIONS[0]);
        assert_eq!(
            reply["result"]["capabilities"]["tools"]["listChanged"],
            true
        );
        assert!(reply["result"]["capabilities"].get("tasks").is_none());
        assert_eq!(reply["result"]["instructions"], "[s1] hi");
        assert_eq!(r.ready_children(), ["s1"]);
    }

    #[test]
    fn bad_input_gets_json_rpc_errors() {
        let now = Instant::now();
        let mut r = router(0);
        let a = r.from_client_line(b"{not json", now);
        assert_eq!(to_client(&a)[0]["error"]["code"], jsonrpc::PARSE_ERROR);
        let a = r.from_client_line(b"[1,2]", now);
        assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_REQUEST);
        let a = r.from_client_line(br#"{"id":1,"method":"ping"}"#, now);
        assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_REQUEST);
        let a = r.from_client_line(br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, now);
        assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_REQUEST);
        let a = r.from_client_line(br#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#, now);
        assert_eq!(to_client(&a)[0]["result"], json!({}));
        let a = r.from_client_line(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, now);
        assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_REQUEST);
        init(&mut r, json!({}), now);
        let a = r.from_client_line(
            br#"{"jsonrpc":"2.0","id":3,"method":"server/discover"}"#,
            now,
        );
        assert_eq!(to_client(&a)[0]["error"]["code"], METHOD_NOT_FOUND);
        let a = r.from_client_line(br#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#, now);
        assert_eq!(to_client(&a)[0]["result"]["tools"], json!([]));
    }

    #[test]
    fn resources_route_by_uri_and_templates() {
        let now = Instant::now();
        let mut r = router(2);
        init(&mut r, json!({"resources":{"subscribe":true}}), now);
        let a = r.from_client(json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"b://items/3"}}), now);
        // internal refresh of both resource lists on both children
        let sent = to_child(&a);
        assert_eq!(sent.len(), 4);
        let mut last = Vec::new();
        for (i, m) in sent {
            let result = match (i, m["method"].as_str().unwrap()) {
                (0, "resources/list") => json!({"resources":[{"uri":"a://x","name":"x"}]}),
                (1, "resources/list") => json!({"resources":[{"uri":"a://x","name":"dup"}]}),
                (1, _) => {
                    json!({"resourceTemplates":[{"uriTemplate":"b://items/{id}","name":"t"}]})
                }
                _ => json!({"resourceTemplates":[]}),
            };
            last = r.from_child(
                i,
                json!({"jsonrpc":"2.0","id":m["id"],"result":result}),
                now,
            );
        }
        let (c, m) = &to_child(&last)[0];
        assert_eq!((*c, m["method"].as_str()), (1, Some("resources/read")));
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"a://x"}}),
            now,
        );
        assert_eq!(to_child(&a)[0].0, 0);
        let a = r.from_client(json!({"jsonrpc":"2.0","id":3,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"b://items/{id}"},"argument":{"name":"id","value":""}}}), now);
        assert_eq!(to_child(&a)[0].0, 1);
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"zz://"}}),
            now,
        );
        assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
    }
}
