//! The benchmark's minimal MCP server: one `echo` tool, nothing else, so a
//! measurement shows the transport's cost and not the server's. The tool
//! answers `text`, followed by `more` x's when that argument is given.

use serde_json::{Value, json};
use std::io::{BufRead, BufWriter, Write};

fn main() {
    let stdin = std::io::stdin();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(id) = msg.get("id").cloned() else {
            continue;
        };
        let result = match msg.get("method").and_then(Value::as_str) {
            Some("initialize") => json!({
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "echo", "version": "1"}}),
            Some("tools/list") => {
                json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]})
            }
            Some("tools/call") => {
                let args = &msg["params"]["arguments"];
                match args.get("more").and_then(Value::as_u64) {
                    // The answer made `more` bytes longer (mcp_bench same-bytes).
                    Some(n) => {
                        let text = args["text"].as_str().unwrap_or_default();
                        let text = format!("{text}{}", "x".repeat(n.min(1 << 20) as usize));
                        json!({"content": [{"type": "text", "text": text}]})
                    }
                    None => json!({"content": [{"type": "text", "text": args["text"]}]}),
                }
            }
            Some("ping") => json!({}),
            _ => {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no such method"}})
                );
                let _ = out.flush();
                continue;
            }
        };
        let _ = writeln!(
            out,
            "{}",
            json!({"jsonrpc": "2.0", "id": id, "result": result})
        );
        let _ = out.flush();
    }
}
