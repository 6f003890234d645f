//! Tasks (ERAS §3): the 2025-11-25 tasks between a legacy client and its
//! legacy children, and the `io.modelcontextprotocol/tasks` extension
//! between a modern client and its modern children. Tasks never cross eras:
//! each era's capability is advertised only to clients of that era.
//!
//! A child's task id `X` reaches the client as `"<child>~X"`, so two
//! children that both say "1" do not collide. Only ids seen in a
//! task-creating result are routable (a bounded table per connection); the
//! rewrite back applies to `tasks/get|result|cancel|update`.

use super::audit::Outcome;
use super::era::Refusal;
use super::{Router, Status};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::INVALID_PARAMS;
use serde_json::{Map, Value, json};
use std::collections::{HashSet, VecDeque};
use std::time::Instant;

/// The related-task `_meta` key of the 2025 tasks.
pub const RELATED: &str = "io.modelcontextprotocol/related-task";
/// The 2026-07-28 tasks extension.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";
/// Most task ids remembered per connection; the oldest is forgotten first.
const MAX_TASKS: usize = 4096;

/// The task ids this connection may route: gateway ids, oldest first.
#[derive(Default)]
pub struct Tasks {
    known: HashSet<String>,
    order: VecDeque<String>,
}

impl Tasks {
    fn record(&mut self, gid: &str) {
        if !self.known.insert(gid.to_owned()) {
            return;
        }
        self.order.push_back(gid.to_owned());
        if self.order.len() > MAX_TASKS
            && let Some(old) = self.order.pop_front()
        {
            self.known.remove(&old);
        }
    }

    /// Child `child` ended: its tasks died with it, and a restarted
    /// process counts its ids anew.
    pub fn forget_child(&mut self, child: usize) {
        let prefix = gateway_id(child, "");
        self.known.retain(|g| !g.starts_with(&prefix));
        self.order.retain(|g| !g.starts_with(&prefix));
    }

    /// The child and its own id for gateway id `gid`, if it was recorded.
    pub fn route(&self, gid: &str) -> Option<(usize, String)> {
        if !self.known.contains(gid) {
            return None;
        }
        let (child, id) = gid.split_once('~')?;
        Some((child.parse().ok()?, id.to_owned()))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.known.len()
    }
}

/// The id the client sees for `child`'s task `id`.
pub fn gateway_id(child: usize, id: &str) -> String {
    format!("{child}~{id}")
}

/// Whether `method` is a task method the client of this era may call.
pub fn is_task_method(method: &str, modern: bool) -> bool {
    if modern {
        matches!(method, "tasks/get" | "tasks/update" | "tasks/cancel")
    } else {
        matches!(method, "tasks/get" | "tasks/result" | "tasks/cancel")
    }
}

/// A modern `tasks/*` whose request did not declare the extension (-32021).
pub fn undeclared(method: &str) -> Refusal {
    Refusal {
        code: super::drive::MISSING_CAPABILITY,
        message: format!(
            "{method}: the request's clientCapabilities do not declare the {EXTENSION} extension"
        ),
        data: Some(json!({"requiredCapabilities": {"extensions": {EXTENSION: {}}}})),
    }
}

/// Rewrites the string at `slot` (a child's task id) to the gateway's.
fn rewrite(slot: Option<&mut Value>, child: usize) -> Option<String> {
    let slot = slot?;
    let id = slot.as_str()?;
    let gid = gateway_id(child, id);
    *slot = Value::String(gid.clone());
    Some(gid)
}

/// Rewrites the related-task `_meta` of a message's params or result.
pub(super) fn rewrite_related(obj: Option<&mut Value>, child: usize) {
    if let Some(rel) = obj
        .and_then(|o| o.get_mut("_meta"))
        .and_then(|m| m.get_mut(RELATED))
    {
        rewrite(rel.get_mut("taskId"), child);
    }
}

/// Unions `src` into `dst`, objects key by key (capability sets).
pub fn union(dst: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => union(d, s),
            (Some(_), _) => {}
            (None, v) => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Router {
    /// `tasks/get|result|cancel|update` from the client: to the child
    /// that created the task, with the child's own id.
    pub(super) fn route_task(&mut self, method: &str, id: Value, mut msg: Value, now: Instant) {
        let Some(gid) = msg.at("/params/taskId").and_then(Value::as_str) else {
            let why = format!("{method}: missing params.taskId");
            return self.refuse(id, INVALID_PARAMS, why, Outcome::Error(INVALID_PARAMS), now);
        };
        let Some((child, orig)) = self
            .tasks
            .route(gid)
            .filter(|(c, _)| *c < self.children.len())
        else {
            let why = format!("{method}: unknown task: {gid}");
            return self.refuse(id, INVALID_PARAMS, why, Outcome::Error(INVALID_PARAMS), now);
        };
        if self.children[child].status == Status::Ready {
            msg["params"]["taskId"] = Value::String(orig);
        }
        self.forward(child, id, msg, now);
    }

    /// A child's result for the client: its task ids become gateway ids,
    /// and a task it just created is recorded (legacy `task.taskId`,
    /// modern `resultType:"task"` with `taskId`).
    pub(super) fn task_ids_from_child(&mut self, child: usize, msg: &mut Value) {
        let Some(r) = msg.get_mut("result").filter(|r| r.is_object()) else {
            return;
        };
        let modern_task = r.get("resultType").and_then(Value::as_str) == Some("task");
        if let Some(gid) = rewrite(r.at_mut("/task/taskId"), child) {
            self.tasks.record(&gid);
        }
        if let Some(gid) = rewrite(r.get_mut("taskId"), child)
            && modern_task
        {
            self.tasks.record(&gid);
        }
        if let Some(list) = r.get_mut("tasks").and_then(Value::as_array_mut) {
            for t in list {
                rewrite(t.get_mut("taskId"), child);
            }
        }
        rewrite_related(Some(r), child);
    }

    /// A child's request or notification for the client: the task ids of
    /// `notifications/tasks/status` and of the related-task `_meta`.
    pub(super) fn task_ids_in_params(child: usize, method: &str, msg: &mut Value) {
        let params = msg.get_mut("params");
        if let Some(p) = params {
            if method.starts_with("notifications/tasks") {
                rewrite(p.get_mut("taskId"), child);
            }
            rewrite_related(Some(p), child);
        }
    }

    /// Whether a legacy child serves the 2025 tasks' `tasks/list`.
    pub(super) fn lists_tasks(&self, child: usize) -> bool {
        let c = &self.children[child];
        !c.modern && c.caps.get("tasks").and_then(|t| t.get("list")).is_some()
    }

    /// The legacy children's `tasks` capabilities, unioned, for a legacy client.
    pub(super) fn legacy_task_caps(&self) -> Option<Value> {
        let mut caps = Map::new();
        for c in self.children.iter() {
            if c.status == Status::Ready
                && !c.modern
                && let Some(t) = c.caps.get("tasks").and_then(Value::as_object)
            {
                union(&mut caps, t);
            }
        }
        (!caps.is_empty()).then_some(Value::Object(caps))
    }
}
