//! A small stdio MCP server for the integration tests and the benchmark.
//!
//! `fixture_mcp [--name NAME] [--page-size N] [--fail-init] [--echo-only] [--stall]
//! [--notify] [--modern [--ttl-ms N]] [--tasks]`
//!
//! Tools (paginated by --page-size): `echo` (returns `text`), `add`,
//! `whoami` (name, FIXTURE_ENV, cwd), `progress` (a log and `count`
//! (3) progress notifications first), `sample` (asks the client for
//! `sampling/createMessage` then `roots/list`, returns both answers), `slow`
//! (answers after `ms`; with `progress: true` one progress notification
//! first), `crash` (exits at once); with `--stall`: `stall`
//! (stops reading stdin for `ms`, then answers); with `--notify`: `notify`
//! (sends `notifications/tools/list_changed`, then
//! `notifications/resources/updated` for each subscribed URI, or only for the
//! argument `uri`). Prompts: `greet`. Resources: `fixture://NAME/info`,
//! template `fixture://NAME/items/{id}`.
//!
//! `--modern` speaks 2026-07-28 only (see [`Modern`]): no `initialize`; every
//! request must carry the `_meta` envelope; `server/discover` and
//! `subscriptions/listen`; `resultType`, `serverInfo` and the cache hints
//! (`ttlMs` from `--ttl-ms`, default 0) on results; the legacy-only methods
//! get -32601. It never sends a request to the client, so `sample` is left
//! out and `notify` is always there (it pushes on the open listens). Input
//! comes back the 2026 way, as an `input_required` result, from the tools
//! `ask_elicit`, `ask_sample`, `ask_roots`, `ask_all` (the three at once) and
//! `ask_twice` (an elicitation, then a sampling), the prompt `ask_greet` (a
//! name) and the resource `fixture://NAME/ask` (roots); the final result
//! carries what the client answered.
//!
//! `--tasks` adds tasks (see [`Tasks`]) and the tool `task_echo`
//! (`execution.taskSupport: "optional"`; arguments `text`, and `hold: true`
//! to keep the task working until cancelled). Legacy: the capability
//! `tasks:{list,cancel,requests:{tools:{call}}}`; a call with `params.task`
//! answers `{task:{taskId,status:"working",…}}` and the task completes at
//! once unless held (`notifications/tasks/status` on each change);
//! `tasks/get`, `tasks/result` (an unfinished task gets -32602, it does not
//! block), `tasks/list` and `tasks/cancel`. Modern (`--modern --tasks`):
//! discover lists the extension `io.modelcontextprotocol/tasks`; a call
//! from a client whose capabilities list it answers `resultType:"task"`;
//! `tasks/get` (with the `result` inlined once completed), `tasks/update`,
//! `tasks/cancel`. Task ids count from "1" in each process.

use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().position(|a| a == f);
    let name = flag("--name")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "fixture".into());
    let page: usize = flag("--page-size")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let fail_init = flag("--fail-init").is_some();
    let echo_only = flag("--echo-only").is_some();
    let with_stall = flag("--stall").is_some();
    let is_modern = flag("--modern").is_some();
    let mut tasks = flag("--tasks").is_some().then(Tasks::default);
    let ttl_ms: u64 = flag("--ttl-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    eprintln!("fixture {name} starting");

    let out = Arc::new(Mutex::new(std::io::stdout()));
    let send = {
        let out = out.clone();
        move |v: Value| {
            let mut o = out.lock().unwrap();
            let _ = writeln!(o, "{v}");
            let _ = o.flush();
        }
    };
    let mut tools = vec![
        json!({"name": "echo", "description": "Echo text back", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}),
    ];
    if !echo_only {
        for t in ["add", "whoami", "progress", "sample", "slow", "crash"] {
            if !(is_modern && t == "sample") {
                tools.push(json!({"name": t, "description": format!("{t} tool"), "inputSchema": {"type": "object"}}));
            }
        }
    }
    if with_stall {
        tools.push(json!({"name": "stall", "description": "stop reading stdin for ms", "inputSchema": {"type": "object"}}));
    }
    if is_modern || flag("--notify").is_some() {
        tools.push(json!({"name": "notify", "description": "push list_changed and resources/updated", "inputSchema": {"type": "object"}}));
    }
    if tasks.is_some() {
        tools.push(
            json!({"name": "task_echo", "description": "echo, as a task if asked",
            "inputSchema": {"type": "object"}, "execution": {"taskSupport": "optional"}}),
        );
    }
    if is_modern && !echo_only {
        for (t, _) in ASK_TOOLS {
            tools.push(json!({"name": t, "description": format!("{t}: answers input_required"), "inputSchema": {"type": "object"}}));
        }
    }
    // Pending `sample` call: (client call id, sampling answer).
    let mut sample: Option<(Value, Option<Value>)> = None;
    // The URIs of legacy `resources/subscribe`, for `notify`.
    let mut subscribed: Vec<String> = Vec::new();
    let mut modern = is_modern.then(|| Modern::new(&name));
    // What a modern result carries on top of the legacy one.
    let stamp = |method: &str, result: Value| {
        if is_modern {
            stamp_modern(&name, ttl_ms, method, result)
        } else {
            result
        }
    };
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            eprintln!("fixture {name}: bad line");
            continue;
        };
        let id = msg.get("id").cloned();
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let p = msg.get("params").cloned().unwrap_or(json!({}));
        let reply =
            |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": stamp(method, result)});
        if method.is_empty() {
            // A response to one of our requests (the `sample` tool).
            if let Some((call, got)) = sample.take() {
                match (msg.get("id").and_then(Value::as_str), got) {
                    (Some("s1"), None) => {
                        sample = Some((call, Some(msg.clone())));
                        send(json!({"jsonrpc": "2.0", "id": "r1", "method": "roots/list"}));
                    }
                    (Some("r1"), Some(s)) => send(json!({"jsonrpc": "2.0", "id": call, "result": {
                        "content": [{"type": "text", "text": "sampled"}],
                        "structuredContent": {"sampling": s, "roots": msg}}})),
                    (_, got) => sample = Some((call, got)),
                }
            }
            continue;
        }
        if id.is_none() {
            if method == "notifications/cancelled" {
                eprintln!("fixture {name}: cancelled {}", p["requestId"]);
                if let Some(m) = modern.as_mut() {
                    m.listens.retain(|(listen, _)| *listen != p["requestId"]);
                }
            }
            continue;
        }
        if let Some(m) = modern.as_mut() {
            match m.serve(method, &p, &id, &send) {
                Served::Done(Ok(mut result)) => {
                    if method == "server/discover" && tasks.is_some() {
                        result["capabilities"]["extensions"] = json!({TASKS_EXT: {}});
                    }
                    send(reply(result));
                    continue;
                }
                Served::Done(Err(error)) => {
                    send(json!({"jsonrpc": "2.0", "id": id, "error": error}));
                    continue;
                }
                // A listen: answered only when it ends.
                Served::Open => continue,
                // Served below, as in the legacy era.
                Served::Common => {}
            }
        }
        if let Some(t) = tasks.as_mut()
            && let Some(answer) = t.serve(method, &p, is_modern, &send)
        {
            match answer {
                Ok(result) => send(reply(result)),
                Err(error) => send(json!({"jsonrpc": "2.0", "id": id, "error": error})),
            }
            // A task completed at once: its status after the creation result.
            if let Some(n) = t.after.take() {
                send(n);
            }
            continue;
        }
        let result = match method {
            "initialize" if fail_init => {
                send(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "fixture refuses to initialize"}}),
                );
                continue;
            }
            "initialize" => {
                let mut r = json!({
                    "protocolVersion": p["protocolVersion"],
                    "capabilities": {"tools": {"listChanged": true}, "prompts": {}, "resources": {"subscribe": true}, "logging": {}, "completions": {}},
                    "serverInfo": {"name": name, "version": "1.0"},
                    "instructions": format!("fixture {name}; client said {}", p["clientInfo"]["name"]),
                });
                if tasks.is_some() {
                    r["capabilities"]["tasks"] =
                        json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}});
                    // What the client declared, for the tests to read back.
                    r["instructions"] = json!(format!(
                        "fixture {name}; client tasks {}",
                        p["capabilities"]["tasks"]
                    ));
                }
                r
            }
            "ping" | "logging/setLevel" => json!({}),
            "resources/subscribe" => {
                subscribed.extend(p["uri"].as_str().map(String::from));
                json!({})
            }
            "resources/unsubscribe" => {
                subscribed.retain(|u| p["uri"] != *u);
                json!({})
            }
            "tools/list" => {
                let start: usize = p["cursor"]
                    .as_str()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let end = (start + page).min(tools.len());
                let mut r = json!({"tools": tools[start.min(end)..end]});
                if end < tools.len() {
                    r["nextCursor"] = json!(end.to_string());
                }
                r
            }
            "tools/call" => {
                let a = &p["arguments"];
                match p["name"].as_str().unwrap_or("") {
                    "echo" => {
                        json!({"content": [{"type": "text", "text": a["text"]}], "_meta": {"from": name}})
                    }
                    "add" => {
                        json!({"content": [{"type": "text", "text": (a["a"].as_f64().unwrap_or(0.0) + a["b"].as_f64().unwrap_or(0.0)).to_string()}]})
                    }
                    "whoami" => {
                        json!({"content": [{"type": "text", "text": format!("{name} pid={} env={} cwd={} fds={}", std::process::id(),
                        std::env::var("FIXTURE_ENV").unwrap_or_default(),
                        std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
                        open_fds())}]})
                    }
                    "progress" => {
                        let tok = p["_meta"]["progressToken"].clone();
                        // A modern request gets log messages only if it asks.
                        if !is_modern || p["_meta"][LOG_LEVEL].is_string() {
                            send(
                                json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": format!("hello from {name}")}}),
                            );
                        }
                        let n = a["count"].as_u64().unwrap_or(3);
                        for i in 1..=n {
                            send(
                                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": tok, "progress": i, "total": n}}),
                            );
                        }
                        json!({"content": [{"type": "text", "text": "done"}]})
                    }
                    "sample" if !is_modern => {
                        sample = Some((id.clone().unwrap_or(Value::Null), None));
                        send(
                            json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {"messages": [], "maxTokens": 5}}),
                        );
                        continue;
                    }
                    "slow" => {
                        let ms = a["ms"].as_u64().unwrap_or(1000);
                        // One progress first if asked: the call is under way.
                        if a["progress"] == true {
                            send(
                                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": p["_meta"]["progressToken"], "progress": 0}}),
                            );
                        }
                        let send = send.clone();
                        let id = id.clone();
                        let result = stamp(
                            method,
                            json!({"content": [{"type": "text", "text": "slept"}]}),
                        );
                        std::thread::spawn(move || {
                            std::thread::sleep(std::time::Duration::from_millis(ms));
                            send(json!({"jsonrpc": "2.0", "id": id, "result": result}));
                        });
                        continue;
                    }
                    // Listed with --stall: stops reading stdin for `ms`.
                    "stall" => {
                        let ms = a["ms"].as_u64().unwrap_or(1000);
                        std::thread::sleep(std::time::Duration::from_millis(ms));
                        json!({"content": [{"type": "text", "text": "stalled"}]})
                    }
                    "notify" => {
                        send(
                            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
                        );
                        let only = a["uri"].as_str();
                        let mut n = 0;
                        for uri in subscribed.iter().filter(|u| only.is_none_or(|o| o == *u)) {
                            send(
                                json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}),
                            );
                            n += 1;
                        }
                        json!({"content": [{"type": "text", "text": format!("updated {n}")}]})
                    }
                    "crash" => {
                        eprintln!("fixture {name}: crashing on purpose");
                        std::process::exit(3);
                    }
                    other => {
                        send(
                            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!("no tool {other}")}}),
                        );
                        continue;
                    }
                }
            }
            "prompts/list" => {
                json!({"prompts": [{"name": "greet", "arguments": [{"name": "who"}]}]})
            }
            "prompts/get" => {
                json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("hello {} from {name}", p["arguments"]["who"].as_str().unwrap_or("?"))}}]})
            }
            "resources/list" => {
                json!({"resources": [{"uri": format!("fixture://{name}/info"), "name": "info"}]})
            }
            "resources/templates/list" => {
                json!({"resourceTemplates": [{"uriTemplate": format!("fixture://{name}/items/{{id}}"), "name": "item"}]})
            }
            "resources/read" => {
                json!({"contents": [{"uri": p["uri"], "text": format!("{} served by {name}", p["uri"].as_str().unwrap_or(""))}]})
            }
            "completion/complete" => {
                json!({"completion": {"values": [format!("{name}-1")], "hasMore": false}})
            }
            _ => {
                send(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no such method"}}),
                );
                continue;
            }
        };
        send(reply(result));
    }
}

/// The fds this process has open, as "0,1,2": what it inherited, apart from
/// the directory handle that lists them.
fn open_fds() -> String {
    let own = format!("/proc/{}/fd", std::process::id());
    let mut fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_str() != Some(&own)))
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

// The 2026-07-28 side of the fixture (`--modern`).

const MODERN: &str = "2026-07-28";
const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];
/// Requests of the initialize era that 2026-07-28 removed.
const REMOVED: [&str; 4] = [
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// What a multi round-trip request asks for: the input keys of each round.
type Plan = &'static [&'static [&'static str]];

/// The tools that ask for input, with their plans.
const ASK_TOOLS: [(&str, Plan); 5] = [
    ("ask_elicit", &[&["elicit"]]),
    ("ask_sample", &[&["sample"]]),
    ("ask_roots", &[&["roots"]]),
    ("ask_all", &[&["elicit", "sample", "roots"]]),
    ("ask_twice", &[&["elicit"], &["sample"]]),
];

/// How the modern side took a request.
enum Served {
    /// Answered: a result or an error object.
    Done(Result<Value, Value>),
    /// A `subscriptions/listen` now open: no answer until it ends.
    Open,
    /// Not modern-specific: the common code serves it.
    Common,
}

/// A `requestState` handed out and not yet used.
struct Pending {
    method: String,
    /// The tool or prompt name, or the resource URI.
    target: String,
    /// The round the state asks about.
    round: usize,
    /// What the client answered in earlier rounds (and this one, in part).
    answers: Map<String, Value>,
}

/// The per-process state of a modern fixture: open listens and the
/// `requestState`s it has handed out (each good for one retry).
struct Modern {
    name: String,
    /// (the listen's request id, the filter honoured).
    listens: Vec<(Value, Value)>,
    states: HashMap<String, Pending>,
    issued: u64,
}

fn rpc_error(code: i64, message: String, data: Option<Value>) -> Value {
    let mut e = json!({"code": code, "message": message});
    if let Some(d) = data {
        e["data"] = d;
    }
    e
}

fn invalid(message: String) -> Value {
    rpc_error(-32602, message, None)
}

/// Refuses what a 2026-07-28-only server refuses, in the spec's order:
/// `initialize` (naming the versions it has), the removed methods, then a
/// request whose `_meta` lacks the protocol version or the client
/// capabilities, names another version, or an unknown log level.
fn gate(method: &str, p: &Value) -> Result<(), Value> {
    let unsupported = |requested: &Value| {
        rpc_error(
            -32022,
            "Unsupported protocol version: this server speaks 2026-07-28 only (per-request _meta, no initialize)".into(),
            Some(json!({"supported": [MODERN], "requested": requested})),
        )
    };
    if method == "initialize" {
        return Err(unsupported(&p["protocolVersion"]));
    }
    if REMOVED.contains(&method) {
        return Err(rpc_error(
            -32601,
            format!("{method} was removed in 2026-07-28"),
            None,
        ));
    }
    let meta = &p["_meta"];
    let version = &meta[PROTOCOL_VERSION];
    if !version.is_string() {
        return Err(invalid(format!(
            "params._meta[\"{PROTOCOL_VERSION}\"] is required (a string)"
        )));
    }
    if version != MODERN {
        return Err(unsupported(version));
    }
    if !meta[CLIENT_CAPS].is_object() {
        return Err(invalid(format!(
            "params._meta[\"{CLIENT_CAPS}\"] is required (an object)"
        )));
    }
    match meta.get(LOG_LEVEL) {
        Some(l) if !l.as_str().is_some_and(|l| LEVELS.contains(&l)) => {
            Err(invalid(format!("unknown {LOG_LEVEL} {l}")))
        }
        _ => Ok(()),
    }
}

/// Adds to a modern result its `resultType` (if the code did not set one),
/// the server's info in `_meta`, and the cache hints on the results that
/// must have them.
fn stamp_modern(name: &str, ttl_ms: u64, method: &str, mut result: Value) -> Value {
    if result.get("resultType").is_none() {
        result["resultType"] = json!("complete");
    }
    if !result["_meta"].is_object() {
        result["_meta"] = json!({});
    }
    result["_meta"]["io.modelcontextprotocol/serverInfo"] = json!({"name": name, "version": "1.0"});
    let cacheable = [
        "server/discover",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    ];
    if cacheable.contains(&method) && result["resultType"] == "complete" {
        result["ttlMs"] = json!(ttl_ms);
        result["cacheScope"] = json!("private");
    }
    result
}

/// One input request of a plan: (the client capability it needs, the request).
fn input_request(key: &str) -> (&'static str, Value) {
    match key {
        "elicit" => (
            "elicitation",
            json!({"method": "elicitation/create", "params": {"mode": "form", "message": "What is your name?",
                "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}),
        ),
        "sample" => (
            "sampling",
            json!({"method": "sampling/createMessage", "params": {"maxTokens": 20,
                "messages": [{"role": "user", "content": {"type": "text", "text": "Say hello"}}]}}),
        ),
        _ => ("roots", json!({"method": "roots/list", "params": {}})),
    }
}

impl Modern {
    fn new(name: &str) -> Modern {
        Modern {
            name: name.into(),
            listens: Vec::new(),
            states: HashMap::new(),
            issued: 0,
        }
    }

    /// Serves what only a modern server has, after the `_meta` checks.
    fn serve(
        &mut self,
        method: &str,
        p: &Value,
        id: &Option<Value>,
        send: &impl Fn(Value),
    ) -> Served {
        if let Err(e) = gate(method, p) {
            return Served::Done(Err(e));
        }
        let name = self.name.clone();
        let target = p["name"].as_str().unwrap_or("");
        let ask = format!("fixture://{name}/ask");
        Served::Done(match method {
            "server/discover" => Ok(json!({
                "supportedVersions": [MODERN],
                "capabilities": {"tools": {"listChanged": true}, "prompts": {"listChanged": true},
                    "resources": {"subscribe": true, "listChanged": true}, "logging": {}, "completions": {}},
                "instructions": format!("fixture {name} (2026-07-28); client said {}",
                    p["_meta"]["io.modelcontextprotocol/clientInfo"]["name"]),
            })),
            "subscriptions/listen" => {
                self.listen(id.clone().unwrap_or(Value::Null), &p["notifications"], send);
                return Served::Open;
            }
            "tools/call" if target == "notify" => {
                Ok(self.notify(p["arguments"]["uri"].as_str(), send))
            }
            "tools/call" => match ASK_TOOLS.iter().find(|(t, _)| *t == target) {
                Some((_, plan)) => self.round_trip(method, target, plan, p),
                None => return Served::Common,
            },
            "prompts/list" => Ok(
                json!({"prompts": [{"name": "greet", "arguments": [{"name": "who"}]},
                {"name": "ask_greet", "description": "elicits a name"}]}),
            ),
            "prompts/get" if target == "ask_greet" => {
                self.round_trip(method, target, &[&["elicit"]], p)
            }
            "resources/list" => Ok(
                json!({"resources": [{"uri": format!("fixture://{name}/info"), "name": "info"},
                {"uri": ask, "name": "ask", "description": "asks for roots"}]}),
            ),
            "resources/read" if p["uri"] == *ask => self.round_trip(method, &ask, &[&["roots"]], p),
            _ => return Served::Common,
        })
    }

    /// Opens a listen: acknowledges the part of `filter` it honours (the
    /// three list flags, any resource URIs and task ids) and keeps it.
    fn listen(&mut self, id: Value, filter: &Value, send: &impl Fn(Value)) {
        let mut honoured = json!({});
        for flag in [
            "toolsListChanged",
            "promptsListChanged",
            "resourcesListChanged",
        ] {
            if filter[flag] == true {
                honoured[flag] = json!(true);
            }
        }
        for key in ["resourceSubscriptions", "taskIds"] {
            if let Some(items) = filter[key].as_array() {
                honoured[key] = json!(items.iter().filter(|u| u.is_string()).collect::<Vec<_>>());
            }
        }
        send(
            json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {SUBSCRIPTION_ID: id}, "notifications": honoured}}),
        );
        self.listens.push((id, honoured));
    }

    /// The `notify` tool: each open listen gets the list changes it asked
    /// for, an update for each of its URIs (or only `only`) and, without
    /// `only`, a `notifications/tasks` for each of its task ids.
    fn notify(&self, only: Option<&str>, send: &impl Fn(Value)) -> Value {
        let mut n = 0;
        for (id, filter) in &self.listens {
            let mut push = |method: &str, extra: Value| {
                let mut params = json!({"_meta": {SUBSCRIPTION_ID: id}});
                if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
                    p.extend(e.clone());
                }
                send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
                n += 1;
            };
            for (flag, method) in [
                ("toolsListChanged", "notifications/tools/list_changed"),
                ("promptsListChanged", "notifications/prompts/list_changed"),
                (
                    "resourcesListChanged",
                    "notifications/resources/list_changed",
                ),
            ] {
                if filter[flag] == true {
                    push(method, json!({}));
                }
            }
            for uri in filter["resourceSubscriptions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if only.is_none_or(|o| uri == o) {
                    push("notifications/resources/updated", json!({"uri": uri}));
                }
            }
            // A status for each task it names (the fixture's tasks are
            // kept apart; "working" stands for any status).
            for task in filter["taskIds"].as_array().into_iter().flatten() {
                if only.is_none() {
                    push(
                        "notifications/tasks",
                        json!({"taskId": task, "status": "working"}),
                    );
                }
            }
        }
        json!({"content": [{"type": "text", "text": format!("notified {n}")}]})
    }

    /// A request that needs input (MRTR): the first call and each retry
    /// with a good `requestState` and all of a round's answers move one
    /// round on; a retry missing some answers is asked for those again. It
    /// ends with the final result, which holds every answer. A missing
    /// capability gets -32021; a state not handed out, used already, or
    /// issued for another request gets -32602. Unexpected `inputResponses`
    /// keys are ignored, as the spec advises.
    fn round_trip(
        &mut self,
        method: &str,
        target: &str,
        plan: Plan,
        p: &Value,
    ) -> Result<Value, Value> {
        let (round, answers) = match p.get("requestState") {
            None if p.get("inputResponses").is_some() => {
                return Err(invalid("inputResponses without a requestState".into()));
            }
            None => (0, Map::new()),
            Some(state) => {
                let pending = state
                    .as_str()
                    .and_then(|s| self.states.remove(s))
                    .ok_or_else(|| {
                        invalid(format!("unknown or already used requestState {state}"))
                    })?;
                if pending.method != method || pending.target != target {
                    return Err(invalid(format!(
                        "requestState {state} was issued for {} {}, not {method} {target}",
                        pending.method, pending.target
                    )));
                }
                let mut answers = pending.answers;
                let keys = plan[pending.round];
                for key in keys {
                    if let Some(v) = p["inputResponses"].get(*key) {
                        answers.insert(key.to_string(), v.clone());
                    }
                }
                let done = keys.iter().all(|k| answers.contains_key(*k));
                (pending.round + usize::from(done), answers)
            }
        };
        let Some(keys) = plan.get(round) else {
            return Ok(self.final_result(method, target, answers));
        };
        let caps = &p["_meta"][CLIENT_CAPS];
        let mut requests = Map::new();
        for key in keys.iter().filter(|k| !answers.contains_key(**k)) {
            let (cap, request) = input_request(key);
            if !caps[cap].is_object() {
                return Err(rpc_error(
                    -32021,
                    format!("Missing required client capability: {cap}"),
                    Some(json!({"requiredCapabilities": {cap: {}}})),
                ));
            }
            requests.insert(key.to_string(), request);
        }
        self.issued += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let state = format!("{}.{}.{nanos:x}", self.name, self.issued);
        self.states.insert(
            state.clone(),
            Pending {
                method: method.into(),
                target: target.into(),
                round,
                answers,
            },
        );
        Ok(
            json!({"resultType": "input_required", "inputRequests": requests, "requestState": state}),
        )
    }

    /// The result of a request whose input is all in: the answers, as a
    /// tool's structured content, a prompt's greeting or a resource's text.
    fn final_result(&self, method: &str, target: &str, answers: Map<String, Value>) -> Value {
        let name = &self.name;
        let answers = Value::Object(answers);
        match method {
            "prompts/get" => {
                let who = answers["elicit"]["content"]["name"].as_str().unwrap_or("?");
                json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("hello {who} from {name}")}}]})
            }
            "resources/read" => {
                json!({"contents": [{"uri": target, "mimeType": "application/json", "text": answers.to_string()}]})
            }
            _ => json!({"content": [{"type": "text", "text": format!("{target} got {answers}")}],
                "structuredContent": {"inputResponses": answers}}),
        }
    }
}

// Tasks (`--tasks`): the 2025-11-25 ones, or the 2026 extension with `--modern`.

const TASKS_EXT: &str = "io.modelcontextprotocol/tasks";
const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";
const STAMP: &str = "2026-01-01T00:00:00Z";

/// One task: its status and, once completed, the tool's result.
struct Task {
    id: String,
    status: &'static str,
    result: Option<Value>,
}

/// The tasks of this process, ids counted from 1.
#[derive(Default)]
struct Tasks {
    tasks: Vec<Task>,
    /// A status notification to send after the answer.
    after: Option<Value>,
}

impl Task {
    /// The Task object of either era.
    fn wire(&self, modern: bool) -> Value {
        let mut t = json!({"taskId": self.id, "status": self.status,
            "createdAt": STAMP, "lastUpdatedAt": STAMP});
        if modern {
            t["ttlMs"] = Value::Null;
        } else {
            t["ttl"] = Value::Null;
        }
        t
    }

    fn terminal(&self) -> bool {
        self.status != "working"
    }
}

impl Tasks {
    /// Serves a task method or a `task_echo` call; None for anything else.
    fn serve(
        &mut self,
        method: &str,
        p: &Value,
        modern: bool,
        send: &impl Fn(Value),
    ) -> Option<Result<Value, Value>> {
        let status = |t: &Task| {
            if !modern {
                send(
                    json!({"jsonrpc": "2.0", "method": "notifications/tasks/status", "params": t.wire(false)}),
                );
            }
        };
        let unknown = || invalid(format!("unknown task {}", p["taskId"]));
        let find = |tasks: &mut Vec<Task>| {
            let id = p["taskId"].as_str().unwrap_or("");
            tasks.iter_mut().position(|t| t.id == id)
        };
        Some(match method {
            "tools/call" if p["name"] == "task_echo" => {
                let a = &p["arguments"];
                let result = json!({"content": [{"type": "text", "text": a["text"]}]});
                let asked = if modern {
                    p["_meta"][CLIENT_CAPS]["extensions"][TASKS_EXT].is_object()
                } else {
                    p["task"].is_object()
                };
                if !asked {
                    return Some(Ok(result));
                }
                let mut t = Task {
                    id: (self.tasks.len() + 1).to_string(),
                    status: "working",
                    result: None,
                };
                let mut created = t.wire(modern);
                if modern {
                    created["resultType"] = json!("task");
                } else {
                    created = json!({"task": created});
                }
                if a["hold"] != true {
                    // Answered first, then completed (the status follows).
                    t.status = "completed";
                    t.result = Some(result);
                }
                if t.terminal() && !modern {
                    self.after = Some(json!({"jsonrpc": "2.0",
                        "method": "notifications/tasks/status", "params": t.wire(false)}));
                }
                self.tasks.push(t);
                Ok(created)
            }
            "tasks/get" => match find(&mut self.tasks) {
                Some(i) => {
                    let t = &self.tasks[i];
                    let mut r = t.wire(modern);
                    if modern && let Some(res) = &t.result {
                        r["result"] = res.clone();
                    }
                    Ok(r)
                }
                None => Err(unknown()),
            },
            "tasks/result" if !modern => match find(&mut self.tasks) {
                Some(i) => match &self.tasks[i].result {
                    Some(res) => {
                        let mut r = res.clone();
                        r["_meta"] = json!({RELATED_TASK: {"taskId": self.tasks[i].id}});
                        Ok(r)
                    }
                    None => Err(invalid(format!(
                        "task {} is {}: this fixture does not block",
                        self.tasks[i].id, self.tasks[i].status
                    ))),
                },
                None => Err(unknown()),
            },
            "tasks/list" if !modern => {
                Ok(json!({"tasks": self.tasks.iter().map(|t| t.wire(false)).collect::<Vec<_>>()}))
            }
            "tasks/cancel" => match find(&mut self.tasks) {
                Some(i) if self.tasks[i].terminal() && !modern => Err(invalid(format!(
                    "task {} is already {}",
                    self.tasks[i].id, self.tasks[i].status
                ))),
                Some(i) => {
                    let t = &mut self.tasks[i];
                    if !t.terminal() {
                        t.status = "cancelled";
                        status(t);
                    }
                    Ok(if modern { json!({}) } else { t.wire(false) })
                }
                None => Err(unknown()),
            },
            "tasks/update" if modern => match find(&mut self.tasks) {
                Some(_) => Ok(json!({})),
                None => Err(unknown()),
            },
            "tasks/result" | "tasks/list" | "tasks/update" => Err(rpc_error(
                -32601,
                format!("{method}: not in this era"),
                None,
            )),
            _ => return None,
        })
    }
}
