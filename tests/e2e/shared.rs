//! `"scope": "shared"`: one process (or a few) for every session, with
//! each session's ids, progress tokens, cancellations and subscriptions kept
//! apart, and a process that dies or hangs replaced.

use crate::common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn shared(name: &str, processes: u64) -> Value {
    let mut s = fixture(name, &[]);
    s["scope"] = json!("shared");
    s["processes"] = json!(processes);
    s
}

/// A shared alpha whose process records what it receives (`wire`).
fn recorded_shared() -> (TempDir, std::path::PathBuf, Server) {
    let dir = TempDir::new("wire");
    let wire = dir.path().join("wire.jsonl");
    let mut s = recorded_fixture("alpha", &wire);
    s["scope"] = json!("shared");
    let srv = Server::start(json!({ "alpha": s }), &[]);
    (dir, wire, srv)
}

/// Two sessions, initialized, with the tools listed (so calls go out at once).
fn two_ready(srv: &Server) -> (Mcp, Mcp) {
    let (mut a, mut b) = (srv.connect(), srv.connect());
    for c in [&mut a, &mut b] {
        c.initialize();
        c.request("tools/list", json!({}));
    }
    (a, b)
}

/// Reads until the response to `id`, collecting progress notifications.
fn answer_and_progress(c: &mut Mcp, id: &Value) -> (Value, Vec<Value>) {
    let mut progress = Vec::new();
    loop {
        let m = c.recv();
        if m["method"] == "notifications/progress" {
            progress.push(m);
        } else if m.get("id") == Some(id) && m.get("method").is_none() {
            return (m, progress);
        }
    }
}

#[test]
fn fifty_sessions_share_one_process_and_each_gets_its_own_answers() {
    let srv = Server::start(json!({ "alpha": shared("alpha", 1) }), &[]);
    let mut sessions: Vec<Mcp> = (0..50).map(|_| srv.connect()).collect();
    for c in sessions.iter_mut() {
        assert!(c.initialize()["result"]["capabilities"]["tools"].is_object());
    }
    for (i, c) in sessions.iter_mut().enumerate() {
        let r = c.call("echo", json!({"text": format!("session {i}")}));
        assert_eq!(text(&r), format!("session {i}"));
    }
    assert_eq!(children_of(srv.pid()).len(), 1, "one process for all");
}

#[test]
fn identical_ids_and_progress_tokens_reach_only_their_own_session() {
    let srv = Server::start(json!({ "alpha": shared("alpha", 1) }), &[]);
    let (mut a, mut b) = (srv.connect(), srv.connect());
    a.initialize();
    b.initialize();
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "progress", "arguments": {"count": 3}, "_meta": {"progressToken": "tok"}}});
    a.send(&call);
    b.send(&call);
    for c in [&mut a, &mut b] {
        let (r, progress) = answer_and_progress(c, &json!(5));
        assert_eq!(text(&r), "done");
        let steps: Vec<u64> = progress
            .iter()
            .map(|p| p["params"]["progress"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2, 3], "exactly its own three");
        assert!(
            progress
                .iter()
                .all(|p| p["params"]["progressToken"] == "tok")
        );
    }
}

#[test]
fn one_sessions_cancel_leaves_the_others_call_alone() {
    let srv = Server::start(json!({ "alpha": shared("alpha", 1) }), &[]);
    let (mut a, mut b) = two_ready(&srv);
    let slow = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"ms": 500}}});
    a.send(&slow);
    b.send(&slow);
    a.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}),
    );
    let (r, _) = answer_and_progress(&mut b, &json!(7));
    assert_eq!(text(&r), "slept");
    // a's call was cancelled: its next answer is the ping's, not 7's.
    let pong = a.request("ping", json!({}));
    assert!(pong["result"].is_object());
}

#[test]
fn subscriptions_are_counted_across_sessions() {
    let (_dir, wire, srv) = recorded_shared();
    let uri = "fixture://alpha/info";
    let (mut a, mut b) = (srv.connect(), srv.connect());
    for c in [&mut a, &mut b] {
        c.initialize();
        let r = c.request("resources/subscribe", json!({ "uri": uri }));
        assert!(r["result"].is_object(), "{r}");
    }
    let r = a.request("resources/unsubscribe", json!({ "uri": uri }));
    assert!(r["result"].is_object());
    let count = |m: &str| {
        recorded_lines(&wire)
            .iter()
            .filter(|l| l["method"] == m)
            .count()
    };
    assert_eq!(count("resources/subscribe"), 1, "subscribed once for both");
    assert_eq!(count("resources/unsubscribe"), 0, "b still wants it");
    drop(b); // the last subscriber leaves
    assert!(eventually(|| count("resources/unsubscribe") == 1));
    assert_eq!(count("initialize"), 1, "initialized once, not per session");
}

#[test]
fn a_killed_shared_process_fails_every_sessions_calls_at_once_and_comes_back() {
    let srv = Server::start(json!({ "alpha": shared("alpha", 1) }), &[]);
    let (mut a, mut b) = two_ready(&srv);
    for c in [&mut a, &mut b] {
        c.send(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"ms": 20000}}}));
    }
    let pid = children_of(srv.pid())[0];
    // Both calls are on the process before it dies.
    std::thread::sleep(Duration::from_millis(200));
    signal(pid, libc::SIGKILL);
    let started = Instant::now();
    for c in [&mut a, &mut b] {
        let (r, _) = answer_and_progress(c, &json!(9));
        assert_eq!(r["error"]["code"], -32002, "{r}");
        assert!(r["error"]["message"].as_str().unwrap().contains("alpha"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed at once, not at the timeout"
    );
    // Back within the first backoff step: both sessions call again.
    assert!(eventually(|| children_of(srv.pid())
        .iter()
        .any(|p| *p != pid)));
    for c in [&mut a, &mut b] {
        assert!(
            crate::supervise::echo_until_back(c, "echo"),
            "the server came back"
        );
    }
}

#[test]
fn a_servers_request_goes_to_the_one_session_with_a_call_in_flight() {
    let srv = Server::start(json!({ "alpha": shared("alpha", 1) }), &[]);
    let (mut a, mut b) = two_ready(&srv);
    a.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "sample", "arguments": {}}}));
    let s = a.recv();
    assert_eq!(s["method"], "sampling/createMessage", "{s}");
    a.send(
        &json!({"jsonrpc": "2.0", "id": s["id"], "result": {"role": "assistant",
        "content": {"type": "text", "text": "from a"}, "model": "m"}}),
    );
    let roots = a.recv();
    assert_eq!(roots["method"], "roots/list");
    a.send(&json!({"jsonrpc": "2.0", "id": roots["id"], "result": {"roots": []}}));
    let (done, _) = answer_and_progress(&mut a, &json!(3));
    let sc = &done["result"]["structuredContent"];
    assert_eq!(sc["sampling"]["result"]["content"]["text"], "from a");
    // b saw none of it: its next message is its own ping's answer.
    assert!(b.request("ping", json!({}))["result"].is_object());
}

#[test]
fn with_calls_of_two_sessions_in_flight_a_servers_request_gets_an_error() {
    let srv = Server::start(json!({ "alpha": shared("alpha", 1) }), &[]);
    let (mut a, mut b) = two_ready(&srv);
    b.send(&json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"ms": 1500}}}));
    std::thread::sleep(Duration::from_millis(200));
    a.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "sample", "arguments": {}}}));
    // Both of the fixture's requests (sampling, then roots) got the
    // gateway's error, and neither session was asked.
    let (done, _) = answer_and_progress(&mut a, &json!(3));
    let sc = &done["result"]["structuredContent"];
    for what in ["sampling", "roots"] {
        let msg = sc[what]["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains("cannot tell whom to ask"), "{what}: {done}");
    }
    let (slow, _) = answer_and_progress(&mut b, &json!(4));
    assert_eq!(text(&slow), "slept", "b got only its own answer");
}

#[test]
fn a_session_that_ends_cancels_its_calls_and_log_messages_never_reach_a_client() {
    let (_dir, wire, srv) = recorded_shared();
    let mut a = srv.connect();
    a.initialize();
    a.request("tools/list", json!({}));
    a.send(&json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"ms": 20000}}}));
    let sent_id = {
        let mut id = None;
        assert!(eventually(|| {
            id = recorded_lines(&wire)
                .iter()
                .find(|l| l["params"]["name"] == "slow")
                .map(|l| l["id"].clone());
            id.is_some()
        }));
        id.unwrap()
    };
    drop(a);
    assert!(eventually(|| recorded_lines(&wire).iter().any(|l| {
        l["method"] == "notifications/cancelled" && l["params"]["requestId"] == sent_id
    })));
    // `progress` makes the server log a message: it stays in the gateway's log.
    let mut b = srv.connect();
    b.initialize();
    let mut others = Vec::new();
    let r = b.request_with(
        "tools/call",
        json!({"name": "progress", "arguments": {"count": 1}}),
        &mut others,
    );
    assert_eq!(text(&r), "done");
    assert!(
        others
            .iter()
            .all(|m| m["method"] != "notifications/message"),
        "{others:?}"
    );
    assert!(srv.wait_log("hello from alpha"));
}

#[test]
fn after_a_restart_every_session_is_told_the_lists_changed() {
    let srv = Server::start(json!({ "alpha": shared("alpha", 1) }), &[]);
    let (mut a, mut b) = two_ready(&srv);
    let pid = children_of(srv.pid())[0];
    signal(pid, libc::SIGKILL);
    for c in [&mut a, &mut b] {
        crate::supervise::assert_told_tools_changed(c);
    }
}

#[test]
fn a_restarted_process_gets_back_the_subscriptions_it_held() {
    let (_dir, wire, srv) = recorded_shared();
    let mut a = srv.connect();
    a.initialize();
    let uri = "fixture://alpha/info";
    assert!(a.request("resources/subscribe", json!({ "uri": uri }))["result"].is_object());
    let subscribes = || {
        recorded_lines(&wire)
            .iter()
            .filter(|l| l["method"] == "resources/subscribe" && l["params"]["uri"] == uri)
            .count()
    };
    assert_eq!(subscribes(), 1);
    // The recorded fixture is `sh -c "tee | fixture"`: kill its whole group.
    let pid = children_of(srv.pid())[0];
    let group = children_of(pid);
    signal(pid, libc::SIGKILL);
    for c in group {
        signal(c, libc::SIGKILL);
    }
    assert!(eventually(|| subscribes() == 2), "not re-subscribed");
}
