//! Getting in: which keys and methods are accepted, the login deadline, and
//! the connection slots of clients still logging in.

use crate::common::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn only_the_authorized_public_key_gets_in() {
    let srv = Server::start(alpha(), &[]);
    let (other, _) = client_key(srv.dir.path(), "stranger");
    assert_only_authorized_keys_get_in(srv.port, &srv.key, Some(&other));
    let out = openssh(srv.port, &other, &["mcp@127.0.0.1"], "");
    assert!(!out.status.success());
}

#[test]
fn a_key_added_to_authorized_keys_gets_in_on_the_next_login_without_restart() {
    let srv = Server::start(alpha(), &[]);
    let (other, public) = client_key(srv.dir.path(), "later");
    assert!(
        try_login(srv.port, &other).is_err(),
        "in before it was added"
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(srv.path("authorized_keys"))
        .unwrap();
    writeln!(f, "# added later\nno-pty {public}").unwrap();
    drop(f);
    if let Err(e) = try_login(srv.port, &other) {
        panic!("the added key was refused: {e}");
    }
}

/// A connection that may log in within a 10 s bound: true if it did.
fn logs_in(srv: &Server) -> bool {
    let tcp = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    ssh2_handshake_on(tcp, Duration::from_secs(10))
        .is_ok_and(|s| s.userauth_pubkey_file("mcp", None, &srv.key, None).is_ok())
}

/// With one slot and a 2 s login deadline.
fn one_slot_two_second_deadline() -> Server {
    Server::start(alpha(), &["--login-grace-time", "2", "--max-sessions", "1"])
}

/// A client that never sends a byte holds the only slot until the deadline;
/// then the server hangs up on it, says why, and the slot is free again.
#[test]
fn a_silent_client_is_hung_up_on_at_the_login_deadline_and_frees_its_slot() {
    let srv = one_slot_two_second_deadline();
    let start = Instant::now();
    let banner = bytes_until_hangup(srv.port, 15);
    assert!(banner.starts_with(b"SSH-2.0-"), "{banner:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "hung up after {:?}",
        start.elapsed()
    );
    // The operator's only clue to why it went: kept as a log assertion.
    assert!(
        srv.wait_log("s1: key exchange failed: the client hung up or stayed silent"),
        "{}",
        srv.log()
    );
    assert!(eventually(|| logs_in(&srv)), "the slot was not freed");
}

/// s1 takes 1.2 s before key exchange and 1.2 s after it and is refused,
/// though each part alone fits: with a deadline per part it would get in.
#[test]
fn key_exchange_and_auth_share_one_login_deadline() {
    let srv = one_slot_two_second_deadline();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let sess =
        ssh2_handshake_on(tcp, Duration::from_secs(10)).expect("key exchange within the deadline");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        sess.userauth_pubkey_file("mcp", None, &srv.key, None)
            .is_err(),
        "authenticated after the login deadline"
    );
    drop(sess);
    // The refused connection gave its only slot back: a prompt client gets in.
    assert!(eventually(|| logs_in(&srv)), "the slot was not freed");
}

#[test]
fn clients_stalled_before_login_cannot_take_every_slot() {
    let srv = Server::start(alpha(), &["--max-startups", "2", "--max-sessions", "8"]);
    // s1 logs in and stays: it no longer counts as logging in.
    let mut c = srv.session();
    // s2 and s3 stall before key exchange; each got the server's banner.
    let stalled = [
        silent_peer_after_banner(srv.port),
        silent_peer_after_banner(srv.port),
    ];
    // s4 is refused at once: closed without a banner.
    let got = bytes_until_hangup(srv.port, 5);
    assert!(got.is_empty(), "{got:?}");
    // The logged-in session is unaffected.
    let r = c.request("tools/list", serde_json::json!({}));
    assert!(r["result"]["tools"].is_array(), "{r}");
    // Stalled clients that leave give their places back.
    drop(stalled);
    assert!(
        eventually(|| try_login(srv.port, &srv.key).is_ok()),
        "the stalled clients' slots were not given back"
    );
}
