//! The aggregated MCP server of one session, as a sans-IO state machine.
//!
//! It takes a message from the client or from child N and returns
//! [`Action`]s (send to the client, send to child N, report child N
//! failed); the session loop does all I/O and calls [`Router::tick`] at
//! [`Router::next_deadline`]. Every rule is unit-tested without SSH or
//! processes (`tests.rs`).
//!
//! - `client.rs`: what the client sends: requests, notifications, answers.
//! - `child.rs`: what a child sends, its exit, and deadlines.
//! - `catalog.rs`: lists fanned out to the children, merged, and the name
//!   and URI maps that route calls back.
//! - `init.rs`: `initialize` and `logging/setLevel`, fanned out.
//! - `ids.rs`: every id in flight either way, and its progress token.
//! - `era.rs`: the client's MCP era, locked per connection, and the rules
//!   and stamps of 2026-07-28; `modern.rs` serves a modern client with them;
//!   `mrtr.rs` turns a legacy child's requests into `input_required`, and
//!   `drive.rs` a modern child's `input_required` into requests.
//! - `tasks.rs`: task ids, routed to the child that made the task.

mod audit;
mod catalog;
mod child;
mod client;
mod drive;
mod era;
mod ids;
mod init;
mod listen;
mod modern;
mod mrtr;
mod tasks;
#[cfg(test)]
mod tests;

use super::jsonrpc;
use super::names::{NameMap, UriMap};
use crate::keys::pattern::NameFilter;
use catalog::ListKind;
use ids::{IdTable, Pending};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use audit::{Outcome, Record};

/// The `reason` of the cancellation the router sends a child for a request
/// that ran past its timeout (a shared server counts these).
pub const TIMEOUT_REASON: &str = "timed out in the gateway";
pub use init::SUPPORTED_VERSIONS;
pub use listen::SUBSCRIPTION_ID;

/// What the session must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    ToClient(Value),
    /// A ready line for the client (a child's response passed through as text).
    ToClientRaw(Vec<u8>),
    ToChild(usize, Value),
    /// The child failed (start-up, initialize): log it and leave it out.
    ChildFailed(usize, String),
    /// A tracked request ended (only with [`Options::audit`]).
    Audit(Record),
    /// The child let three requests in a row run past their timeout:
    /// replace it.
    ChildHung(usize),
}

/// Per-child settings the router needs.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    pub name: String,
    pub timeout: Duration,
    /// Put before this server's tool and prompt names (`namePrefix`).
    pub prefix: String,
    /// The config's filters on the server's own tool and prompt names.
    pub tools: Option<NameFilter>,
    pub prompts: Option<NameFilter>,
}

impl ChildInfo {
    /// A server with no prefix and no filters.
    pub fn new(name: &str, timeout: Duration) -> ChildInfo {
        ChildInfo {
            name: name.to_owned(),
            timeout,
            prefix: String::new(),
            tools: None,
            prompts: None,
        }
    }

    /// Whether the config lets anyone see this server's item `name`.
    fn offers(&self, kind: ListKind, name: &str) -> bool {
        kind.named(&self.tools, &self.prompts)
            .is_none_or(|f| f.allows(name))
    }
}

/// Router-wide settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest a request may run in total, progress notwithstanding.
    pub max_total: Duration,
    pub server_name: String,
    pub server_version: String,
    /// Report how each `tools/call`, `prompts/get` and `resources/read`
    /// ends ([`Action::Audit`]).
    pub audit: bool,
}

/// A check on an exposed name.
pub type NameCheck = Box<dyn Fn(&str) -> bool + Send>;

/// Which exposed tool and prompt names this session may list and call (a
/// key's `MCP_TOOLS` / `MCP_PROMPTS`); None allows all. A name it refuses
/// is left out of lists and answered as unknown when called, byte for byte
/// as a name that does not exist.
#[derive(Default)]
pub struct Access {
    pub tools: Option<NameCheck>,
    pub prompts: Option<NameCheck>,
}

impl Access {
    fn allows(&self, kind: ListKind, name: &str) -> bool {
        kind.named(&self.tools, &self.prompts)
            .is_none_or(|c| c(name))
    }
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
    /// Its requests in a row that ran past their timeout.
    overdue: u32,
    /// It speaks 2026-07-28: no `initialize`, `_meta` on every request.
    modern: bool,
}

enum FanKind {
    Init,
    /// `initialize` again for a child that was restarted mid-session.
    Restart(usize),
    List(ListKind),
    SetLevel,
}

impl FanKind {
    fn is_init(&self) -> bool {
        matches!(self, FanKind::Init | FanKind::Restart(_))
    }
}

/// A request sent to several children whose answers are combined.
struct Fanout {
    kind: FanKind,
    /// The client request to answer; None for an internal refresh.
    reply_to: Option<Value>,
    waiting: usize,
    /// Per child, the items of a list.
    items: Vec<Vec<Value>>,
}

/// One session's aggregated server.
pub struct Router {
    children: Vec<Child>,
    opts: Options,
    access: Access,
    ids: IdTable,
    fanouts: HashMap<u64, Fanout>,
    tools: Option<NameMap>,
    prompts: Option<NameMap>,
    resources: Option<UriMap>,
    templates: Option<UriMap>,
    /// Internal refreshes in flight, so one is not started twice.
    refreshing: Vec<ListKind>,
    /// Client requests waiting for a name map or for initialize to finish.
    deferred: Vec<Value>,
    /// The client's `initialize` params, passed on to every child.
    init_params: Option<Value>,
    /// The tracked client request being routed (audit), until it is sent
    /// to a child or refused.
    opening: Option<audit::Open>,
    /// The length of the client line being handled, with its newline
    /// (audit's bytes in); taken by the first message it is read for.
    line_bytes: Option<usize>,
    /// The client's era and what a modern client needs.
    era: era::EraState,
    /// Calls of a modern client that a legacy child asked input for.
    mrtr: mrtr::Mrtr,
    /// Calls of a legacy client that a modern child asked input for.
    drives: drive::Drives,
    /// The task ids this connection may route (ERAS §3).
    tasks: tasks::Tasks,
    out: Vec<Action>,
}

impl Router {
    pub fn new(children: Vec<ChildInfo>, opts: Options, access: Access) -> Router {
        let era = era::EraState::new(&opts.server_name, &opts.server_version, children.len());
        Router {
            children: children
                .into_iter()
                .map(|info| Child {
                    info,
                    status: Status::Idle,
                    caps: Map::new(),
                    instructions: None,
                    overdue: 0,
                    modern: false,
                })
                .collect(),
            opts,
            access,
            ids: IdTable::default(),
            fanouts: HashMap::new(),
            tools: None,
            prompts: None,
            resources: None,
            templates: None,
            refreshing: Vec::new(),
            deferred: Vec::new(),
            init_params: None,
            opening: None,
            line_bytes: None,
            era,
            mrtr: mrtr::Mrtr::default(),
            drives: drive::Drives::default(),
            tasks: tasks::Tasks::default(),
            out: Vec::new(),
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

    /// Child `child` speaks 2026-07-28 (its `server/discover` result): it
    /// is ready at once, with no `initialize`.
    pub fn child_modern(&mut self, child: usize, discover: &Value) {
        let c = &mut self.children[child];
        c.modern = true;
        c.status = Status::Ready;
        c.caps = discover
            .get("capabilities")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        c.instructions = discover
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }

    /// When the session should call [`Router::tick`] next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let runs = self.drives.next_deadline();
        self.ids.next_deadline().into_iter().chain(runs).min()
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    fn reply(&mut self, id: Value, mut result: Value) {
        if self.era.modern() {
            self.era.stamp(&mut result, false);
        }
        self.out.push(Action::ToClient(jsonrpc::result(id, result)));
    }

    fn fail(&mut self, id: Value, code: i64, msg: impl Into<String>) {
        let mut v = jsonrpc::error(id, code, msg);
        if self.era.modern()
            && let (code, Some(reason)) = era::modern_code(code)
        {
            v["error"]["code"] = json!(code);
            v["error"]["data"] = json!({ "reason": reason });
        }
        self.out.push(Action::ToClient(v));
    }

    /// Answers a client request with an error; a tracked one is recorded
    /// as refused by the gateway.
    fn refuse(
        &mut self,
        id: Value,
        code: i64,
        msg: impl Into<String>,
        outcome: Outcome,
        now: Instant,
    ) {
        self.fail(id, code, msg);
        if let Some(open) = self.opening.take() {
            let bytes = match self.out.last() {
                Some(Action::ToClient(v)) => serde_json::to_vec(v).map_or(0, |b| b.len() + 1),
                _ => 0,
            };
            self.out
                .push(Action::Audit(open.end(None, outcome, bytes, now)));
        }
    }

    /// Records the end of a forwarded request that was tracked.
    fn record(
        &mut self,
        open: Option<Box<audit::Open>>,
        child: usize,
        outcome: Outcome,
        bytes_out: usize,
        now: Instant,
    ) {
        if let Some(open) = open {
            let server = Some(self.children[child].info.name.as_str());
            let r = open.end(server, outcome, bytes_out, now);
            self.out.push(Action::Audit(r));
        }
    }

    fn ready(&self) -> Vec<usize> {
        (0..self.children.len())
            .filter(|&i| self.children[i].status == Status::Ready)
            .collect()
    }

    /// Sends one child's part of fan-out `fanout` (`method` with `params`).
    fn send_part(
        &mut self,
        child: usize,
        fanout: u64,
        pages: usize,
        method: &str,
        params: Value,
        now: Instant,
    ) {
        let part = Pending::Part {
            child,
            fanout,
            pages,
        };
        let mut params = params;
        if self.children[child].modern {
            era::add_meta(&mut params, self.era.client_meta());
        }
        let id = self
            .ids
            .insert(part, self.children[child].info.timeout, now);
        self.out.push(Action::ToChild(
            child,
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        ));
    }

    /// Starts a fan-out to `targets` and returns its id; the caller sends
    /// the parts, then calls [`Router::maybe_finish`].
    fn fan_out(&mut self, kind: FanKind, reply_to: Option<Value>, targets: usize) -> u64 {
        let fid = self.ids.fresh();
        let items = vec![Vec::new(); self.children.len()];
        self.fanouts.insert(
            fid,
            Fanout {
                kind,
                reply_to,
                waiting: targets,
                items,
            },
        );
        fid
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
                } else {
                    self.initialized_for_modern();
                }
                self.open_child_listens();
            }
            FanKind::Restart(child) => self.restarted(child),
            FanKind::SetLevel => {
                if let Some(id) = f.reply_to {
                    self.reply(id, json!({}));
                }
            }
            FanKind::List(kind) => {
                let merged = self.merge(kind, f.items);
                self.refreshing.retain(|k| *k != kind);
                if let Some(id) = f.reply_to {
                    let mut r = json!({ kind.field(): merged });
                    if self.era.modern() {
                        self.era.stamp(&mut r, true);
                    }
                    self.reply(id, r);
                }
            }
        }
        // Retry requests that waited for initialize or for a name map.
        if !self.initializing() {
            for m in std::mem::take(&mut self.deferred) {
                self.client_message(m, now);
            }
        }
    }

    /// Keeps a client request until initialize or a name map is done. A
    /// modern request whose `_meta` was left out as cached gets it back:
    /// it is checked again when it is retried.
    fn defer(&mut self, mut msg: Value) {
        if self.era.modern() {
            self.restore_meta(&mut msg);
        }
        self.deferred.push(msg);
    }

    /// Puts the kept `_meta` back into a message of a line whose `_meta`
    /// text was the kept one ([`era::LineMeta::Cached`]).
    fn restore_meta(&self, msg: &mut Value) {
        if let Some(c) = &self.era.meta_cache
            && let Some(p) = msg.get_mut("params").and_then(Value::as_object_mut)
            && !p.contains_key("_meta")
        {
            p.insert("_meta".into(), Value::Object(c.map.clone()));
        }
    }

    fn initializing(&self) -> bool {
        self.fanouts
            .values()
            .any(|f| matches!(f.kind, FanKind::Init))
    }
}
