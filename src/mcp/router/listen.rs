//! `subscriptions/listen` for a 2026-07-28 client (ERAS §1.5, §4 column
//! A): each stream is acknowledged with what the gateway honours, then
//! gets the list changes it asked for and the updates of the resources it
//! named, each tagged with the stream's id, until the client cancels it.
//! A resource of a legacy child that supports subscriptions is subscribed
//! there (`resources/subscribe`) while at least one stream names it.
//! Resources of 2026-07-28 children are not served on streams yet: the
//! acknowledgement leaves them out.

use super::catalog::ListKind;
use super::era::Listen;
use super::{Action, Router, Status, tasks};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::{self, INVALID_PARAMS, INVALID_REQUEST};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::time::Instant;

/// The `_meta` key that ties a notification to its `subscriptions/listen` stream.
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Open `subscriptions/listen` streams per connection: each list change
/// is sent once per stream that asked for it.
pub const MAX_STREAMS: usize = 32;
/// Resources one stream may name (each may subscribe at a child).
pub const MAX_STREAM_URIS: usize = 256;
/// Child listens a legacy client's `resources/subscribe` may open on
/// modern children, per connection.
pub const MAX_CHILD_SUBS: usize = 256;

/// The listen filter flags, in [`Listen::lists`] order.
const LIST_FLAGS: [(&str, &str); 3] = [
    ("toolsListChanged", "notifications/tools/list_changed"),
    ("promptsListChanged", "notifications/prompts/list_changed"),
    (
        "resourcesListChanged",
        "notifications/resources/list_changed",
    ),
];

impl Router {
    /// Opens the gateway's own session-long listen on each ready modern
    /// child that announces list changes: 2026-07-28 servers push them
    /// only on a listen. They reach a legacy client as before, and a
    /// modern one on its streams.
    pub(super) fn open_child_listens(&mut self) {
        for i in self.ready() {
            let c = &self.children[i];
            if !c.modern || self.era.child_listen[i].is_some() {
                continue;
            }
            let mut filter = Map::new();
            for (flag, cap) in [
                ("toolsListChanged", "tools"),
                ("promptsListChanged", "prompts"),
                ("resourcesListChanged", "resources"),
            ] {
                let changes = c.caps.get(cap).and_then(|v| v.get("listChanged"));
                if changes == Some(&Value::Bool(true)) {
                    filter.insert(flag.into(), Value::Bool(true));
                }
            }
            if filter.is_empty() {
                continue;
            }
            let id = self.child_listen(i, Value::Object(filter));
            self.era.child_listen[i] = Some(id);
        }
    }

    /// Sends a listen to modern child `child` under a fresh id that no
    /// deadline applies to (a listen has no answer until it ends).
    fn child_listen(&mut self, child: usize, filter: Value) -> u64 {
        let id = self.ids.fresh();
        let mut params = json!({ "notifications": filter });
        super::era::add_meta(&mut params, self.era.client_meta());
        self.out.push(Action::ToChild(
            child,
            json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": params}),
        ));
        id
    }

    /// A legacy client's `resources/subscribe` or `resources/unsubscribe`
    /// for a modern child, which has neither: a child listen naming the
    /// URI is opened, or cancelled; answered `{}` at once.
    pub(super) fn subscribe_modern(&mut self, child: usize, id: Value, msg: &Value) {
        let uri = msg.at("/params/uri").and_then(Value::as_str).unwrap_or("");
        let key = (child, uri.to_owned());
        let subscribe = msg.get("method").and_then(Value::as_str) == Some("resources/subscribe");
        match (subscribe, self.era.child_subs.get(&key).copied()) {
            (true, None) if self.era.child_subs.len() >= MAX_CHILD_SUBS => {
                let why = format!(
                    "resources/subscribe: at most {MAX_CHILD_SUBS} resources of 2026-07-28 servers may be subscribed on a connection"
                );
                return self.fail(id, INVALID_PARAMS, why);
            }
            (true, None) => {
                let lid = self.child_listen(child, json!({"resourceSubscriptions": [uri]}));
                self.era.child_subs.insert(key, lid);
            }
            (false, Some(lid)) => {
                self.era.child_subs.remove(&key);
                self.out.push(Action::ToChild(
                    child,
                    json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                           "params": {"requestId": lid}}),
                ));
            }
            _ => {}
        }
        self.reply(id, json!({}));
    }

    /// Opens a stream: acknowledged at once with the honoured subset.
    /// `declares_tasks`: the request declared the tasks extension, which
    /// `taskIds` needs.
    pub(super) fn listen(&mut self, id: Value, msg: &Value, declares_tasks: bool, now: Instant) {
        let refuse = |r: &mut Router, code: i64, why: &str| {
            let e = jsonrpc::error(id.clone(), code, format!("subscriptions/listen: {why}"));
            r.out.push(Action::ToClient(e));
        };
        if self.era.listens.iter().any(|l| l.id == id) {
            return refuse(
                self,
                INVALID_REQUEST,
                "a stream with this id is already open",
            );
        }
        if self.era.listens.len() >= MAX_STREAMS {
            let why = format!("at most {MAX_STREAMS} streams may be open on a connection");
            return refuse(self, INVALID_PARAMS, &why);
        }
        let filter = msg.at("/params/notifications");
        if filter.is_some_and(|f| !f.is_object()) {
            return refuse(
                self,
                INVALID_PARAMS,
                "params.notifications must be an object",
            );
        }
        let strings = |key: &str| match filter.and_then(|f| f.get(key)) {
            None => Ok(Vec::new()),
            Some(Value::Array(a))
                if a.iter().all(Value::is_string) && a.len() <= MAX_STREAM_URIS =>
            {
                Ok(a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect())
            }
            Some(_) => Err(format!(
                "notifications.{key} must be an array of at most {MAX_STREAM_URIS} strings"
            )),
        };
        let (uris, task_ids) = match (strings("resourceSubscriptions"), strings("taskIds")) {
            (Ok(u), Ok(t)) => (u, t),
            (Err(why), _) | (_, Err(why)) => return refuse(self, INVALID_PARAMS, &why),
        };
        if !task_ids.is_empty() && !declares_tasks {
            // The extension's rule: a MUST for a client that did not declare it.
            let e = tasks::undeclared("subscriptions/listen (notifications.taskIds)");
            return self.out.push(Action::ToClient(e.response(id)));
        }
        if !uris.is_empty() && self.need_maps(&[ListKind::Resources, ListKind::Templates], msg, now)
        {
            return; // opened again once the resource maps exist
        }
        let mut lists = [false; 3];
        let mut honoured = Map::new();
        for (i, (flag, _)) in LIST_FLAGS.iter().enumerate() {
            if filter.and_then(|f| f.get(flag)).and_then(Value::as_bool) == Some(true) {
                lists[i] = true;
                honoured.insert((*flag).into(), Value::Bool(true));
            }
        }
        let mut subs = Vec::new();
        let mut seen = HashSet::new();
        for uri in uris {
            let child = self
                .resources
                .as_ref()
                .and_then(|r| r.route(&uri))
                .or_else(|| self.templates.as_ref().and_then(|t| t.route(&uri)));
            let Some(child) = child.filter(|&c| self.can_subscribe(c) || self.can_listen(c)) else {
                continue;
            };
            if !seen.insert(uri.clone()) {
                continue; // a URI routes to one child
            }
            if self.children[child].modern {
                // A modern child: one child listen per resource, shared by
                // the streams that name it (its updates come back through
                // `resource_updated`, tagged with each stream's id).
                let key = (child, uri.clone());
                if !self.era.child_subs.contains_key(&key) {
                    if self.era.child_subs.len() >= MAX_CHILD_SUBS {
                        continue; // not honoured: the acknowledgement leaves it out
                    }
                    let lid = self.child_listen(child, json!({"resourceSubscriptions": [uri]}));
                    self.era.child_subs.insert(key, lid);
                }
            } else if !self.era.subscribed(child, &uri) {
                let sid = self.ids.fresh(); // its answer is dropped as unknown
                self.out.push(Action::ToChild(
                    child,
                    json!({"jsonrpc": "2.0", "id": sid, "method": "resources/subscribe",
                           "params": {"uri": uri}}),
                ));
            }
            subs.push((child, uri));
        }
        if !subs.is_empty() {
            let list = subs.iter().map(|(_, u)| json!(u)).collect();
            honoured.insert("resourceSubscriptions".into(), Value::Array(list));
        }
        let (task_list, followed) = self.follow_tasks(task_ids);
        if !task_list.is_empty() {
            honoured.insert("taskIds".into(), Value::Array(task_list));
        }
        self.out.push(Action::ToClient(json!({
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {SUBSCRIPTION_ID: id}, "notifications": honoured},
        })));
        self.era.listens.push(Listen {
            id,
            lists,
            subs,
            tasks: followed,
        });
    }

    /// A stream's `taskIds` (gateway ids): each one this connection saw a
    /// ready modern child create is followed through one child listen,
    /// shared by the streams naming it. Returns the honoured ids and
    /// (child, the child's id) for each.
    fn follow_tasks(&mut self, gids: Vec<String>) -> (Vec<Value>, Vec<(usize, String)>) {
        let (mut honoured, mut followed) = (Vec::new(), Vec::new());
        for gid in gids {
            let Some((child, tid)) = self.tasks.route(&gid) else {
                continue; // unknown, or another era's: not honoured
            };
            let c = &self.children[child];
            if !c.modern || c.status != Status::Ready || followed.contains(&(child, tid.clone())) {
                continue;
            }
            let key = (child, tid.clone());
            if !self.era.child_tasks.contains_key(&key) {
                if self.era.child_tasks.len() >= MAX_CHILD_SUBS {
                    continue;
                }
                let lid = self.child_listen(child, json!({"taskIds": [tid]}));
                self.era.child_tasks.insert(key, lid);
            }
            honoured.push(Value::String(gid));
            followed.push((child, tid));
        }
        (honoured, followed)
    }

    /// A modern child's `notifications/tasks`: to each stream that named
    /// the task, with the gateway's task id and the stream's id.
    pub(super) fn task_status(&mut self, child: usize, msg: Value) {
        let Some(tid) = msg.at("/params/taskId").and_then(Value::as_str) else {
            return;
        };
        let gid = tasks::gateway_id(child, tid);
        for l in &self.era.listens {
            if l.tasks.iter().any(|(c, t)| *c == child && t == tid) {
                let mut n = msg.clone();
                n["params"]["taskId"] = Value::String(gid.clone());
                // The final result's related-task `_meta`, as in `tasks/get`.
                tasks::rewrite_related(n["params"].get_mut("result"), child);
                n["params"]["_meta"] = json!({SUBSCRIPTION_ID: l.id});
                self.out.push(Action::ToClient(n));
            }
        }
    }

    /// A restarted legacy child: the resources open streams name are
    /// subscribed there again.
    pub(super) fn resubscribe(&mut self, child: usize) {
        let streams = self.era.listens.iter().flat_map(|l| l.subs.iter());
        let mut uris: Vec<String> = streams
            .chain(self.era.client_subs.iter())
            .filter(|(c, _)| *c == child)
            .map(|(_, u)| u.clone())
            .collect();
        uris.sort();
        uris.dedup();
        for uri in uris {
            let id = self.ids.fresh();
            self.out.push(Action::ToChild(
                child,
                json!({"jsonrpc": "2.0", "id": id, "method": "resources/subscribe",
                       "params": {"uri": uri}}),
            ));
        }
    }

    /// A restarted modern child: each child listen that followed one of
    /// its resources is opened again (for streams and for a legacy
    /// client's subscriptions alike).
    pub(super) fn relisten(&mut self, child: usize) {
        let mut uris: Vec<String> = self
            .era
            .child_subs
            .keys()
            .filter(|(c, _)| *c == child)
            .map(|(_, u)| u.clone())
            .collect();
        uris.sort(); // the same order every time, for the tests
        for uri in uris {
            let lid = self.child_listen(child, json!({"resourceSubscriptions": [uri]}));
            self.era.child_subs.insert((child, uri), lid);
        }
    }

    /// A modern child that announced `resources.subscribe`: a stream's
    /// resources of it are followed through a child listen.
    fn can_listen(&self, child: usize) -> bool {
        let c = &self.children[child];
        let subscribe = c.caps.get("resources").and_then(|r| r.get("subscribe"));
        c.modern && subscribe == Some(&Value::Bool(true))
    }

    /// A legacy child that announced `resources.subscribe`.
    fn can_subscribe(&self, child: usize) -> bool {
        let c = &self.children[child];
        let subscribe = c.caps.get("resources").and_then(|r| r.get("subscribe"));
        !c.modern && subscribe == Some(&Value::Bool(true))
    }

    /// The client cancelled request `rid`: true if it was a stream (now
    /// closed; a cancelled request gets no answer). Resources no other
    /// stream names are unsubscribed at their child.
    pub(super) fn end_listen(&mut self, rid: &Value) -> bool {
        let Some(at) = self.era.listens.iter().position(|l| &l.id == rid) else {
            return false;
        };
        let l = self.era.listens.remove(at);
        for (child, tid) in l.tasks {
            let still = self
                .era
                .listens
                .iter()
                .any(|o| o.tasks.contains(&(child, tid.clone())));
            if !still && let Some(lid) = self.era.child_tasks.remove(&(child, tid)) {
                self.out.push(Action::ToChild(
                    child,
                    json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                           "params": {"requestId": lid}}),
                ));
            }
        }
        for (child, uri) in l.subs {
            if self.children[child].modern {
                if !self.era.subscribed(child, &uri)
                    && let Some(lid) = self.era.child_subs.remove(&(child, uri))
                {
                    self.out.push(Action::ToChild(
                        child,
                        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                               "params": {"requestId": lid}}),
                    ));
                }
            } else if !self.era.subscribed(child, &uri) {
                let id = self.ids.fresh();
                self.out.push(Action::ToChild(
                    child,
                    json!({"jsonrpc": "2.0", "id": id, "method": "resources/unsubscribe",
                           "params": {"uri": uri}}),
                ));
            }
        }
        true
    }

    /// Tells the client a list changed: a legacy client directly, a modern
    /// one on each stream that asked for it.
    pub(super) fn tell_list_changed(&mut self, kind: ListKind) {
        let (at, method) = match kind {
            ListKind::Tools => (0, LIST_FLAGS[0].1),
            ListKind::Prompts => (1, LIST_FLAGS[1].1),
            ListKind::Resources | ListKind::Templates => (2, LIST_FLAGS[2].1),
            ListKind::Tasks => return, // never announced
        };
        if !self.era.modern() {
            let n = json!({"jsonrpc": "2.0", "method": method});
            return self.out.push(Action::ToClient(n));
        }
        for l in self.era.listens.iter().filter(|l| l.lists[at]) {
            self.out.push(Action::ToClient(json!({
                "jsonrpc": "2.0", "method": method,
                "params": {"_meta": {SUBSCRIPTION_ID: l.id}},
            })));
        }
    }

    /// A child's resource changed: to each stream that named it (or a
    /// resource it is a sub-resource of: ERAS §5.16).
    pub(super) fn resource_updated(&mut self, child: usize, msg: Value) {
        let Some(uri) = msg.at("/params/uri").and_then(Value::as_str) else {
            return;
        };
        for l in &self.era.listens {
            let named = l.subs.iter().any(|(c, u)| *c == child && names(u, uri));
            if named {
                let mut n = msg.clone();
                n["params"]["_meta"] = json!({SUBSCRIPTION_ID: l.id});
                self.out.push(Action::ToClient(n));
            }
        }
    }
}

/// Whether a stream that named `named` gets an update of `uri`: the same
/// resource, or one under it (a prefix ending at `/`, `?` or `#`), so
/// `file:///a` does not get `file:///ab`.
pub(super) fn names(named: &str, uri: &str) -> bool {
    uri.strip_prefix(named).is_some_and(|rest| {
        rest.is_empty() || named.ends_with('/') || rest.starts_with(['/', '?', '#'])
    })
}
