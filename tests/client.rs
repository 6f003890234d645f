//! Our client binary against our server binary, driven through its
//! stdin/stdout as an AI host would.

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

/// (server, client args with a known_hosts that lists the server's key).
fn setup(known_hosts_line: impl Fn(&Server, &str) -> String) -> (Server, Vec<String>) {
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &[]), "beta": fixture("beta", &[])}),
        &[],
    );
    let host_pub =
        std::fs::read_to_string(srv.dir.path().join("hostkey/host_ed25519.pub")).unwrap();
    let kh = srv.dir.path().join("known_hosts");
    std::fs::write(&kh, known_hosts_line(&srv, host_pub.trim())).unwrap();
    let args = client_args(srv.port, &srv.key, &kh);
    (srv, args)
}

/// The client's connection flags for the test server.
fn client_args(port: u16, key: &std::path::Path, known_hosts: &std::path::Path) -> Vec<String> {
    vec![
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--client-key".into(),
        key.display().to_string(),
        "--known-hosts".into(),
        known_hosts.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn bridges_requests_notifications_and_server_to_client_requests() {
    let (_srv, args) = setup(|s, k| format!("[127.0.0.1]:{} {k}\n", s.port));
    let mut c = StdioClient::start(&strs(&args));
    c.send(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{},"roots":{}},"clientInfo":{"name":"host","version":"1"}}}));
    let init = c.recv();
    assert_eq!(init["id"], 1);
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "m2m-mcp-server-ssh-server"
    );
    c.send(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
    c.send(&json!({"jsonrpc":"2.0","id":"t","method":"tools/list"}));
    let tools = c.recv();
    assert_eq!(tools["id"], "t");
    assert_eq!(tools["result"]["tools"].as_array().unwrap().len(), 14);
    c.send(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"progress","arguments":{},"_meta":{"progressToken":5}}}));
    let note = c.recv();
    assert_eq!(note["method"], "notifications/message");
    for _ in 0..3 {
        assert_eq!(c.recv()["method"], "notifications/progress");
    }
    assert_eq!(c.recv()["id"], 2);
    c.send(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sample_1","arguments":{}}}));
    let s = c.recv();
    assert_eq!(s["method"], "sampling/createMessage");
    c.send(&json!({"jsonrpc":"2.0","id":s["id"],"result":{"role":"assistant","content":{"type":"text","text":"ok"},"model":"m"}}));
    let r = c.recv();
    assert_eq!(r["method"], "roots/list");
    c.send(&json!({"jsonrpc":"2.0","id":r["id"],"result":{"roots":[]}}));
    let done = c.recv();
    assert_eq!(done["id"], 3);
    assert_eq!(
        done["result"]["structuredContent"]["sampling"]["result"]["content"]["text"],
        "ok"
    );
    // stdin EOF: the answer to a request in flight still arrives, then exit 0.
    c.send(&json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"slow","arguments":{"ms":400}}}));
    c.close_stdin();
    assert_eq!(c.recv()["id"], 4);
    assert!(c.wait().success(), "{}", c.stderr());
}

#[test]
fn hashed_known_hosts_entries_work() {
    let (srv, args) = setup(|s, k| format!("[127.0.0.1]:{} {k}\n", s.port));
    let kh = srv.dir.path().join("known_hosts");
    let st = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(st.status.success());
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    let mut c = StdioClient::start(&strs(&args));
    c.send(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    assert_eq!(c.recv()["result"], json!({}));
}

#[test]
fn a_wrong_or_unknown_host_key_is_refused_before_any_data() {
    let (_, other) = m2m_mcp_server_ssh_server::keys::generate_ed25519("impostor");
    let (srv, args) = setup(|s, _| format!("[127.0.0.1]:{} {other}\n", s.port));
    let mut c = StdioClient::start(&strs(&args));
    let status = c.wait();
    assert!(!status.success());
    let err = c.stderr();
    assert!(
        err.contains("does not match") && err.contains("SHA256:") && err.contains("[127.0.0.1]:"),
        "{err}"
    );
    assert!(
        !srv.log().contains("authenticated"),
        "the client authenticated anyway"
    );
    // Not listed at all.
    std::fs::write(srv.dir.path().join("known_hosts"), "").unwrap();
    let mut c = StdioClient::start(&strs(&args));
    assert!(!c.wait().success());
    assert!(c.stderr().contains("is not in"), "{}", c.stderr());
    // --disable-host-key-checking connects, with a warning.
    let mut a = args.clone();
    a.push("--disable-host-key-checking".into());
    let mut c = StdioClient::start(&strs(&a));
    c.send(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    assert_eq!(c.recv()["id"], 1);
    assert!(c.stderr().contains("host key checking is disabled"));
}

#[test]
fn key_server_mode_registers_and_pins_the_host_key() {
    let dir = TempDir::new("tokc");
    let tf = dir.path().join("token");
    std::fs::write(&tf, "client-token-0123456789\n").unwrap();
    let (srv, api) = Server::start_with_key_api(
        json!({"alpha": fixture("alpha", &[])}),
        &["--key-server-token-file", tf.to_str().unwrap()],
    );
    let key = dir.path().join("fresh_client_key");
    let mut base = client_args(srv.port, &key, "/nonexistent".as_ref());
    base.extend([
        "--use-key-server".into(),
        "--key-server-port".into(),
        api.to_string(),
    ]);
    // Without the token: registration refused, clear error.
    let mut c = StdioClient::start(&strs(&base));
    assert!(!c.wait().success());
    assert!(c.stderr().contains("401"), "{}", c.stderr());
    let mut args = base.clone();
    args.extend(["--key-server-token-file".into(), tf.display().to_string()]);
    let mut c = StdioClient::start(&strs(&args));
    c.send(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"h","version":"1"}}}));
    assert_eq!(c.recv()["id"], 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let registered = std::fs::read_to_string(srv.dir.path().join("registered_clients")).unwrap();
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    assert!(registered.contains(public.split_whitespace().nth(1).unwrap()));
}

#[test]
fn endings_server_gone_auth_failure_and_sigterm() {
    let (mut srv, args) = setup(|s, k| format!("[127.0.0.1]:{} {k}\n", s.port));
    // SIGTERM closes cleanly with exit 0.
    let mut c = StdioClient::start(&strs(&args));
    c.send(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    assert_eq!(c.recv()["id"], 1);
    Command::new("kill")
        .arg("-TERM")
        .arg(c.child.id().to_string())
        .status()
        .unwrap();
    assert!(c.wait().success(), "{}", c.stderr());
    // Authentication failure: an unauthorized key.
    let (other, _) = client_key(srv.dir.path(), "nobody");
    let mut a = args.clone();
    let i = a.iter().position(|x| x == "--client-key").unwrap();
    a[i + 1] = other.display().to_string();
    let mut c = StdioClient::start(&strs(&a));
    assert!(!c.wait().success());
    assert!(
        c.stderr().contains("authentication as mcp"),
        "{}",
        c.stderr()
    );
    // The server goes away mid-session: non-zero exit, one clear line.
    let mut c = StdioClient::start(&strs(&args));
    c.send(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    assert_eq!(c.recv()["id"], 1);
    Command::new("kill")
        .arg("-TERM")
        .arg(srv.pid().to_string())
        .status()
        .unwrap();
    let _ = srv.child.wait();
    assert!(!c.wait().success());
    let err = c.stderr();
    assert!(
        err.contains("server closed the session") || err.contains("connection lost"),
        "{err}"
    );
}

/// More requests than one SSH window holds, written while their answers
/// already flow back (so the client's writes block on the window and take
/// answers off the socket as they go): every answer arrives, in order.
#[test]
fn a_burst_of_pipelined_calls_is_answered_in_full_while_still_writing() {
    let (_srv, args) = setup(|s, k| format!("[127.0.0.1]:{} {k}\n", s.port));
    let mut c = StdioClient::start(&strs(&args));
    c.send(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"host","version":"1"}}}));
    assert_eq!(c.recv()["id"], 0);
    c.send(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
    let pad = "x".repeat(2000);
    let calls = 1500; // 3 MB of requests, more than one window
    for round in 0..3 {
        // Written by a thread: the test must read answers while it writes.
        let lines: String = (1..=calls)
            .map(|i| {
                format!(
                    "{}\n",
                    json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"echo","arguments":{"text":format!("{i}{pad}")}}})
                )
            })
            .collect();
        c.send_raw_in_background(lines);
        for i in 1..=calls {
            let r = c.recv();
            assert_eq!(r["id"], i, "round {round}");
            assert!(
                r["result"]["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .starts_with(&i.to_string())
            );
        }
        c.join_writer();
    }
}
