//! What the server process holds over time, as /proc shows it: child
//! processes, threads and fds after sessions end, warm spares, shutdown,
//! and running out of fds.

use crate::common::*;
use serde_json::json;
use std::io::Read;
use std::time::Duration;

#[test]
fn children_inherit_no_socket_or_other_fd_of_the_server() {
    // b's child (a replacement spare, or a fresh one) starts while a's
    // connection is open: it must get only its three pipes, not the listener
    // or a's socket (which would also keep a's connection open after the
    // server closed it).
    let srv = Server::start(alpha(), &[]);
    let mut a = srv.session();
    let mut b = srv.session();
    for c in [&mut a, &mut b] {
        let r = c.call("whoami", json!({}));
        assert!(text(&r).ends_with(" fds=0,1,2"), "{r}");
    }
}

/// While the server cannot take a new fd, a waiting client gets no banner
/// and the accept loop does not spin; with room again it is served.
#[test]
fn a_server_out_of_fds_pauses_accepting_instead_of_spinning() {
    let srv = Server::start(alpha(), &[]);
    let pid = srv.pid();
    let mut c = srv.session();
    // Idle first (the replacement spare started, no fd coming or going), so
    // that no lower fd number frees up after the limit is set.
    assert!(
        eventually(|| children_of(pid).len() == 2),
        "no replacement spare"
    );
    settled_counts(pid);
    // RLIMIT_NOFILE bounds fd numbers: at the lowest free one, every new fd
    // (the next accept's among them) fails with EMFILE.
    let old = set_nofile_soft_limit(pid, lowest_free_fd(pid));
    // The kernel completes the handshake; the server cannot accept it.
    let mut waiting = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu_ticks(pid) - before;
    // A spinning accept loop burns a whole CPU: about 100 ticks a second.
    assert!(ticks < 30, "{ticks} ticks of CPU in 1 s while out of fds");
    waiting
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut banner = [0u8; 8];
    let early = waiting.read(&mut banner);
    assert!(
        early
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "served while out of fds: {early:?}"
    );
    // Room again: the waiting client gets its banner, the open session works.
    set_nofile_soft_limit(pid, old);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    waiting.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    assert_eq!(
        text(&c.call("echo", json!({"text": "still here"}))),
        "still here"
    );
}

#[test]
fn disconnect_mid_call_leaves_no_child_thread_or_fd_behind() {
    let srv = Server::start(two_children(), &["--warm-spares", "0"]);
    let pid = srv.pid();
    // Warm up once so lazily created process-wide state is counted in the baseline.
    srv.session();
    assert!(eventually(|| children_of(pid).is_empty()));
    assert!(
        eventually(|| thread_count(pid) == 1),
        "threads: {}",
        thread_count(pid)
    );
    let (_, base_fds) = settled_counts(pid);
    for _ in 0..3 {
        let mut c = srv.session();
        assert_eq!(children_of(pid).len(), 2);
        c.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 30000}}}));
        std::thread::sleep(Duration::from_millis(100));
        drop(c); // TCP close without a clean SSH goodbye
    }
    assert_back_to(pid, 0, 1, base_fds);
}

#[test]
fn sigterm_ends_sessions_reaps_children_and_exits_zero() {
    let mut srv = Server::start(two_children(), &[]);
    let pid = srv.pid();
    let _session = srv.session();
    // Two session children plus one warm spare per server.
    assert!(
        eventually(|| children_of(pid).len() == 4),
        "{:?}",
        children_of(pid)
    );
    let kids = children_of(pid);
    signal(pid, libc::SIGTERM);
    let status = srv.wait_exit();
    assert!(status.success(), "{status:?}");
    for k in kids {
        assert!(!exists(k), "child {k} survived");
    }
}

/// The fixture's pid, from `whoami`.
fn child_pid(c: &mut Mcp) -> u32 {
    let r = c.call("whoami", json!({}));
    text(&r)
        .split("pid=")
        .nth(1)
        .and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {r}"))
}

/// alpha with one warm spare, once the spare is up: (server, spare's pid).
fn one_warm_spare() -> (Server, u32) {
    let srv = Server::start(alpha(), &["--warm-spares", "1"]);
    assert!(
        eventually(|| children_of(srv.pid()).len() == 1),
        "no spare started"
    );
    let spare = children_of(srv.pid())[0];
    (srv, spare)
}

#[test]
fn a_session_gets_the_warm_spare_and_a_replacement_starts_beside_it() {
    let (srv, spare) = one_warm_spare();
    let pid = srv.pid();
    let mut c = srv.session();
    assert_eq!(
        child_pid(&mut c),
        spare,
        "the session did not get the warm spare"
    );
    assert!(
        eventually(|| children_of(pid).len() == 2),
        "no replacement spare: {:?}",
        children_of(pid)
    );
    drop(c);
    assert!(
        eventually(|| children_of(pid).len() == 1),
        "the session's child outlived it: {:?}",
        children_of(pid)
    );
}

#[test]
fn a_warm_spare_that_died_is_reaped_replaced_and_never_handed_out() {
    let (srv, spare) = one_warm_spare();
    let pid = srv.pid();
    signal(spare, libc::SIGKILL);
    let mut c = srv.session();
    assert_ne!(child_pid(&mut c), spare);
    assert!(
        eventually(|| !exists(spare)),
        "the dead spare was not reaped"
    );
    // The session's child and a live spare beside it.
    assert!(
        eventually(|| {
            let kids = children_of(pid);
            kids.len() == 2 && !kids.contains(&spare)
        }),
        "no replacement spare: {:?}",
        children_of(pid)
    );
}

#[test]
fn hundreds_of_sessions_leave_threads_fds_and_children_at_baseline() {
    let srv = Server::start(
        json!({"alpha": fixture("alpha", &["--echo-only"])}),
        &["--warm-spares", "1"],
    );
    let pid = srv.pid();
    srv.session();
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
