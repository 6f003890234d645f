//! Per-key access from authorized_keys options, end to end through
//! OpenSSH's `ssh`: `from=`, `expiry-time=`, `command=`,
//! `environment="MCP_TOOLS=..."`, and an option the server does not know.

use crate::common::*;
use serde_json::{Value, json};
use std::process::Output;

/// Servers `a` and `b` (fixtures, tools under `a.` and `b.`), and one key
/// listed with `options`.
fn start(options: &str) -> Server {
    let mut a = fixture("a", &[]);
    a["namePrefix"] = json!("a.");
    let mut b = fixture("b", &[]);
    b["namePrefix"] = json!("b.");
    let (dir, key) = Server::files(json!({"a": a, "b": b}));
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    let line = format!("{options} {public}");
    std::fs::write(dir.path().join("authorized_keys"), line.trim_start()).unwrap();
    Server::start_in(dir, key, &["--warm-spares", "0"])
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// `ssh -T` with these requests after initialize; the answers.
fn session(srv: &Server, ssh_extra: &[&str], requests: &[Value]) -> (Output, Vec<Value>) {
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

/// The answer with `id`.
fn answer(answers: &[Value], id: u64) -> &Value {
    answers
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("no answer {id} in {answers:?}"))
}

fn list(id: u64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/list"})
}

fn denied(out: &Output) -> bool {
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
    assert_eq!(names(answer(&answers, 1), "tools").len(), 14);
    let (out, answers) = session(&srv, &["-b", "127.0.0.2"], &[list(1)]);
    assert!(denied(&out), "{out:?}");
    assert!(answers.is_empty(), "{answers:?}");
}

#[test]
fn a_negated_address_in_a_from_cidr_list_is_refused_and_the_rest_admitted() {
    // Everything on loopback but 127.0.0.2.
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
    let names = names(answer(&answers, 1), "tools");
    assert_eq!(names.len(), 7);
    assert!(names.iter().all(|n| n.starts_with("b.")), "{names:?}");
}

#[test]
fn naming_a_server_the_key_may_not_use_reads_exactly_as_naming_a_missing_one() {
    let srv = start(r#"command="b""#);
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
    let mut names = names(answer(&answers, 1), "tools");
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
    let allowed = answer(&answers, 2);
    assert!(allowed["result"].is_object(), "{allowed}");
    let hidden = answer(&answers, 3)["error"].to_string();
    let unknown = answer(&answers, 4)["error"]
        .to_string()
        .replace("a.nope", "a.crash");
    assert_eq!(
        hidden, unknown,
        "a filtered tool's error is an unknown tool's"
    );
}

#[test]
fn an_unknown_option_leaves_the_key_out() {
    let srv = start(r#"frobnicate="1""#);
    assert!(denied(&session(&srv, &[], &[]).0));
}

/// The operator's warning is the behaviour: the client only sees a refusal.
#[test]
fn an_unknown_option_is_warned_about_with_its_file_and_line() {
    let srv = start(r#"frobnicate="1""#);
    // authorized_keys is read on every login.
    session(&srv, &[], &[]);
    assert!(
        srv.wait_log("authorized_keys:1"),
        "the warning names file and line: {}",
        srv.log()
    );
}

#[test]
fn a_key_removed_by_hand_loses_its_open_session_with_a_line_to_the_client() {
    let srv = start("");
    let mut ssh = openssh_command(srv.port, &srv.key, &["mcp@127.0.0.1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = ssh.stdin.take().unwrap();
    use std::io::{BufRead, Write};
    writeln!(stdin, "{INIT}").unwrap();
    let mut first = String::new();
    std::io::BufReader::new(ssh.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"result\""), "the session is up: {first}");
    std::fs::write(srv.path("authorized_keys"), "").unwrap();
    // stdin stays open: only the server can end this session (ssh runs
    // under `timeout 60`, which would exit 124).
    let out = ssh.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server no longer trusts this key (not authorized); session ended"),
        "{err}"
    );
}

#[test]
fn a_config_tool_filter_hides_and_refuses_for_every_key() {
    let mut a = fixture("a", &[]);
    a["namePrefix"] = json!("a.");
    a["tools"] = json!(["*", "!crash", "!sl?w"]);
    let srv = Server::start(json!({ "a": a }), &["--warm-spares", "0"]);
    let mut c = srv.connect();
    c.initialize();
    let mut names = names(&c.request("tools/list", json!({})), "tools");
    names.sort();
    assert_eq!(
        names,
        ["a.add", "a.echo", "a.progress", "a.sample", "a.whoami"]
    );
    let hidden = c.call("a.crash", json!({}));
    let missing = c.call("a.nothing", json!({}));
    assert_eq!(
        hidden["error"].to_string(),
        missing["error"].to_string().replace("a.nothing", "a.crash")
    );
}
