//! SIGHUP re-reads servers_config.json: new sessions get the new set, open
//! sessions keep theirs, a broken config is refused and the old one keeps
//! serving.

use crate::common::*;
use serde_json::json;

fn tool_names(c: &mut Mcp) -> Vec<String> {
    names(&c.request("tools/list", json!({})), "tools")
}

/// Sends SIGHUP and waits (bounded) until a new session sees `want` tools.
fn hangup_until(srv: &Server, want: impl Fn(&[String]) -> bool) -> bool {
    signal(srv.pid(), libc::SIGHUP);
    eventually(|| {
        let mut c = srv.connect();
        c.initialize();
        want(&tool_names(&mut c))
    })
}

#[test]
fn sighup_gives_new_sessions_the_new_config_and_open_ones_keep_theirs() {
    let mut a = fixture("alpha", &[]);
    a["namePrefix"] = json!("a.");
    let srv = Server::start(json!({ "alpha": a }), &["--warm-spares", "0"]);
    let mut open = srv.connect();
    open.initialize();
    assert!(tool_names(&mut open).iter().all(|n| n.starts_with("a.")));

    let mut b = fixture("beta", &[]);
    b["namePrefix"] = json!("b.");
    let cfg = json!({"mcpServers": {"beta": b}});
    std::fs::write(srv.path("servers_config.json"), cfg.to_string()).unwrap();
    assert!(hangup_until(&srv, |t| !t.is_empty()
        && t.iter().all(|n| n.starts_with("b."))));
    // The session opened before the reload still has alpha, and it works.
    let r = open.call("a.echo", json!({"text": "still alpha"}));
    assert_eq!(text(&r), "still alpha");
    assert!(tool_names(&mut open).iter().all(|n| n.starts_with("a.")));
}

#[test]
fn a_broken_config_on_sighup_is_refused_and_the_old_one_keeps_serving() {
    let srv = Server::start(alpha(), &["--warm-spares", "0"]);
    std::fs::write(
        srv.path("servers_config.json"),
        r#"{"mcpServers": {"alpha": {"args": []}}}"#,
    )
    .unwrap();
    signal(srv.pid(), libc::SIGHUP);
    assert!(srv.wait_log("field \"command\" is missing; still serving the previous config"));
    let mut c = srv.connect();
    c.initialize();
    assert_eq!(tool_names(&mut c).len(), 7);
    assert!(
        crate::common::exists(srv.pid()),
        "SIGHUP does not end the server"
    );
}
