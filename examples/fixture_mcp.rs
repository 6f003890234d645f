//! A small stdio MCP server for the integration tests and the benchmark.
//!
//! `fixture_mcp [--name NAME] [--page-size N] [--fail-init] [--echo-only] [--stall]`
//!
//! Tools (paginated by --page-size): `echo` (returns `text`), `add`,
//! `whoami` (name, FIXTURE_ENV, cwd), `progress` (a log and `count`
//! (3) progress notifications first), `sample` (asks the client for
//! `sampling/createMessage` then `roots/list`, returns both answers), `slow`
//! (answers after `ms`), `crash` (exits at once); with `--stall`: `stall`
//! (stops reading stdin for `ms`, then answers). Prompts: `greet`.
//! Resources: `fixture://NAME/info`, template `fixture://NAME/items/{id}`.

use serde_json::{Value, json};
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
            tools.push(json!({"name": t, "description": format!("{t} tool"), "inputSchema": {"type": "object"}}));
        }
    }
    if with_stall {
        tools.push(json!({"name": "stall", "description": "stop reading stdin for ms", "inputSchema": {"type": "object"}}));
    }
    // Pending `sample` call: (client call id, sampling answer).
    let mut sample: Option<(Value, Option<Value>)> = None;
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
        let reply = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
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
            "initialize" => json!({
                "protocolVersion": p["protocolVersion"],
                "capabilities": {"tools": {"listChanged": true}, "prompts": {}, "resources": {"subscribe": true}, "logging": {}, "completions": {}},
                "serverInfo": {"name": name, "version": "1.0"},
                "instructions": format!("fixture {name}; client said {}", p["clientInfo"]["name"]),
            }),
            "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe" => {
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
                        send(
                            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": format!("hello from {name}")}}),
                        );
                        let n = a["count"].as_u64().unwrap_or(3);
                        for i in 1..=n {
                            send(
                                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": tok, "progress": i, "total": n}}),
                            );
                        }
                        json!({"content": [{"type": "text", "text": "done"}]})
                    }
                    "sample" => {
                        sample = Some((id.clone().unwrap_or(Value::Null), None));
                        send(
                            json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {"messages": [], "maxTokens": 5}}),
                        );
                        continue;
                    }
                    "slow" => {
                        let ms = a["ms"].as_u64().unwrap_or(1000);
                        let send = send.clone();
                        let id = id.clone();
                        std::thread::spawn(move || {
                            std::thread::sleep(std::time::Duration::from_millis(ms));
                            send(
                                json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "slept"}]}}),
                            );
                        });
                        continue;
                    }
                    // Listed with --stall: stops reading stdin for `ms`.
                    "stall" => {
                        let ms = a["ms"].as_u64().unwrap_or(1000);
                        std::thread::sleep(std::time::Duration::from_millis(ms));
                        json!({"content": [{"type": "text", "text": "stalled"}]})
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
