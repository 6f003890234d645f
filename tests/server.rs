//! End-to-end: the real server binary, real SSH clients (ssh2 and OpenSSH),
//! real child processes (the fixture MCP server).

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::process::Command;

fn two_children() -> Value {
    json!({"alpha": fixture("alpha", &[]), "beta": fixture("beta", &["--page-size", "3"])})
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list["result"][field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn merged_gateway_serves_every_method_through_two_children() {
    let srv = Server::start(two_children(), &[]);
    let mut c = srv.connect();
    let init = c.initialize();
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "m2m-mcp-server-ssh-server"
    );
    let caps = &init["result"]["capabilities"];
    assert_eq!(caps["tools"]["listChanged"], true);
    assert_eq!(caps["resources"]["subscribe"], true);
    let instr = init["result"]["instructions"].as_str().unwrap();
    assert!(
        instr.contains("[alpha] fixture alpha; client said \"itest\""),
        "{instr}"
    );

    // Full lists across both children's pages, duplicates renamed in config order.
    let tools = c.request("tools/list", json!({}));
    let t = names(&tools, "tools");
    assert_eq!(t.len(), 14, "{t:?}");
    assert_eq!(
        &t[..7],
        [
            "echo", "add", "whoami", "progress", "sample", "slow", "crash"
        ]
    );
    assert_eq!(
        &t[7..],
        [
            "echo_1",
            "add_1",
            "whoami_1",
            "progress_1",
            "sample_1",
            "slow_1",
            "crash_1"
        ]
    );
    assert!(tools["result"].get("nextCursor").is_none());

    let r = c.request("tools/call", json!({"name": "whoami_1", "arguments": {}}));
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("beta ")
    );
    let r = c.request(
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "hi");
    assert_eq!(
        r["result"]["_meta"]["from"], "alpha",
        "payload passes through"
    );

    // String ids come back unchanged.
    c.send(&json!({"jsonrpc": "2.0", "id": "str-id", "method": "tools/call", "params": {"name": "add_1", "arguments": {"a": 2, "b": 3}}}));
    let r = c.recv();
    assert_eq!(r["id"], "str-id");
    assert_eq!(r["result"]["content"][0]["text"], "5");

    // Prompts.
    let p = c.request("prompts/list", json!({}));
    assert_eq!(names(&p, "prompts"), ["greet", "greet_1"]);
    let g = c.request(
        "prompts/get",
        json!({"name": "greet_1", "arguments": {"who": "bob"}}),
    );
    assert_eq!(
        g["result"]["messages"][0]["content"]["text"],
        "hello bob from beta"
    );

    // Resources, templates, read, subscribe, unsubscribe.
    let rl = c.request("resources/list", json!({}));
    assert_eq!(rl["result"]["resources"].as_array().unwrap().len(), 2);
    let tl = c.request("resources/templates/list", json!({}));
    assert_eq!(
        tl["result"]["resourceTemplates"].as_array().unwrap().len(),
        2
    );
    let rr = c.request("resources/read", json!({"uri": "fixture://beta/info"}));
    assert_eq!(
        rr["result"]["contents"][0]["text"],
        "fixture://beta/info served by beta"
    );
    let rr = c.request("resources/read", json!({"uri": "fixture://alpha/items/42"}));
    assert_eq!(
        rr["result"]["contents"][0]["text"],
        "fixture://alpha/items/42 served by alpha"
    );
    assert_eq!(
        c.request("resources/subscribe", json!({"uri": "fixture://beta/info"}))["result"],
        json!({})
    );
    assert_eq!(
        c.request(
            "resources/unsubscribe",
            json!({"uri": "fixture://beta/info"})
        )["result"],
        json!({})
    );

    // Completion by ref, logging fan-out, ping.
    let cp = c.request("completion/complete", json!({"ref": {"type": "ref/prompt", "name": "greet_1"}, "argument": {"name": "who", "value": ""}}));
    assert_eq!(cp["result"]["completion"]["values"][0], "beta-1");
    let cr = c.request("completion/complete", json!({"ref": {"type": "ref/resource", "uri": "fixture://alpha/items/{id}"}, "argument": {"name": "id", "value": ""}}));
    assert_eq!(cr["result"]["completion"]["values"][0], "alpha-1");
    assert_eq!(
        c.request("logging/setLevel", json!({"level": "debug"}))["result"],
        json!({})
    );
    assert_eq!(c.request("ping", json!({}))["result"], json!({}));

    // Unknown names and methods.
    for (m, p, needle) in [
        ("tools/call", json!({"name": "nope"}), "unknown tool: nope"),
        (
            "prompts/get",
            json!({"name": "nope"}),
            "unknown prompt: nope",
        ),
        (
            "resources/read",
            json!({"uri": "nope://x"}),
            "unknown resource: nope://x",
        ),
    ] {
        let e = c.request(m, p);
        assert_eq!(e["error"]["code"], -32602, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{e}"
        );
    }
    let e = c.request("server/discover", json!({}));
    assert_eq!(e["error"]["code"], -32601);
    let e = c.request("tools/list", json!({"cursor": "made-up"}));
    assert_eq!(e["error"]["code"], -32602);

    // Notifications from a child reach the client; progress carries the client's token.
    let mut others = Vec::new();
    let r = c.request_with(
        "tools/call",
        json!({"name": "progress_1", "arguments": {}, "_meta": {"progressToken": "tok-7"}}),
        &mut others,
    );
    assert_eq!(r["result"]["content"][0]["text"], "done");
    assert!(
        others
            .iter()
            .any(|m| m["method"] == "notifications/message"
                && m["params"]["data"] == "hello from beta"),
        "{others:?}"
    );
    let progress: Vec<&Value> = others
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3);
    assert!(
        progress
            .iter()
            .all(|m| m["params"]["progressToken"] == "tok-7")
    );

    // A child asks the client (sampling, roots); the answers go back to it.
    c.send(&json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "sample_1", "arguments": {}}}));
    let s = c.recv();
    assert_eq!(s["method"], "sampling/createMessage");
    assert!(s["id"].is_u64());
    c.send(&json!({"jsonrpc": "2.0", "id": s["id"], "result": {"role": "assistant", "content": {"type": "text", "text": "from client"}, "model": "m"}}));
    let roots = c.recv();
    assert_eq!(roots["method"], "roots/list");
    c.send(
        &json!({"jsonrpc": "2.0", "id": roots["id"], "result": {"roots": [{"uri": "file:///w"}]}}),
    );
    let done = c.recv();
    assert_eq!(done["id"], 77);
    let sc = &done["result"]["structuredContent"];
    assert_eq!(sc["sampling"]["id"], "s1", "child sees its own id");
    assert_eq!(sc["sampling"]["result"]["content"]["text"], "from client");
    assert_eq!(sc["roots"]["result"]["roots"][0]["uri"], "file:///w");

    // Cancellation goes to the child that holds the request, with its id.
    c.send(&json!({"jsonrpc": "2.0", "id": 90, "method": "tools/call", "params": {"name": "slow_1", "arguments": {"ms": 300}}}));
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 90}}));
    assert!(srv.wait_log("fixture beta: cancelled"), "{}", srv.log());
    assert!(!srv.log().contains("fixture alpha: cancelled"));
    assert_eq!(
        c.request("ping", json!({}))["result"],
        json!({}),
        "cancelled request got no answer"
    );
}

/// Whichever child's reader watches the socket, a child busy with a slow
/// call holds up nobody: a call to the other one is answered first.
#[test]
fn a_slow_child_holds_up_no_call_to_the_others() {
    let srv = Server::start(two_children(), &[]);
    let mut c = srv.connect();
    c.initialize();
    c.request("tools/list", json!({}));
    for (slow, fast) in [("slow", "echo_1"), ("slow_1", "echo")] {
        c.send(&json!({"jsonrpc": "2.0", "id": "s", "method": "tools/call",
            "params": {"name": slow, "arguments": {"ms": 2000}}}));
        for i in 0..3 {
            c.send(&json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": fast, "arguments": {"text": format!("fast {i}")}}}));
        }
        let order: Vec<Value> = (0..4).map(|_| c.recv()["id"].clone()).collect();
        assert_eq!(
            order,
            [json!(0), json!(1), json!(2), json!("s")],
            "{slow} / {fast}"
        );
    }
}

#[test]
fn bad_lines_get_errors_and_the_session_goes_on() {
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &[])}),
        &["--max-line-bytes", "4096"],
    );
    let mut c = srv.connect();
    c.initialize();
    c.send_raw(b"this is not json\n");
    let e = c.recv();
    assert_eq!(e["error"]["code"], -32700);
    assert_eq!(e["id"], Value::Null);
    c.send_raw(b"{\"id\": 5, \"method\": \"ping\"}\n");
    assert_eq!(c.recv()["error"]["code"], -32600);
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}\n",
        "a".repeat(10_000)
    );
    c.send_raw(big.as_bytes());
    let e = c.recv();
    assert_eq!(e["error"]["code"], -32600);
    assert!(e["error"]["message"].as_str().unwrap().contains("4096"));
    let r = c.request(
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "still here"}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "still here");
}

/// Many calls in flight on two children, each child answering with a burst
/// of notifications: every message arrives once, each child's in its order.
/// Child output is delivered both by the reader threads (session idle) and by
/// the session thread (busy with the client's requests), so this runs both.
#[test]
fn pipelined_calls_and_notification_bursts_arrive_complete_and_in_order() {
    let srv = Server::start(two_children(), &[]);
    let mut c = srv.connect();
    c.initialize();
    let calls = 120;
    let burst = 25;
    for i in 0..calls {
        let (tool, args) = match i % 3 {
            0 => ("progress", json!({"count": burst})),
            1 => ("progress_1", json!({"count": burst})),
            _ => ("echo", json!({"text": format!("e{i}")})),
        };
        c.send(&json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": tool, "arguments": args, "_meta": {"progressToken": format!("t{i}")}}}));
    }
    let mut seen = vec![0u64; calls];
    let mut answered = vec![false; calls];
    let mut left = calls;
    while left > 0 {
        let m = c.recv();
        if m["method"] == "notifications/progress" {
            let i: usize = m["params"]["progressToken"].as_str().unwrap()[1..]
                .parse()
                .unwrap();
            let p = m["params"]["progress"].as_u64().unwrap();
            assert!(!answered[i], "progress after the answer: {m}");
            assert_eq!(p, seen[i] + 1, "progress out of order for call {i}");
            seen[i] = p;
        } else if let Some(i) = m["id"].as_u64() {
            let i = i as usize;
            assert!(!answered[i], "answered twice: {m}");
            answered[i] = true;
            left -= 1;
            match i % 3 {
                2 => assert_eq!(m["result"]["content"][0]["text"], format!("e{i}")),
                _ => {
                    assert_eq!(m["result"]["content"][0]["text"], "done", "{m}");
                    assert_eq!(seen[i], burst, "call {i} lost progress notifications");
                }
            }
        }
    }
    // The session is still in order afterwards.
    let r = c.request(
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "3");
}

#[test]
fn large_message_round_trips_intact() {
    let srv = Server::start(json!({"alpha": fixture("alpha", &["--echo-only"])}), &[]);
    let mut c = srv.connect();
    c.initialize();
    let text: String = (0..5 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let r = c.request(
        "tools/call",
        json!({"name": "echo", "arguments": {"text": text}}),
    );
    assert_eq!(
        r["result"]["content"][0]["text"].as_str().map(str::len),
        Some(text.len())
    );
    assert!(r["result"]["content"][0]["text"] == text.as_str());
}

#[test]
fn failing_children_are_left_out_and_a_crash_fails_only_its_requests() {
    let srv = Server::start(
        json!({
            "alpha": fixture("alpha", &[]),
            "broken": fixture("broken", &["--fail-init"]),
            "missing": {"command": "/nonexistent/mcp-server"},
            "beta": fixture("beta", &[]),
        }),
        &[],
    );
    let mut c = srv.connect();
    let init = c.initialize();
    assert!(init["result"].is_object(), "{init}");
    let log = srv.log();
    assert!(log.contains("server missing failed to start"), "{log}");
    assert!(srv.wait_log("server broken left out: initialize failed: fixture refuses to initialize; stderr: fixture broken starting"));
    let t = names(&c.request("tools/list", json!({})), "tools");
    assert_eq!(t.len(), 14);
    let e = c.request("tools/call", json!({"name": "crash", "arguments": {}}));
    assert_eq!(e["error"]["code"], -32002, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("alpha"),
        "{e}"
    );
    let r = c.request(
        "tools/call",
        json!({"name": "echo_1", "arguments": {"text": "beta lives"}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "beta lives");
    let e = c.request("tools/call", json!({"name": "echo", "arguments": {}}));
    assert!(
        e["error"]["message"].as_str().unwrap().contains("alpha"),
        "{e}"
    );
}

#[test]
fn env_and_cwd_from_the_config_reach_the_child() {
    let dir = TempDir::new("cwd");
    let mut spec = fixture("alpha", &[]);
    spec["env"] = json!({"FIXTURE_ENV": "from-config"});
    spec["cwd"] = json!(dir.path());
    let srv = Server::start(json!({"alpha": spec}), &[]);
    let mut c = srv.connect();
    c.initialize();
    let r = c.request("tools/call", json!({"name": "whoami", "arguments": {}}));
    let text = r["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("env=from-config"), "{text}");
    assert!(
        text.contains(&format!("cwd={}", dir.path().display())),
        "{text}"
    );
}

#[test]
fn exec_selects_servers_and_subsystem_mcp_works() {
    let srv = Server::start(two_children(), &[]);
    // exec "beta": only beta's tools, under their own names.
    let sess = srv.ssh2();
    let mut ch = sess.channel_session().unwrap();
    ch.exec("beta").unwrap();
    let mut c = Mcp::new(sess, ch);
    c.initialize();
    let t = names(&c.request("tools/list", json!({})), "tools");
    assert_eq!(t.len(), 7);
    assert_eq!(t[0], "echo");
    let r = c.request("tools/call", json!({"name": "whoami", "arguments": {}}));
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("beta")
    );

    // Unknown name: one line on stderr, exit status 1.
    let sess = srv.ssh2();
    let mut ch = sess.channel_session().unwrap();
    ch.exec("gamma").unwrap();
    let mut err = String::new();
    ch.stderr().read_to_string(&mut err).unwrap();
    let _ = read_all(&mut ch);
    ch.wait_close().unwrap();
    assert!(err.contains("unknown MCP server(s): gamma"), "{err}");
    assert_eq!(ch.exit_status().unwrap(), 1);

    // pty-req is refused and the session goes on.
    let sess = srv.ssh2();
    let mut ch = sess.channel_session().unwrap();
    assert!(ch.request_pty("xterm", None, None).is_err());
    ch.shell().unwrap();
    let mut c = Mcp::new(sess, ch);
    assert_eq!(
        c.initialize()["result"]["serverInfo"]["name"],
        "m2m-mcp-server-ssh-server"
    );

    // subsystem mcp.
    let sess = srv.ssh2();
    let mut ch = sess.channel_session().unwrap();
    ch.subsystem("mcp").unwrap();
    let mut c = Mcp::new(sess, ch);
    c.initialize();
    assert_eq!(
        names(&c.request("tools/list", json!({})), "tools").len(),
        14
    );
}

/// OpenSSH with `ServerAliveInterval` gives up on a server that leaves its
/// keepalive probes unanswered; libssh queues those answers itself, so an
/// idle session must still send them.
#[test]
fn openssh_keepalives_are_answered_while_the_session_is_idle() {
    let srv = Server::start(json!({"alpha": fixture("alpha", &[])}), &[]);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 2, "b": 3}}});
    // Idle for 4 s, longer than 2 unanswered probes at 1 s would allow.
    let script = format!(
        "(printf '%s\\n' '{init}'; sleep 4; printf '%s\\n' '{call}') | timeout 30 ssh -T -p {} \
         -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
         -o LogLevel=ERROR -o IdentitiesOnly=yes -o ServerAliveInterval=1 \
         -o ServerAliveCountMax=2 -i {} mcp@127.0.0.1",
        srv.port,
        srv.key.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let lines = json_lines(&out.stdout);
    assert!(
        out.status.success(),
        "ssh failed: {}\n{lines:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = lines
        .iter()
        .find(|l| l["id"] == 2)
        .expect("answer after idle");
    assert_eq!(answer["result"]["content"][0]["text"], "5");
}

#[test]
fn openssh_client_works_with_shell_exec_and_subsystem() {
    if std::process::Command::new("ssh")
        .arg("-V")
        .output()
        .is_err()
    {
        panic!("OpenSSH client (ssh) is required for this test");
    }
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
        assert_eq!(lines[1]["result"]["content"][0]["text"], "via openssh");
        assert!(
            out.status.success(),
            "{extra:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn only_the_authorized_public_key_gets_in() {
    let srv = Server::start(json!({"alpha": fixture("alpha", &[])}), &[]);
    let (other, _) = client_key(srv.dir.path(), "stranger");

    assert_only_authorized_keys_get_in(srv.port, &srv.key, Some(&other));
    let out = openssh(srv.port, &other, &["mcp@127.0.0.1"], "");
    assert!(!out.status.success());

    // A key added to the file works on the next connection, without restart.
    let public = std::fs::read_to_string(srv.dir.path().join("stranger.pub")).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(srv.dir.path().join("authorized_keys"))
        .unwrap();
    writeln!(f, "# added later\nno-pty {}", public.trim()).unwrap();
    drop(f);
    let _ = ssh2_session(srv.port, &other);
}

#[test]
fn key_exchange_and_auth_share_one_login_deadline() {
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &[])}),
        &["--login-grace-time", "2", "--max-sessions", "1"],
    );
    let logs_in = || {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        let mut sess = ssh2::Session::new().unwrap();
        sess.set_tcp_stream(tcp);
        sess.set_timeout(10_000);
        sess.handshake().is_ok()
            && sess
                .userauth_pubkey_file("mcp", None, &srv.key, None)
                .is_ok()
    };
    let start = std::time::Instant::now();

    // s1 never sends a byte: it holds the only slot until the deadline,
    // then the server hangs up on it and frees the slot.
    let banner = bytes_until_hangup(&srv, 15);
    assert!(banner.starts_with(b"SSH-2.0-"), "{banner:?}");
    assert!(start.elapsed() >= std::time::Duration::from_millis(1500));
    assert!(srv.wait_log("s1: connection closed; 0 open"));
    assert!(
        srv.log()
            .contains("s1: key exchange failed: the client hung up or stayed silent"),
        "{}",
        srv.log()
    );
    assert!(logs_in(), "s2 could not log in");
    assert!(srv.wait_log("s2: connection closed; 0 open"));

    // Key exchange and authentication share the deadline: s3 takes 1.2 s
    // before key exchange and 1.2 s after it and is refused, though each
    // part alone fits (with a deadline per part it would get in).
    let tcp = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let mut sess = ssh2::Session::new().unwrap();
    sess.set_tcp_stream(tcp);
    sess.set_timeout(10_000);
    sess.handshake().expect("key exchange within the deadline");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(
        sess.userauth_pubkey_file("mcp", None, &srv.key, None)
            .is_err(),
        "authenticated after the login deadline"
    );
    assert!(srv.wait_log("s3: authentication did not complete"));
    assert!(srv.wait_log("s3: connection closed; 0 open"));
    // A prompt client still gets in.
    assert!(logs_in(), "s4 could not log in");
}

#[test]
fn clients_stalled_before_login_cannot_take_every_slot() {
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &[])}),
        &["--max-startups", "2", "--max-sessions", "8"],
    );
    // s1 logs in and stays: it no longer counts as logging in.
    let mut c = srv.connect();
    c.initialize();
    // s2 and s3 stall before key exchange; each got the server's banner.
    let stall = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut banner = [0u8; 8];
        s.read_exact(&mut banner).unwrap();
        assert_eq!(&banner, b"SSH-2.0-");
        s
    };
    let stalled = [stall(), stall()];
    // s4 is refused at once: closed without a banner.
    let got = bytes_until_hangup(&srv, 5);
    assert!(got.is_empty(), "{got:?}");
    assert!(srv.wait_log("s4: refused: 2 connections still logging in"));
    // The logged-in session is unaffected.
    let r = c.request("tools/list", json!({}));
    assert!(r["result"]["tools"].is_array(), "{r}");
    // Stalled clients that leave give their places back.
    drop(stalled);
    assert!(srv.wait_log("s2: connection closed"));
    assert!(srv.wait_log("s3: connection closed"));
    let mut c2 = srv.connect();
    c2.initialize();
}

#[test]
fn children_inherit_no_socket_or_other_fd_of_the_server() {
    // b's child (a replacement spare, or a fresh one) starts while a's
    // connection is open: it must get only its three pipes, not the listener
    // or a's socket (which would also keep a's connection open after the
    // server closed it).
    let srv = Server::start(json!({"alpha": fixture("alpha", &[])}), &[]);
    let mut a = srv.connect();
    a.initialize();
    let mut b = srv.connect();
    b.initialize();
    for c in [&mut a, &mut b] {
        let r = c.request("tools/call", json!({"name": "whoami", "arguments": {}}));
        let text = r["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.ends_with(" fds=0,1,2"), "{text}");
    }
}

#[test]
fn a_server_out_of_fds_pauses_accepting_instead_of_spinning() {
    let srv = Server::start(json!({"alpha": fixture("alpha", &[])}), &[]);
    let mut c = srv.connect();
    c.initialize();
    let pid = srv.pid() as libc::pid_t;
    // RLIMIT_NOFILE bounds fd numbers: at the lowest free one, every new fd
    // (the next accept's among them) fails with EMFILE.
    let open: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
    // Only the soft limit moves, so the test can raise it back unprivileged.
    let set_soft_limit = |soft: u64| {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a null new limit reads the current one into a valid struct.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut cur) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: cur.rlim_max,
        };
        // SAFETY: a valid rlimit struct; the old one is not wanted.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
        cur.rlim_cur
    };
    let old = set_soft_limit(lowest_free);
    // The kernel completes the handshake; the server cannot accept it.
    let mut waiting = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    assert!(srv.wait_log("pausing new connections"), "{}", srv.log());
    // utime + stime, in clock ticks.
    let cpu = || -> u64 {
        let f = stat_fields(srv.pid()).unwrap();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let ticks = cpu() - before;
    // A spinning accept loop burns a whole CPU: about 100 ticks a second.
    assert!(ticks < 30, "{ticks} ticks of CPU in 1 s while out of fds");
    // Room again: the waiting client gets its banner, the open session works.
    set_soft_limit(old);
    waiting
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut banner = [0u8; 8];
    std::io::Read::read_exact(&mut waiting, &mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    let r = c.request(
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "still here"}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "still here");
}

#[test]
fn disconnect_mid_call_leaves_no_child_thread_or_fd_behind() {
    let srv = Server::start(two_children(), &["--warm-spares", "0"]);
    let pid = srv.pid();
    // Warm up once so lazily created process-wide state is counted in the baseline.
    {
        let mut c = srv.connect();
        c.initialize();
    }
    assert!(eventually(|| children_of(pid).is_empty()));
    assert!(
        eventually(|| thread_count(pid) == 1),
        "threads: {}",
        thread_count(pid)
    );
    let (_, base_fds) = settled_counts(pid);
    for _ in 0..3 {
        let mut c = srv.connect();
        c.initialize();
        assert_eq!(children_of(pid).len(), 2);
        c.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 30000}}}));
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(c); // TCP close without a clean SSH goodbye
    }
    assert_back_to(pid, 0, 1, base_fds);
}

#[test]
fn sigterm_ends_sessions_reaps_children_and_exits_zero() {
    let mut srv = Server::start(two_children(), &[]);
    let pid = srv.pid();
    let mut c = srv.connect();
    c.initialize();
    // Two session children plus one warm spare per server.
    assert!(
        eventually(|| children_of(pid).len() == 4),
        "{:?}",
        children_of(pid)
    );
    let kids = children_of(pid);
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let end = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < end, "server did not exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", srv.log());
    for k in kids {
        assert!(
            !std::path::Path::new(&format!("/proc/{k}")).exists(),
            "child {k} survived"
        );
    }
}

#[test]
fn warm_spares_are_handed_out_replaced_and_never_dead() {
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &[])}),
        &["--warm-spares", "1"],
    );
    let pid = srv.pid();
    assert!(
        eventually(|| children_of(pid).len() == 1),
        "no spare started"
    );
    let spare = children_of(pid)[0];
    let whoami = |c: &mut Mcp| -> u32 {
        let r = c.request("tools/call", json!({"name": "whoami", "arguments": {}}));
        let t = r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        t.split("pid=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut c = srv.connect();
    c.initialize();
    assert_eq!(
        whoami(&mut c),
        spare,
        "the session did not get the warm spare"
    );
    // A replacement spare starts beside the session's child.
    assert!(eventually(|| children_of(pid).len() == 2));
    drop(c);
    assert!(eventually(|| children_of(pid).len() == 1));
    // A spare that dies is not handed out.
    let spare = children_of(pid)[0];
    std::process::Command::new("kill")
        .arg("-9")
        .arg(spare.to_string())
        .status()
        .unwrap();
    let mut c = srv.connect();
    c.initialize();
    assert_ne!(whoami(&mut c), spare);
    assert!(srv.wait_log("exited; replacing"), "{}", srv.log());
}

#[test]
fn hundreds_of_sessions_leave_threads_fds_and_children_at_baseline() {
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &["--echo-only"])}),
        &["--warm-spares", "1"],
    );
    let pid = srv.pid();
    {
        let mut c = srv.connect();
        c.initialize();
    }
    assert!(eventually(|| children_of(pid).len() == 1));
    let (threads, fds) = settled_counts(pid);
    for i in 0..300 {
        let mut c = srv.connect();
        if i % 2 == 0 {
            c.initialize();
        }
    }
    assert_back_to(pid, 1, threads, fds);
}

#[test]
fn name_prefix_exposes_a_servers_tools_and_prompts_under_it() {
    let mut beta = fixture("beta", &["--echo-only"]);
    beta["namePrefix"] = json!("beta.");
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &["--echo-only"]), "beta": beta}),
        &[],
    );
    let mut c = srv.connect();
    c.initialize();
    assert_eq!(
        names(&c.request("tools/list", json!({})), "tools"),
        ["echo", "beta.echo"]
    );
    assert_eq!(
        names(&c.request("prompts/list", json!({})), "prompts"),
        ["greet", "beta.greet"]
    );
    let r = c.request(
        "tools/call",
        json!({"name": "beta.echo", "arguments": {"text": "via prefix"}}),
    );
    assert_eq!(r["result"]["_meta"]["from"], "beta");
    let g = c.request(
        "prompts/get",
        json!({"name": "beta.greet", "arguments": {"who": "x"}}),
    );
    assert_eq!(
        g["result"]["messages"][0]["content"]["text"],
        "hello x from beta"
    );
}

/// A child that writes faster than the client reads is held back by its
/// pipe: the server's memory stays bounded, and once the client reads again
/// every message arrives.
#[test]
fn a_client_that_stops_reading_holds_back_the_child_not_server_memory() {
    let srv = Server::start(json!({"alpha": fixture("alpha", &[])}), &[]);
    let mut c = srv.connect();
    c.initialize();
    let rss = || -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap();
        let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss();
    // About 45 MB of notifications, read by nobody for now.
    let count = 300_000;
    c.send(
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "progress",
        "arguments": {"count": count}, "_meta": {"progressToken": "flood"}}}),
    );
    let child_blocked = || {
        children_of(srv.pid()).into_iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/wchan"))
                .is_ok_and(|w| w.contains("pipe_write"))
        })
    };
    assert!(
        eventually(child_blocked),
        "no child ended up waiting on its full stdout pipe"
    );
    // Long enough for a server without a bound to swallow all 45 MB.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Held back for good, not just between two reads of a busy server: blocked
    // in every sample over half a second.
    let stays_blocked = || {
        (0..5).all(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            child_blocked()
        })
    };
    assert!(
        eventually(stays_blocked),
        "the child is no longer held back"
    );
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 24 * 1024,
        "server RSS grew by {grown} KiB for a client that does not read"
    );
    let mut progress = 0u64;
    loop {
        let m = c.recv();
        if m["method"] == "notifications/progress" {
            progress += 1;
            assert_eq!(m["params"]["progress"], progress);
        } else if m["id"] == 7 {
            break;
        }
    }
    assert_eq!(progress, count);
}

/// A client that sends faster than a child reads is held back by flow
/// control: while the child is stuck, the server does not take the client's
/// megabytes into memory; once it reads again, every request is answered.
#[test]
fn a_child_that_stops_reading_holds_back_the_client_not_server_memory() {
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &["--echo-only", "--stall"])}),
        &[],
    );
    let rss = || -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap();
        let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // The child stalls for 4 s, then 40 requests of 1 MB each follow.
    let calls = 40;
    let text = "z".repeat(1 << 20);
    let mut input = String::new();
    input.push_str(&format!("{}\n", json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})));
    input.push_str(&format!(
        "{}\n",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    ));
    input.push_str(&format!("{}\n", json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "stall", "arguments": {"ms": 4000}}})));
    for i in 0..calls {
        input.push_str(&format!("{}\n", json!({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}})));
    }
    let dir = TempDir::new("stall");
    std::fs::write(dir.path().join("in"), input).unwrap();
    let before = rss();
    let mut ssh = openssh_command(srv.port, &srv.key, &["mcp@127.0.0.1"])
        .stdin(std::fs::File::open(dir.path().join("in")).unwrap())
        .stdout(std::fs::File::create(dir.path().join("out")).unwrap())
        .spawn()
        .unwrap();
    // Within the stall: an unbounded server would hold the 40 MB by now.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 24 * 1024,
        "server RSS grew by {grown} KiB while the child was stuck"
    );
    assert!(ssh.wait().unwrap().success());
    let out = std::fs::read(dir.path().join("out")).unwrap();
    let lines = json_lines(&out);
    for i in 0..calls {
        let r = lines
            .iter()
            .find(|l| l["id"] == 100 + i)
            .expect("every request answered");
        assert_eq!(
            r["result"]["content"][0]["text"].as_str().map(str::len),
            Some(1 << 20)
        );
    }
}
