//! Many and large messages: pipelining, ordering, no head-of-line blocking,
//! and back-pressure in both directions instead of server memory.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Whichever child's reader watches the socket, a child busy with a slow
/// call holds up nobody: a call to the other one is answered first.
#[test]
fn a_slow_child_holds_up_no_call_to_the_others() {
    let (_srv, mut c) = Server::with_session(two_children(), &[]);
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

/// Many calls in flight on two children, each child answering with a burst
/// of notifications: every message arrives once, each child's in its order.
/// Child output is delivered both by the reader threads (session idle) and by
/// the session thread (busy with the client's requests), so this runs both.
#[test]
fn pipelined_calls_and_notification_bursts_arrive_complete_and_in_order() {
    let (_srv, mut c) = Server::with_session(two_children(), &[]);
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
                2 => assert_eq!(text(&m), format!("e{i}")),
                _ => {
                    assert_eq!(text(&m), "done", "{m}");
                    assert_eq!(seen[i], burst, "call {i} lost progress notifications");
                }
            }
        }
    }
    // The session is still in order afterwards.
    assert_eq!(text(&c.call("add", json!({"a": 1, "b": 2}))), "3");
}

#[test]
fn large_message_round_trips_intact() {
    let (_srv, mut c) =
        Server::with_session(json!({"alpha": fixture("alpha", &["--echo-only"])}), &[]);
    let sent: String = (0..5 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let r = c.call("echo", json!({"text": sent}));
    let got = text(&r);
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the text came back changed");
}

/// Server RSS may grow by less than this while a peer is held back.
const RSS_BOUND_KIB: u64 = 24 * 1024;

/// A child that writes faster than the client reads is held back by its
/// pipe: the server's memory stays bounded, and once the client reads again
/// every message arrives.
#[test]
fn a_client_that_stops_reading_holds_back_the_child_not_server_memory() {
    let srv = Server::start(alpha(), &[]);
    let pid = srv.pid();
    let mut c = srv.session();
    let before = rss_kib(pid);
    // About 45 MB of notifications, read by nobody for now.
    let count = 300_000;
    c.send(
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "progress",
        "arguments": {"count": count}, "_meta": {"progressToken": "flood"}}}),
    );
    let child_blocked = || children_of(pid).into_iter().any(blocked_on_pipe_write);
    assert!(
        eventually(child_blocked),
        "no child ended up waiting on its full stdout pipe"
    );
    // Long enough for a server without a bound to swallow all 45 MB.
    std::thread::sleep(Duration::from_millis(1500));
    // Held back for good, not just between two reads of a busy server: blocked
    // in every sample over half a second.
    let stays_blocked = || {
        (0..5).all(|_| {
            std::thread::sleep(Duration::from_millis(100));
            child_blocked()
        })
    };
    assert!(
        eventually(stays_blocked),
        "the child is no longer held back"
    );
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(
        grown < RSS_BOUND_KIB,
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
    let pid = srv.pid();
    // The child stalls for 4 s, then 40 requests of 1 MB each follow.
    let calls = 40;
    let text_1mb = "z".repeat(1 << 20);
    let mut input = String::new();
    input.push_str(&format!("{}\n", json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})));
    input.push_str(&format!(
        "{}\n",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    ));
    input.push_str(&format!("{}\n", json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "stall", "arguments": {"ms": 4000}}})));
    for i in 0..calls {
        input.push_str(&format!("{}\n", json!({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text_1mb}}})));
    }
    let dir = TempDir::new("stall");
    std::fs::write(dir.path().join("in"), input).unwrap();
    let before = rss_kib(pid);
    let mut ssh = openssh_command(srv.port, &srv.key, &["mcp@127.0.0.1"])
        .stdin(std::fs::File::open(dir.path().join("in")).unwrap())
        .stdout(std::fs::File::create(dir.path().join("out")).unwrap())
        .spawn()
        .unwrap();
    // Within the stall: an unbounded server would hold the 40 MB by now.
    std::thread::sleep(Duration::from_millis(2500));
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(
        grown < RSS_BOUND_KIB,
        "server RSS grew by {grown} KiB while the child was stuck"
    );
    // Bounded: ssh runs under `timeout 60` (exit 124 when it ran out).
    let status = ssh.wait().unwrap();
    assert!(status.success(), "ssh: {status:?}");
    let out = std::fs::read(dir.path().join("out")).unwrap();
    let lines = json_lines(&out);
    for i in 0..calls {
        let r = lines
            .iter()
            .find(|l| l["id"] == 100 + i)
            .expect("every request answered");
        assert_eq!(text(r).len(), 1 << 20);
    }
}
