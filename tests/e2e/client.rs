//! Our client binary against our server binary, driven through its
//! stdin/stdout as an AI host would.

use crate::common::*;
use serde_json::json;
use std::path::Path;

/// The client's connection flags for the test server.
fn client_args(port: u16, key: &Path, known_hosts: &Path) -> Vec<String> {
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

/// A gateway over alpha and beta, and client args whose known_hosts holds
/// `known_hosts(server, host key line)`.
fn setup_with(known_hosts: impl Fn(&Server, &str) -> String) -> (Server, Vec<String>) {
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &[]), "beta": fixture("beta", &[])}),
        &[],
    );
    let kh = srv.path("known_hosts");
    std::fs::write(&kh, known_hosts(&srv, &srv.host_pub())).unwrap();
    let args = client_args(srv.port, &srv.key, &kh);
    (srv, args)
}

/// The same, with the server's real host key listed.
fn setup() -> (Server, Vec<String>) {
    setup_with(|s, k| format!("[127.0.0.1]:{} {k}\n", s.port))
}

fn start(args: &[String]) -> StdioClient {
    StdioClient::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Our client, started and through the MCP handshake.
fn initialized(args: &[String]) -> StdioClient {
    let mut c = start(args);
    let init = c.initialize();
    assert!(init["result"].is_object(), "{init}");
    c
}

#[test]
fn requests_and_their_ids_pass_through_unchanged() {
    let (_srv, args) = setup();
    let mut c = start(&args);
    c.send(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"host","version":"1"}}}));
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
    assert_eq!(names(&tools, "tools").len(), 14);
}

#[test]
fn notifications_pass_through_in_order_before_their_answer() {
    let (_srv, args) = setup();
    let mut c = initialized(&args);
    c.send(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"progress","arguments":{},"_meta":{"progressToken":5}}}));
    assert_eq!(c.recv()["method"], "notifications/message");
    for i in 1..=3 {
        let p = c.recv();
        assert_eq!(p["method"], "notifications/progress");
        assert_eq!(p["params"]["progress"], i);
    }
    assert_eq!(c.recv()["id"], 2);
}

#[test]
fn server_to_client_requests_round_trip_through_the_client() {
    let (_srv, args) = setup();
    let mut c = initialized(&args);
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
}

#[test]
fn stdin_eof_still_delivers_the_answer_in_flight_then_exits_0() {
    let (_srv, args) = setup();
    let mut c = initialized(&args);
    c.send(&json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"slow","arguments":{"ms":400}}}));
    c.close_stdin();
    assert_eq!(c.recv()["id"], 4);
    assert!(c.wait().success(), "{}", c.stderr());
}

#[test]
fn hashed_known_hosts_entries_work() {
    let (srv, args) = setup();
    let kh = srv.path("known_hosts");
    ssh_keygen(&["-H", "-f", kh.to_str().unwrap()]);
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    let mut c = start(&args);
    assert_eq!(c.request("ping", json!({}))["result"], json!({}));
}

/// The client gives up before it logs in. Only the server's log can tell
/// whether it authenticated first (it exits before any session either way).
#[test]
fn a_host_key_that_does_not_match_known_hosts_is_refused_before_login() {
    let (_, other) = m2m_mcp_server_ssh_server::keys::generate_ed25519("impostor");
    let (srv, args) = setup_with(|s, _| format!("[127.0.0.1]:{} {other}\n", s.port));
    let mut c = start(&args);
    assert!(!c.wait().success());
    let err = c.stderr();
    assert!(
        err.contains("does not match") && err.contains("SHA256:") && err.contains("[127.0.0.1]:"),
        "{err}"
    );
    assert!(
        !srv.log().contains("authenticated"),
        "the client authenticated anyway"
    );
}

#[test]
fn a_host_missing_from_known_hosts_is_refused() {
    let (_srv, args) = setup_with(|_, _| String::new());
    let mut c = start(&args);
    assert!(!c.wait().success());
    assert!(c.stderr().contains("is not in"), "{}", c.stderr());
}

#[test]
fn disabled_host_key_checking_connects_with_a_warning() {
    let (_srv, mut args) = setup_with(|_, _| String::new());
    args.push("--disable-host-key-checking".into());
    let mut c = start(&args);
    assert_eq!(c.request("ping", json!({}))["result"], json!({}));
    // Once it has exited, all of its stderr has been read.
    c.close_stdin();
    assert!(c.wait().success(), "{}", c.stderr());
    assert!(
        c.stderr().contains("host key checking is disabled"),
        "{}",
        c.stderr()
    );
}

/// A key API in token mode, and client args for `--use-key-server` with a
/// client key that does not exist yet and no known_hosts:
/// (server, args, token file, client key, temp dir).
fn key_server_mode() -> (Server, Vec<String>, String, std::path::PathBuf, TempDir) {
    let dir = TempDir::new("tokc");
    let tf = dir.path().join("token");
    std::fs::write(&tf, "client-token-0123456789\n").unwrap();
    let tf = tf.display().to_string();
    let (srv, api) = Server::start_with_key_api(alpha(), &["--key-server-token-file", &tf]);
    let key = dir.path().join("fresh_client_key");
    let mut args = client_args(srv.port, &key, "/nonexistent".as_ref());
    args.extend([
        "--use-key-server".into(),
        "--key-server-port".into(),
        api.to_string(),
    ]);
    (srv, args, tf, key, dir)
}

#[test]
fn key_server_mode_without_the_token_fails_with_401() {
    let (_srv, args, ..) = key_server_mode();
    let mut c = start(&args);
    assert!(!c.wait().success());
    assert!(c.stderr().contains("401"), "{}", c.stderr());
}

/// No known_hosts: the host key it gets in with is the one the key API gave.
#[test]
fn key_server_mode_registers_a_fresh_key_and_gets_in_on_the_fetched_host_key() {
    let (srv, mut args, tf, key, _dir) = key_server_mode();
    args.extend(["--key-server-token-file".into(), tf]);
    let c = initialized(&args);
    assert_eq!(mode(&key), 0o600);
    let registered = std::fs::read_to_string(srv.path("registered_clients")).unwrap();
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    assert!(registered.contains(public.split_whitespace().nth(1).unwrap()));
    drop(c);
}

#[test]
fn sigterm_ends_the_client_cleanly_with_exit_0() {
    let (_srv, args) = setup();
    let mut c = start(&args);
    assert_eq!(c.request("ping", json!({}))["result"], json!({}));
    signal(c.pid(), libc::SIGTERM);
    assert!(c.wait().success(), "{}", c.stderr());
}

#[test]
fn an_unauthorized_key_ends_the_client_with_an_authentication_error() {
    let (srv, mut args) = setup();
    let (other, _) = client_key(srv.dir.path(), "nobody");
    let i = args.iter().position(|x| x == "--client-key").unwrap();
    args[i + 1] = other.display().to_string();
    let mut c = start(&args);
    assert!(!c.wait().success());
    assert!(
        c.stderr().contains("authentication as mcp"),
        "{}",
        c.stderr()
    );
}

#[test]
fn a_server_that_goes_away_ends_the_client_non_zero_with_a_clear_line() {
    let (mut srv, args) = setup();
    let mut c = start(&args);
    assert_eq!(c.request("ping", json!({}))["result"], json!({}));
    signal(srv.pid(), libc::SIGTERM);
    srv.wait_exit();
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
    let (_srv, args) = setup();
    let mut c = initialized(&args);
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
            assert!(text(&r).starts_with(&i.to_string()), "round {round}: {r}");
        }
        c.join_writer();
    }
}
