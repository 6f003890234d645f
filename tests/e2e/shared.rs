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
    // "auto": probed first; the fixture's error to it makes it legacy.
    let lines = recorded_lines(&wire);
    assert_eq!(lines[0]["method"], "server/discover");
    assert_eq!(lines[1]["method"], "initialize");
    assert_eq!(count("server/discover"), 1, "probed once");
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

/// A 2026-07-28 request's `params`: `p` with the `_meta` envelope, its
/// client capabilities `caps`.
fn modern_params(mut p: Value, caps: Value) -> Value {
    p["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-modern", "version": "1"},
    });
    p
}

/// A shared modern fixture (2026-07-28 only), one process.
fn modern_shared(name: &str, protocol: &str) -> Value {
    let mut s = shared(name, 1);
    s["args"].as_array_mut().unwrap().push(json!("--modern"));
    s["protocol"] = json!(protocol);
    s
}

/// The pid the fixture's `whoami` names.
fn pid_of(whoami: &Value) -> u32 {
    let t = text(whoami);
    let pid = t.split("pid=").nth(1).and_then(|r| r.split(' ').next());
    pid.and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{whoami}"))
}

/// Opens a stream for tool list changes under `id` and reads its ack.
fn listen(c: &mut Mcp, id: &str) {
    let filter = json!({"notifications": {"toolsListChanged": true}});
    c.send(
        &json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen",
        "params": modern_params(filter, json!({}))}),
    );
    let ack = c.recv();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        id
    );
}

#[test]
fn a_modern_shared_server_serves_a_modern_and_a_legacy_session_on_one_process() {
    let srv = Server::start(
        json!({ "alpha": modern_shared("alpha", "2026-07-28") }),
        &[],
    );
    let mut m = srv.connect();
    let mut l = srv.connect();
    l.initialize();
    let who = json!({"name": "whoami", "arguments": {}});
    let from_m = m.request("tools/call", modern_params(who.clone(), json!({})));
    assert_eq!(from_m["result"]["resultType"], "complete", "{from_m}");
    let from_l = l.call("whoami", json!({}));
    let pid = pid_of(&from_m);
    assert_eq!(pid_of(&from_l), pid, "one process for both eras");
    assert_eq!(children_of(srv.pid()), [pid]);
    // The legacy session sees the modern server's own tools.
    let list = l.request("tools/list", json!({}));
    assert!(
        names(&list, "tools").contains(&"ask_elicit".to_owned()),
        "{list}"
    );
    // Input the 2026 way, through the mux: `input_required`, then the retry.
    let caps = json!({"elicitation": {}});
    let ask = json!({"name": "ask_elicit", "arguments": {}});
    let r = m.request("tools/call", modern_params(ask.clone(), caps.clone()));
    let res = &r["result"];
    assert_eq!(res["resultType"], "input_required", "{r}");
    let (key, req) = res["inputRequests"]
        .as_object()
        .and_then(|o| o.iter().next())
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(req["method"], "elicitation/create", "{r}");
    let mut retry = modern_params(ask, caps);
    retry["requestState"] = res["requestState"].clone();
    retry["inputResponses"] =
        json!({key.as_str(): {"action": "accept", "content": {"name": "Bo"}}});
    let done = m.request("tools/call", retry);
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert!(done["result"].to_string().contains("Bo"), "{done}");
}

/// Starts a `slow` call of `ms` on `c` under `id` without reading its answer.
fn start_slow(c: &mut Mcp, id: &str, ms: u64) {
    let params = modern_params(json!({"name": "slow", "arguments": {"ms": ms}}), json!({}));
    c.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}));
}

#[test]
fn a_retry_goes_back_to_the_shared_process_that_asked_for_input() {
    // Two processes, each keeping the `requestState`s it issued in memory:
    // a retry that reached the other one would be refused as unknown.
    let mut spec = modern_shared("alpha", "2026-07-28");
    spec["processes"] = json!(2);
    let srv = Server::start(json!({ "alpha": spec }), &[]);
    let (mut m, mut x, mut y) = (srv.connect(), srv.connect(), srv.connect());
    let who = || modern_params(json!({"name": "whoami", "arguments": {}}), json!({}));
    // Both processes ready: a call made while another is in flight on the
    // first goes to the second.
    let first = pid_of(&y.request("tools/call", who()));
    let mut n = 0;
    assert!(
        eventually(|| {
            n += 1;
            let id = format!("busy{n}");
            start_slow(&mut x, &id, 300);
            let other = pid_of(&y.request("tools/call", who()));
            let (done, _) = answer_and_progress(&mut x, &json!(id));
            assert_eq!(done["result"]["resultType"], "complete", "{done}");
            other != first
        }),
        "the second process never became ready"
    );
    // Both idle: the first process takes the call that asks for input.
    let caps = json!({"elicitation": {}});
    let ask = json!({"name": "ask_elicit", "arguments": {}});
    let r = m.request("tools/call", modern_params(ask.clone(), caps.clone()));
    assert_eq!(r["result"]["resultType"], "input_required", "{r}");
    // A call in flight on it makes the other process the least busy one.
    start_slow(&mut x, "busy", 1500);
    let (key, _) = r["result"]["inputRequests"]
        .as_object()
        .and_then(|o| o.iter().next())
        .unwrap_or_else(|| panic!("{r}"));
    let mut retry = modern_params(ask, caps);
    retry["requestState"] = r["result"]["requestState"].clone();
    retry["inputResponses"] =
        json!({key.as_str(): {"action": "accept", "content": {"name": "Bo"}}});
    let done = m.request("tools/call", retry);
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert!(done["result"].to_string().contains("Bo"), "{done}");
    let (slept, _) = answer_and_progress(&mut x, &json!("busy"));
    assert_eq!(slept["result"]["resultType"], "complete", "{slept}");
    assert_eq!(children_of(srv.pid()).len(), 2, "neither process replaced");
}

#[test]
fn each_sessions_listen_on_a_shared_modern_server_gets_its_own_list_change() {
    let srv = Server::start(json!({ "alpha": modern_shared("alpha", "auto") }), &[]);
    let (mut a, mut b, mut c) = (srv.connect(), srv.connect(), srv.connect());
    listen(&mut a, "La");
    listen(&mut b, "Lb");
    c.initialize();
    // Each session's listen is at the process before the notify.
    for s in [&mut a, &mut b] {
        let echo = json!({"name": "echo", "arguments": {"text": "x"}});
        assert_eq!(
            text(&s.request("tools/call", modern_params(echo, json!({})))),
            "x"
        );
    }
    assert_eq!(text(&c.call("echo", json!({"text": "x"}))), "x");
    let mut others = Vec::new();
    let notify = json!({"name": "notify", "arguments": {}});
    let r = a.request_with("tools/call", modern_params(notify, json!({})), &mut others);
    // Three listens at the process (the sessions' own), three lists each.
    assert_eq!(text(&r), "notified 9");
    let changes: Vec<&Value> = others
        .iter()
        .filter(|m| m["method"] == "notifications/tools/list_changed")
        .collect();
    assert_eq!(changes.len(), 1, "only its own: {others:?}");
    assert_eq!(
        changes[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "La"
    );
    let n = loop {
        let n = b.recv();
        if n["method"] == "notifications/tools/list_changed" {
            break n;
        }
    };
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "Lb",
        "{n}"
    );
    let n = loop {
        let n = c.recv();
        if n["method"].as_str().is_some() {
            break n;
        }
    };
    assert_eq!(n["method"], "notifications/tools/list_changed", "{n}");
}

#[test]
fn a_shared_modern_process_gets_its_listens_again_after_a_restart_and_a_leaving_session_cancels_them()
 {
    let dir = TempDir::new("wire");
    let wire = dir.path().join("wire.jsonl");
    let mut s = recorded_fixture("alpha", &wire);
    let script = format!("{} --modern", s["args"][1].as_str().unwrap());
    s["args"][1] = json!(script);
    s["scope"] = json!("shared");
    let srv = Server::start(json!({ "alpha": s }), &[]);
    let mut a = srv.connect();
    a.initialize();
    let listens = || -> Vec<Value> {
        recorded_lines(&wire)
            .iter()
            .filter(|l| l["method"] == "subscriptions/listen")
            .map(|l| l["id"].clone())
            .collect()
    };
    assert!(eventually(|| listens().len() == 1), "the session's listen");
    let lines = recorded_lines(&wire);
    assert_eq!(lines[0]["method"], "server/discover", "probed first");
    assert!(
        lines.iter().all(|l| l["method"] != "initialize"),
        "no initialize for a modern server"
    );
    let id = listens()[0].clone();
    // The recorded fixture is `sh -c "tee | fixture"`: kill its whole group.
    let pid = children_of(srv.pid())[0];
    let group = children_of(pid);
    signal(pid, libc::SIGKILL);
    for c in group {
        signal(c, libc::SIGKILL);
    }
    assert!(eventually(|| listens().len() == 2), "not sent again");
    assert_eq!(listens()[1], id, "under the same id");
    crate::supervise::assert_told_tools_changed(&mut a);
    drop(a);
    assert!(
        eventually(|| recorded_lines(&wire).iter().any(|l| {
            l["method"] == "notifications/cancelled" && l["params"]["requestId"] == id
        })),
        "the leaving session's listen was not cancelled"
    );
}

#[test]
fn a_shared_server_that_must_be_modern_and_is_not_is_left_out_with_a_reason() {
    let mut alpha = shared("alpha", 1);
    alpha["protocol"] = json!("2026-07-28");
    let srv = Server::start(json!({"alpha": alpha, "beta": fixture("beta", &[])}), &[]);
    assert!(
        srv.wait_log(
            "alpha] shared server left out: configured \"protocol\": \"2026-07-28\" but server/discover"
        ),
        "{}",
        srv.log()
    );
    let mut c = srv.connect();
    c.initialize();
    let list = c.request("tools/list", json!({}));
    assert!(
        names(&list, "tools").contains(&"echo".to_owned()),
        "beta serves alone: {list}"
    );
}

/// Listens are answered only when they end: three of them open well past a
/// 1 s request timeout are no overdue calls, so the process is not replaced.
#[test]
fn listens_on_a_shared_modern_server_have_no_deadline() {
    let srv = Server::start(
        json!({ "alpha": modern_shared("alpha", "2026-07-28") }),
        &["--request-timeout", "1"],
    );
    let mut sessions: Vec<Mcp> = (0..3).map(|_| srv.connect()).collect();
    let mut pids = Vec::new();
    for c in sessions.iter_mut() {
        c.initialize(); // the session's own listen goes to the process
        pids.push(pid_of(&c.call("whoami", json!({}))));
    }
    // Past the timeout and its slack, for all three at once.
    std::thread::sleep(Duration::from_secs(3));
    for c in sessions.iter_mut() {
        pids.push(pid_of(&c.call("whoami", json!({}))));
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "the process was replaced: {pids:?}");
    let r = sessions[0].call("notify", json!({}));
    assert_eq!(text(&r), "notified 9", "the three listens are still open");
}

/// A legacy client's `resources/subscribe` to a shared modern server is a
/// listen of its session: the update reaches that session only.
#[test]
fn a_resource_update_of_a_shared_modern_server_reaches_only_the_subscriber() {
    let srv = Server::start(json!({ "alpha": modern_shared("alpha", "auto") }), &[]);
    let (mut a, mut b) = two_ready(&srv);
    let uri = "fixture://alpha/info";
    assert!(a.request("resources/subscribe", json!({ "uri": uri }))["result"].is_object());
    let mut others = Vec::new();
    let r = a.request_with(
        "tools/call",
        json!({"name": "notify", "arguments": {"uri": uri}}),
        &mut others,
    );
    assert!(text(&r).starts_with("notified"), "{r}");
    let updated = |ms: &[Value]| {
        ms.iter()
            .filter(|m| m["method"] == "notifications/resources/updated")
            .map(|m| m["params"]["uri"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(updated(&others), [json!(uri)], "{others:?}");
    // Anything for b was queued before its next answer.
    let mut seen = Vec::new();
    let r = b.request_with(
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "b"}}),
        &mut seen,
    );
    assert_eq!(text(&r), "b");
    assert!(updated(&seen).is_empty(), "{seen:?}");
}
