//! A bug in one session ends that session only. The debug build's fault
//! hook (`M2M_TEST_PANIC_ON`) makes a session panic when its client sends
//! the trigger text; the other sessions must go on serving, and the
//! panicked one must leave no child, thread or fd behind.

use crate::common::*;
use serde_json::json;

const TRIGGER: &str = "trigger-a-bug";

/// A server with the fault hook armed and no warm spares, warmed up once
/// so lazily created process-wide state is in the baseline:
/// (server, baseline threads, baseline fds).
fn armed() -> (Server, usize, usize) {
    let srv = Server::start_with_env(
        json!({"one": fixture("one", &[]), "two": fixture("two", &[])}),
        &["--warm-spares", "0"],
        &[("M2M_TEST_PANIC_ON", TRIGGER)],
    );
    let pid = srv.pid();
    srv.session();
    assert!(eventually(|| children_of(pid).is_empty()));
    let (threads, fds) = settled_counts(pid);
    (srv, threads, fds)
}

/// Two sessions; the first makes its session panic. Returns (the victim,
/// the other session, the other session's children).
fn one_of_two_sessions_panics(srv: &Server) -> (Mcp, Mcp, Vec<u32>) {
    let pid = srv.pid();
    let mut victim = srv.session();
    assert!(eventually(|| children_of(pid).len() == 2));
    let victims_children = children_of(pid);
    let other = srv.session();
    assert!(eventually(|| children_of(pid).len() == 4));
    let mut others_children: Vec<u32> = children_of(pid)
        .into_iter()
        .filter(|c| !victims_children.contains(c))
        .collect();
    others_children.sort_unstable();
    victim.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": TRIGGER}}));
    (victim, other, others_children)
}

#[test]
fn a_panicking_session_ends_its_connection_and_reaps_only_its_children() {
    let (srv, ..) = armed();
    let pid = srv.pid();
    let (mut victim, _other, others_children) = one_of_two_sessions_panics(&srv);
    assert!(
        victim.ended_by_server(),
        "the panicked session's client is still connected"
    );
    assert!(
        eventually(|| {
            let mut now = children_of(pid);
            now.sort_unstable();
            now == others_children
        }),
        "children: {:?}, the other session's: {others_children:?}",
        children_of(pid)
    );
}

#[test]
fn after_a_session_panics_the_other_sessions_and_new_ones_serve() {
    let (srv, ..) = armed();
    let (mut victim, mut other, _) = one_of_two_sessions_panics(&srv);
    assert!(victim.ended_by_server());
    let r = other.call("echo", json!({"text": "still here"}));
    assert_eq!(text(&r), "still here");
    srv.session();
}

#[test]
fn a_panicked_session_leaves_no_child_thread_or_fd_behind() {
    let (srv, threads, fds) = armed();
    let (mut victim, other, _) = one_of_two_sessions_panics(&srv);
    assert!(victim.ended_by_server());
    drop((other, victim));
    assert_back_to(srv.pid(), 0, threads, fds);
}

/// The log line is the behaviour: the operator learns a bug ended the
/// session; its client only sees the connection end.
#[test]
fn a_panicked_session_is_logged_as_ended_by_a_bug() {
    let (srv, ..) = armed();
    let (mut victim, ..) = one_of_two_sessions_panics(&srv);
    assert!(victim.ended_by_server());
    assert!(srv.wait_log("session ended by a bug"), "{}", srv.log());
}
