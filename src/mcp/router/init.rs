//! `initialize` and `logging/setLevel`: answered by the gateway after
//! fanning out to the children. Each child gets the client's own
//! `initialize` params (so its sampling, roots and elicitation support
//! reaches them); the reply merges their capabilities and instructions.

use super::era;
use super::{Action, FanKind, Router, Status};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::INVALID_REQUEST;
use serde_json::{Map, Value, json};
use std::time::Instant;

/// Protocol revisions of the `initialize` era that the gateway speaks.
pub const SUPPORTED_VERSIONS: [&str; 5] = [
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    "2024-11-05",
    "2024-10-07",
];

impl Router {
    pub(super) fn initialize(&mut self, id: Value, msg: Value, now: Instant) {
        if self.init_params.is_some() {
            return self.fail(id, INVALID_REQUEST, "initialize was already received");
        }
        let mut params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        self.era.legacy_client(&params);
        // The gateway hosts no client-side tasks (ERAS §3).
        if let Some(c) = params
            .get_mut("capabilities")
            .and_then(Value::as_object_mut)
        {
            c.remove("tasks");
        }
        self.start_init(params, Some(id), now);
    }

    /// Initializes every idle child with `params`; the merged result
    /// answers `reply_to` (None: the gateway initializes them for a
    /// 2026-07-28 client).
    pub(super) fn start_init(&mut self, params: Value, reply_to: Option<Value>, now: Instant) {
        self.init_params = Some(params.clone());
        let targets: Vec<usize> = (0..self.children.len())
            .filter(|&i| self.children[i].status == Status::Idle)
            .collect();
        let fid = self.fan_out(FanKind::Init, reply_to, targets.len());
        for i in targets {
            self.children[i].status = Status::Initializing;
            self.send_part(i, fid, 0, "initialize", params.clone(), now);
        }
        self.maybe_finish(fid, now);
    }

    /// A child's answer to `initialize`: ready with its capabilities, or out.
    /// A dual-era child that locked itself to 2026-07-28 (it answered a
    /// probe too late) refuses it with -32022: it is asked `server/discover`
    /// instead and served as modern (ERAS §2.2, races).
    pub(super) fn init_answer(&mut self, child: usize, fid: u64, msg: &Value, now: Instant) {
        let Some(f) = self.fanouts.get_mut(&fid) else {
            return;
        };
        f.waiting -= 1;
        let c = &mut self.children[child];
        let locked_modern =
            msg.at("/error/code").and_then(Value::as_i64) == Some(era::UNSUPPORTED_VERSION);
        if locked_modern && !c.modern {
            log::info!(
                "[{}] refused initialize with -32022: asking server/discover",
                c.info.name
            );
            c.modern = true;
            f.waiting += 1;
            return self.send_part(child, fid, 0, "server/discover", json!({}), now);
        }
        match msg.get("result") {
            Some(r) if c.modern => {
                if r.get("supportedVersions").is_some() {
                    let r = r.clone();
                    self.child_modern(child, &r);
                } else {
                    c.status = Status::Out;
                    let why = "no discover result after refusing initialize";
                    self.out.push(Action::ChildFailed(child, why.into()));
                }
            }
            Some(r) => {
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
            }
            None => {
                let why = msg
                    .at("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no result");
                c.status = Status::Out;
                self.out.push(Action::ChildFailed(
                    child,
                    format!("initialize failed: {why}"),
                ));
            }
        }
    }

    pub(super) fn set_level(&mut self, id: Value, msg: Value, now: Instant) {
        let targets: Vec<usize> = self
            .ready()
            .into_iter()
            .filter(|&i| self.children[i].caps.contains_key("logging"))
            .filter(|&i| !self.children[i].modern) // they get it as `_meta`
            .collect();
        let fid = self.fan_out(FanKind::SetLevel, Some(id), targets.len());
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        self.era
            .legacy_level(params.get("level").and_then(Value::as_str));
        for i in targets {
            self.send_part(i, fid, 0, "logging/setLevel", params.clone(), now);
        }
        self.maybe_finish(fid, now);
    }

    /// The gateway's `initialize` result: the merged capabilities and
    /// instructions, and the client's version if we speak it.
    pub(super) fn merged_init(&self) -> Value {
        let (mut caps, instructions) = self.merged_caps();
        if let Some(t) = self.legacy_task_caps() {
            caps.insert("tasks".into(), t);
        }
        let mut r = json!({
            "protocolVersion": self.legacy_version(),
            "capabilities": caps,
            "serverInfo": {"name": self.opts.server_name, "version": self.opts.server_version},
        });
        if let Some(i) = instructions {
            r["instructions"] = Value::String(i);
        }
        r
    }

    /// The legacy version this session speaks: the client's, if we speak it.
    pub(super) fn legacy_version(&self) -> &'static str {
        let requested = self
            .init_params
            .as_ref()
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or(SUPPORTED_VERSIONS[0]);
        SUPPORTED_VERSIONS
            .iter()
            .find(|v| **v == requested)
            .unwrap_or(&SUPPORTED_VERSIONS[0])
    }

    /// The ready children's capabilities merged (boolean flags as a
    /// union) and their instructions tagged by server.
    pub(super) fn merged_caps(&self) -> (Map<String, Value>, Option<String>) {
        let mut caps = Map::new();
        let mut instructions = Vec::new();
        for c in self.children.iter().filter(|c| c.status == Status::Ready) {
            for key in ["tools", "prompts", "resources", "logging", "completions"] {
                let Some(v) = c.caps.get(key) else { continue };
                let entry = caps.entry(key).or_insert_with(|| json!({}));
                if let (Some(dst), Some(src)) = (entry.as_object_mut(), v.as_object()) {
                    for (k, b) in src {
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
        let instructions = (!instructions.is_empty()).then(|| instructions.join("\n\n"));
        (caps, instructions)
    }
}
