//! The merged catalog: tools, prompts, resources and templates fanned out
//! to every child that has the capability, each child's pages followed to
//! the end, merged in config order with unique names, and the maps that
//! route a call by name or URI back to its child.

use super::audit::Outcome;
use super::{FanKind, NameMap, Router, UriMap};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::INVALID_PARAMS;
use serde_json::{Value, json};
use std::time::Instant;

/// Most child pages followed for one list before giving up on that child.
const MAX_PAGES: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
    /// The 2025 tasks of the legacy children that list them.
    Tasks,
}

impl ListKind {
    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
            ListKind::Tasks => "tasks/list",
        }
    }

    pub fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
            ListKind::Tasks => "tasks",
        }
    }

    fn capability(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::Templates => "resources",
            ListKind::Tasks => "tasks",
        }
    }

    /// What one item is called in an error message.
    fn item(self) -> &'static str {
        match self {
            ListKind::Tools => "tool",
            ListKind::Prompts => "prompt",
            ListKind::Resources => "resource",
            ListKind::Templates => "resource template",
            ListKind::Tasks => "task",
        }
    }

    /// The one of a tools/prompts pair that applies to this kind; None for
    /// resources and templates, which are routed by URI, not name.
    pub fn named<'a, T>(self, tools: &'a Option<T>, prompts: &'a Option<T>) -> Option<&'a T> {
        match self {
            ListKind::Tools => tools.as_ref(),
            ListKind::Prompts => prompts.as_ref(),
            ListKind::Resources | ListKind::Templates | ListKind::Tasks => None,
        }
    }

    pub fn from_method(m: &str) -> Option<ListKind> {
        Some(match m {
            "tools/list" => ListKind::Tools,
            "prompts/list" => ListKind::Prompts,
            "resources/list" => ListKind::Resources,
            "resources/templates/list" => ListKind::Templates,
            "tasks/list" => ListKind::Tasks,
            _ => return None,
        })
    }
}

impl Router {
    /// Asks every ready child with the capability for its list; the merged
    /// list answers `reply_to`, or only rebuilds the map when None.
    pub(super) fn start_list(&mut self, kind: ListKind, reply_to: Option<Value>, now: Instant) {
        let targets: Vec<usize> = self
            .ready()
            .into_iter()
            .filter(|&i| {
                if kind == ListKind::Tasks {
                    self.lists_tasks(i)
                } else {
                    self.children[i].caps.contains_key(kind.capability())
                }
            })
            .collect();
        if reply_to.is_none() {
            self.refreshing.push(kind);
        }
        let fid = self.fan_out(FanKind::List(kind), reply_to, targets.len());
        for i in targets {
            self.send_part(i, fid, 0, kind.method(), json!({}), now);
        }
        self.maybe_finish(fid, now);
    }

    /// One page of a child's list: keep its items, follow its cursor.
    pub(super) fn list_page(
        &mut self,
        child: usize,
        fid: u64,
        kind: ListKind,
        pages: usize,
        msg: &Value,
        now: Instant,
    ) {
        let name = &self.children[child].info.name;
        let result = msg.get("result");
        let Some(f) = self.fanouts.get_mut(&fid) else {
            return;
        };
        match result
            .and_then(|r| r.get(kind.field()))
            .and_then(Value::as_array)
        {
            Some(items) => f.items[child].extend(items.iter().cloned()),
            None => log::warn!(
                "[{name}] {} failed: {}",
                kind.method(),
                msg.get("error").unwrap_or(&Value::Null)
            ),
        }
        let next = result
            .and_then(|r| r.get("nextCursor"))
            .filter(|c| c.as_str().is_some_and(|s| !s.is_empty()))
            .cloned();
        match next {
            Some(c) if pages + 1 < MAX_PAGES => {
                let params = json!({ "cursor": c });
                return self.send_part(child, fid, pages + 1, kind.method(), params, now);
            }
            Some(_) => log::warn!(
                "[{name}] {} has over {MAX_PAGES} pages; truncated",
                kind.method()
            ),
            None => {}
        }
        f.waiting -= 1;
    }

    /// Merges per-child items in config order and rebuilds the route map.
    pub(super) fn merge(&mut self, kind: ListKind, items: Vec<Vec<Value>>) -> Vec<Value> {
        let mut out = Vec::new();
        match kind {
            ListKind::Tools | ListKind::Prompts => {
                let mut map = NameMap::default();
                for (child, list) in items.into_iter().enumerate() {
                    for mut item in list {
                        let Some(name) = item.get("name").and_then(Value::as_str) else {
                            continue;
                        };
                        if !self.children[child].info.offers(kind, name) {
                            continue; // filtered in the config: never named, never routed
                        }
                        let exposed =
                            map.insert_prefixed(child, &self.children[child].info.prefix, name);
                        if self.access.allows(kind, &exposed) {
                            item["name"] = Value::String(exposed);
                            out.push(item);
                        }
                    }
                }
                *self.name_map(kind) = Some(map);
            }
            ListKind::Tasks => {
                for (child, list) in items.into_iter().enumerate() {
                    for mut t in list {
                        if let Some(id) = t.get("taskId").and_then(Value::as_str) {
                            t["taskId"] = Value::String(super::tasks::gateway_id(child, id));
                            out.push(t);
                        }
                    }
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

    fn name_map(&mut self, kind: ListKind) -> &mut Option<NameMap> {
        if kind == ListKind::Tools {
            &mut self.tools
        } else {
            &mut self.prompts
        }
    }

    fn map_ready(&self, kind: ListKind) -> bool {
        match kind {
            ListKind::Tools => self.tools.is_some(),
            ListKind::Prompts => self.prompts.is_some(),
            ListKind::Resources => self.resources.is_some(),
            ListKind::Templates => self.templates.is_some(),
            ListKind::Tasks => true,
        }
    }

    /// A child's list changed: its map is rebuilt on the next call.
    pub(super) fn forget_map(&mut self, kind: ListKind) {
        match kind {
            ListKind::Tools => self.tools = None,
            ListKind::Prompts => self.prompts = None,
            ListKind::Resources => self.resources = None,
            ListKind::Templates => self.templates = None,
            ListKind::Tasks => {}
        }
    }

    /// Defers `msg` until the maps in `kinds` exist; true if deferred.
    pub(super) fn need_maps(&mut self, kinds: &[ListKind], msg: &Value, now: Instant) -> bool {
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
        self.defer(msg.clone());
        true
    }

    /// Routes by the exposed name at JSON pointer `at` (`/params/name`, or
    /// `/params/ref/name` for completions) and puts the child's own name there.
    pub(super) fn route_named(
        &mut self,
        kind: ListKind,
        at: &str,
        id: Value,
        mut msg: Value,
        now: Instant,
    ) {
        if self.need_maps(&[kind], &msg, now) {
            return;
        }
        let what = kind.item();
        let Some(name) = msg.at(at).and_then(Value::as_str) else {
            let field = at.trim_start_matches('/').replace('/', ".");
            let why = format!("missing {field} for the {what}");
            return self.refuse(id, INVALID_PARAMS, why, Outcome::Error(INVALID_PARAMS), now);
        };
        let allowed = self.access.allows(kind, name);
        let found = self.name_map(kind).as_ref().and_then(|m| m.get(name));
        let Some((child, orig)) = found.filter(|_| allowed) else {
            // A name the key may not use reads as an unknown one; only the
            // audit log tells them apart.
            let outcome = if allowed {
                Outcome::Error(INVALID_PARAMS)
            } else {
                Outcome::Denied
            };
            let why = format!("unknown {what}: {name}");
            return self.refuse(id, INVALID_PARAMS, why, outcome, now);
        };
        let orig = Value::String(orig.to_owned());
        if let Some(slot) = msg.at_mut(at) {
            *slot = orig;
        }
        self.forward(child, id, msg, now);
    }

    /// Routes by URI: an exact resource first, then the templates.
    pub(super) fn route_uri(&mut self, uri: &str, id: Value, msg: Value, now: Instant) {
        if self.need_maps(&[ListKind::Resources, ListKind::Templates], &msg, now) {
            return;
        }
        let child = self
            .resources
            .as_ref()
            .and_then(|r| r.route(uri))
            .or_else(|| self.templates.as_ref().and_then(|t| t.route(uri)));
        match child {
            Some(c) => self.forward(c, id, msg, now),
            None => {
                let why = format!("unknown resource: {uri}");
                self.refuse(id, INVALID_PARAMS, why, Outcome::Error(INVALID_PARAMS), now)
            }
        }
    }
}
