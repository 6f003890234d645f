//! Per-key access from authorized_keys options, end to end through
//! OpenSSH's `ssh`: `from=`, `expiry-time=`, `command=`,
//! `environment="MCP_TOOLS=..."`, and an option the server does not know.

mod common;

use common::*;
use serde_json::{Value, json};

/// Servers `a` and `b` (fixtures, tools under `a.` and `b.`), and one key
/// listed with `options`.
fn start(options: &str) -> Server {
    let dir = TempDir::new("access");
    let (key, public) = client_key(dir.path(), "client");
    let line = format!("{options} {public}\n");
    std::fs::write(dir.path().join("authorized_keys"), line.trim_start()).unwrap();
    let mut a = fixture("a", &[]);
    a["namePrefix"] = json!("a.");
    let mut b = fixture("b", &[]);
    b["namePrefix"] = json!("b.");
    let cfg = json!({"mcpServers": {"a": a, "b": b}});
    std::fs::write(dir.path().join("servers_config.json"), cfg.to_string()).unwrap();
    Server::start_in(dir, key, &["--warm-spares", "0"])
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// `ssh -T` with these requests after initialize; the answers by id.
fn session(
    srv: &Server,
    ssh_extra: &[&str],
    requests: &[Value],
) -> (std::process::Output, Vec<Value>) {
    let mut input = format!("{INIT}\n");
    for r in requests {
        input.push_str(&format!("{r}\n"));
    }
    let out = openssh(
        srv.port,
        &srv.key,
        &[ssh_extra, &["mcp@127.0.0.1"]].concat(),
        &input,
    );
    let answers = json_lines(&out.stdout);
    (out, answers)
}

fn tool_names(answers: &[Value], id: u64) -> Vec<String> {
    let list = answers
        .iter()
        .find(|a| a["id"] == id)
        .expect("tools/list answer");
    list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn list(id: u64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/list"})
}

fn denied(out: &std::process::Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied")
}

#[test]
fn from_admits_the_listed_address_and_refuses_another() {
    let srv = start(r#"from="127.0.0.1""#);
    let (out, answers) = session(&srv, &["-b", "127.0.0.1"], &[list(1)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tool_names(&answers, 1).len(), 14);
    let (out, answers) = session(&srv, &["-b", "127.0.0.2"], &[list(1)]);
    assert!(denied(&out), "{out:?}");
    assert!(answers.is_empty());
    // A negated CIDR list: everything on loopback but 127.0.0.2.
    let srv = start(r#"from="127.0.0.0/8,!127.0.0.2""#);
    assert!(session(&srv, &["-b", "127.0.0.1"], &[]).0.status.success());
    assert!(denied(&session(&srv, &["-b", "127.0.0.2"], &[]).0));
}

#[test]
fn an_expired_key_is_refused_and_a_current_one_admitted() {
    let srv = start(r#"expiry-time="20200101""#);
    assert!(denied(&session(&srv, &[], &[]).0));
    let srv = start(r#"expiry-time="29991231235959""#);
    assert!(session(&srv, &[], &[]).0.status.success());
}

#[test]
fn command_limits_a_key_to_its_servers_whatever_it_asks_for() {
    let srv = start(r#"command="b""#);
    let (out, answers) = session(&srv, &[], &[list(1)]);
    assert!(out.status.success());
    let names = tool_names(&answers, 1);
    assert_eq!(names.len(), 7);
    assert!(names.iter().all(|n| n.starts_with("b.")), "{names:?}");
    // Naming a forbidden server reads exactly as naming a missing one.
    let forbidden = openssh(srv.port, &srv.key, &["mcp@127.0.0.1", "a"], "");
    let missing = openssh(srv.port, &srv.key, &["mcp@127.0.0.1", "zz"], "");
    assert_eq!(forbidden.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&forbidden.stderr).trim(),
        "unknown MCP server(s): a; configured: b"
    );
    assert_eq!(
        String::from_utf8_lossy(&forbidden.stderr).replace(": a;", ": zz;"),
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn mcp_tools_hides_and_refuses_tools_by_their_exposed_names() {
    let srv = start(r#"environment="MCP_TOOLS=a.*,b.echo,!a.crash""#);
    let call = |id: u64, name: &str| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":{"text":"hi"}}});
    let (out, answers) = session(
        &srv,
        &[],
        &[
            list(1),
            call(2, "b.echo"),
            call(3, "a.crash"),
            call(4, "a.nope"),
        ],
    );
    assert!(out.status.success());
    let mut names = tool_names(&answers, 1);
    names.sort();
    assert_eq!(
        names,
        [
            "a.add",
            "a.echo",
            "a.progress",
            "a.sample",
            "a.slow",
            "a.whoami",
            "b.echo"
        ]
    );
    let by_id = |id: u64| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert!(by_id(2)["result"].is_object(), "{}", by_id(2));
    let hidden = by_id(3)["error"].to_string();
    let unknown = by_id(4)["error"].to_string().replace("a.nope", "a.crash");
    assert_eq!(
        hidden, unknown,
        "a filtered tool's error is an unknown tool's"
    );
}

#[test]
fn an_unknown_option_leaves_the_key_out() {
    let srv = start(r#"frobnicate="1""#);
    assert!(denied(&session(&srv, &[], &[]).0));
    assert!(
        srv.wait_log("authorized_keys:1"),
        "the warning names file and line: {}",
        srv.log()
    );
}
