//! A bug in one session ends that session only. The debug build's fault
//! hook (`M2M_TEST_PANIC_ON`) makes a session panic when its client sends
//! the trigger text; the other sessions must go on serving, and the
//! panicked one must leave no child, thread or fd behind.

mod common;

use common::*;
use serde_json::json;
use std::io::Read;

#[test]
fn a_panicking_session_ends_alone_and_leaves_nothing_behind() {
    let dir = TempDir::new("panic");
    let (key, public) = client_key(dir.path(), "client");
    std::fs::write(dir.path().join("authorized_keys"), format!("{public}\n")).unwrap();
    let cfg = json!({"mcpServers": {"one": fixture("one", &[]), "two": fixture("two", &[])}});
    std::fs::write(dir.path().join("servers_config.json"), cfg.to_string()).unwrap();
    let srv = Server::start_in_env(
        dir,
        key,
        &["--warm-spares", "0"],
        &[("M2M_TEST_PANIC_ON", "trigger-a-bug")],
    );
    let pid = srv.pid();
    // Warm up once so lazily created process-wide state is in the baseline.
    srv.connect().initialize();
    assert!(eventually(|| children_of(pid).is_empty()));
    let (base_threads, base_fds) = settled_counts(pid);

    let mut victim = srv.connect();
    victim.initialize();
    let mut other = srv.connect();
    other.initialize();
    assert!(eventually(|| children_of(pid).len() == 4));
    let bystanders: Vec<u32> = children_of(pid);

    victim.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "trigger-a-bug"}}));
    // The victim's client sees its connection end (EOF or a reset).
    let mut buf = [0u8; 256];
    let ended = match victim.ch.read(&mut buf) {
        Ok(0) | Err(_) => true,
        Ok(_) => victim.ch.read(&mut buf).map_or(true, |n| n == 0),
    };
    assert!(ended, "the panicked session's client is still connected");
    // Its two children are stopped and reaped; the other session's remain.
    assert!(
        eventually(|| children_of(pid).len() == 2),
        "children: {:?}",
        children_of(pid)
    );
    assert!(children_of(pid).iter().all(|c| bystanders.contains(c)));
    // The other session still serves, calls included.
    let r = other.request(
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "still here"}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "still here", "{r}");
    // A new session works too.
    let mut fresh = srv.connect();
    assert!(fresh.initialize()["result"].is_object());
    drop((fresh, other, victim));
    assert_back_to(pid, 0, base_threads, base_fds);
    assert!(
        srv.log().contains("session ended by a bug"),
        "{}",
        srv.log()
    );
}
