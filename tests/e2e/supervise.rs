//! Children that crash or hang are restarted (session scope here; shared
//! servers in shared.rs), and `/health` reports every server's state.

use crate::common::*;
use serde_json::{Value, json};

/// Calls `echo` until it answers (bounded): the server came back.
pub fn echo_until_back(c: &mut Mcp, name: &str) -> bool {
    for _ in 0..100 {
        let r = c.call(name, json!({"text": "back"}));
        if r["result"].is_object() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[test]
fn a_crashed_child_is_restarted_and_the_client_told_its_tools_changed() {
    let srv = Server::start(two_children(), &["--warm-spares", "0"]);
    let mut c = srv.connect();
    c.initialize();
    let first: Vec<u32> = children_of(srv.pid());
    let e = c.call("crash", json!({}));
    assert_eq!(e["error"]["code"], -32002, "{e}");
    assert!(echo_until_back(&mut c, "echo"), "alpha never came back");
    let now = children_of(srv.pid());
    assert_eq!(now.len(), 2);
    assert_ne!(now, first, "a new process");
    // The list-changed notification reached the client on the way.
    let mut others = Vec::new();
    c.request_with("ping", json!({}), &mut others);
    let r = c.call("echo", json!({"text": "x"}));
    assert_eq!(text(&r), "x");
}

#[test]
fn the_client_gets_list_changed_once_a_restarted_child_is_back() {
    let srv = Server::start(alpha(), &["--warm-spares", "0"]);
    let mut c = srv.connect();
    c.initialize();
    c.call("crash", json!({}));
    assert_told_tools_changed(&mut c);
}

/// Pings until `notifications/tools/list_changed` has come (bounded).
pub fn assert_told_tools_changed(c: &mut Mcp) {
    let mut seen = Vec::new();
    let got = eventually(|| {
        let mut others = Vec::new();
        c.request_with("ping", json!({}), &mut others);
        seen.extend(others);
        seen.iter()
            .any(|m| m["method"] == "notifications/tools/list_changed")
    });
    assert!(got, "no list_changed; saw {seen:?}");
}

/// Three calls in a row run past a 1 s timeout: the one process of
/// `servers` is replaced, and calls work again.
fn three_timeouts_replace_the_process(servers: Value) {
    let srv = Server::start(servers, &["--warm-spares", "0", "--request-timeout", "1"]);
    let mut c = srv.connect();
    c.initialize();
    c.request("tools/list", json!({}));
    let first = children_of(srv.pid());
    assert_eq!(first.len(), 1);
    for _ in 0..3 {
        let r = c.call("slow", json!({"ms": 30000}));
        assert_eq!(r["error"]["code"], -32001, "{r}");
    }
    assert!(
        eventually(|| {
            let now = children_of(srv.pid());
            now.len() == 1 && now != first
        }),
        "still {:?}",
        children_of(srv.pid())
    );
    assert!(echo_until_back(&mut c, "echo"));
}

#[test]
fn a_child_that_lets_three_calls_time_out_is_replaced() {
    three_timeouts_replace_the_process(alpha());
}

#[test]
fn a_shared_process_that_lets_three_calls_time_out_is_replaced() {
    let mut s = fixture("alpha", &[]);
    s["scope"] = json!("shared");
    three_timeouts_replace_the_process(json!({ "alpha": s }));
}

#[test]
fn health_lists_every_server_with_scope_state_processes_and_restarts() {
    let mut shared = fixture("beta", &[]);
    shared["scope"] = json!("shared");
    shared["processes"] = json!(2);
    let servers = json!({"alpha": fixture("alpha", &[]), "beta": shared});
    let (srv, api) = Server::start_with_key_api(servers, &["--warm-spares", "0"]);
    let mut c = srv.connect();
    c.initialize();
    let health = || -> Vec<Value> {
        let (st, _, body) = get(api, "/health");
        assert_eq!(st, 200);
        serde_json::from_str::<Value>(&body).unwrap()["servers"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(eventually(|| health()[1]["state"] == "ready"));
    let h = health();
    assert_eq!(h[0]["name"], "alpha");
    assert_eq!(
        (
            h[0]["scope"].clone(),
            h[0]["processes"].clone(),
            h[0]["restarts"].clone()
        ),
        (json!("session"), json!(1), json!(0))
    );
    assert_eq!(
        (
            h[1]["scope"].clone(),
            h[1]["processes"].clone(),
            h[1]["restarts"].clone()
        ),
        (json!("shared"), json!(2), json!(0))
    );
    c.call("crash", json!({})); // alpha's crash tool (beta's is crash_1)
    assert!(eventually(|| health()[0]["restarts"] == 1));
    drop(c);
    assert!(eventually(|| health()[0]["processes"] == 0));
}

#[test]
fn a_shared_server_that_keeps_exiting_is_marked_failed() {
    // `false` exits at once: five exits within a minute (after 1, 2, 4 and
    // 8 s of backoff) mark the server failed.
    let servers = json!({"dead": {"command": "false", "scope": "shared"}});
    let (srv, api) = Server::start_with_key_api(servers, &[]);
    let state = || {
        let (_, _, body) = get(api, "/health");
        serde_json::from_str::<Value>(&body).unwrap()["servers"][0].clone()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while state()["state"] != "failed" && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let s = state();
    assert_eq!(s["state"], "failed", "{s}");
    assert!(s["restarts"].as_u64().unwrap() >= 5, "{s}");
    assert!(srv.wait_log("marked failed"));
    // A session still works; the dead server's tools are simply absent.
    let mut c = srv.connect();
    assert!(c.initialize()["result"].is_object());
}
