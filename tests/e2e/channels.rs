//! The SSH side of a session: which channel requests open MCP (shell, exec
//! with a server selection, subsystem mcp), what is refused, and OpenSSH as
//! the client.

use crate::common::*;
use serde_json::json;
use std::io::Read;

#[test]
fn exec_with_a_server_name_serves_only_that_server_under_its_own_names() {
    let srv = Server::start(two_children(), &[]);
    let mut c = srv.connect_with(|ch| ch.exec("beta"));
    c.initialize();
    let t = names(&c.request("tools/list", json!({})), "tools");
    assert_eq!(t.len(), 7, "{t:?}");
    assert_eq!(t[0], "echo");
    assert!(text(&c.call("whoami", json!({}))).starts_with("beta"));
}

#[test]
fn exec_with_an_unknown_server_name_says_so_on_stderr_and_exits_1() {
    let srv = Server::start(two_children(), &[]);
    let sess = srv.ssh2();
    let mut ch = sess.channel_session().unwrap();
    ch.exec("gamma").unwrap();
    let mut err = String::new();
    ch.stderr().read_to_string(&mut err).unwrap();
    let mut out = String::new();
    let _ = ch.read_to_string(&mut out);
    ch.wait_close().unwrap();
    assert!(err.contains("unknown MCP server(s): gamma"), "{err}");
    assert_eq!(ch.exit_status().unwrap(), 1);
    assert_eq!(out, "", "nothing on stdout");
}

#[test]
fn a_pty_request_is_refused_and_the_session_goes_on() {
    let srv = Server::start(alpha(), &[]);
    let mut c = srv.connect_with(|ch| {
        assert!(ch.request_pty("xterm", None, None).is_err());
        ch.shell()
    });
    assert_eq!(
        c.initialize()["result"]["serverInfo"]["name"],
        "m2m-mcp-server-ssh-server"
    );
}

#[test]
fn the_mcp_subsystem_serves_every_server() {
    let srv = Server::start(two_children(), &[]);
    let mut c = srv.connect_with(|ch| ch.subsystem("mcp"));
    c.initialize();
    assert_eq!(
        names(&c.request("tools/list", json!({})), "tools").len(),
        14
    );
}

#[test]
fn openssh_client_works_with_shell_exec_and_subsystem() {
    let srv = Server::start(two_children(), &[]);
    let input = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"ossh","version":"1"}}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo_1","arguments":{"text":"via openssh"}}}"#,
        "\n",
    );
    for extra in [
        vec!["mcp@127.0.0.1"],
        vec!["mcp@127.0.0.1", "alpha,beta"],
        vec!["-s", "mcp@127.0.0.1", "mcp"],
    ] {
        let out = openssh(srv.port, &srv.key, &extra, input);
        let lines = json_lines(&out.stdout);
        assert_eq!(
            lines.len(),
            2,
            "{extra:?}: {lines:?} stderr={}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(lines[0]["result"]["protocolVersion"], "2025-03-26");
        assert_eq!(text(&lines[1]), "via openssh");
        assert!(
            out.status.success(),
            "{extra:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// OpenSSH with `ServerAliveInterval` gives up on a server that leaves its
/// keepalive probes unanswered; libssh queues those answers itself, so an
/// idle session must still send them.
#[test]
fn openssh_keepalives_are_answered_while_the_session_is_idle() {
    let srv = Server::start(alpha(), &[]);
    let ssh = openssh_command(
        srv.port,
        &srv.key,
        &[
            "-o",
            "ServerAliveInterval=1",
            "-o",
            "ServerAliveCountMax=2",
            "mcp@127.0.0.1",
        ],
    );
    let mut c = StdioClient::spawn(ssh);
    c.initialize();
    // Idle for 4 s, longer than 2 unanswered probes at 1 s would allow.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(text(&c.call("add", json!({"a": 2, "b": 3}))), "5");
    c.close_stdin();
    assert!(c.wait().success(), "{}", c.stderr());
}
