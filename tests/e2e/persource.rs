//! Per-source limits: the share of the not yet authenticated connections
//! one source may take (`--per-source-max-startups`), and the penalty of a
//! source that keeps failing to log in (`--per-source-penalty`). The noisy
//! source is 127.0.0.2 (the loopback interface has all of 127/8), the real
//! user is on 127.0.0.1.

use crate::common::*;
use serde_json::json;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NOISY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection to the test server from `source`: std's TcpStream
/// cannot bind before it connects.
fn tcp_from(source: Ipv4Addr, port: u16) -> TcpStream {
    let addr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let (local, remote) = (addr(source, 0), addr(Ipv4Addr::LOCALHOST, port));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket returns a new fd or -1; the stream owns it from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh socket that nobody else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // SAFETY: both are valid sockaddr_in of `len` bytes for the calls.
    let bound = unsafe { libc::bind(fd, (&raw const local).cast(), len) };
    assert_eq!(
        bound,
        0,
        "bind {source}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: as above.
    let connected = unsafe { libc::connect(fd, (&raw const remote).cast(), len) };
    assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
    stream
}

/// Whether the server greeted the connection (its SSH banner) rather than
/// closing it at once, as it does with a refused one.
fn greeted(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut banner = [0u8; 8];
    match s.read_exact(&mut banner) {
        Ok(()) => {
            assert_eq!(&banner, b"SSH-2.0-");
            true
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            false
        }
        Err(e) => panic!("neither a banner nor a close within {WAIT:?}: {e}"),
    }
}

/// Logs in from `source` with the test's key.
fn login_from(srv: &Server, source: Ipv4Addr) -> Result<ssh2::Session, ssh2::Error> {
    let sess = ssh2_handshake_on(tcp_from(source, srv.port), WAIT)?;
    sess.userauth_pubkey_file("mcp", None, &srv.key, None)?;
    Ok(sess)
}

/// OpenSSH from 127.0.0.2 with `key`.
fn openssh_from_noisy(srv: &Server, key: &std::path::Path) -> Output {
    openssh(srv.port, key, &["-b", "127.0.0.2", "mcp@127.0.0.1"], "")
}

/// A real session from 127.0.0.1 answers.
fn assert_served(srv: &Server) {
    let mut c = srv.connect();
    c.initialize();
    let r = c.request("tools/list", json!({}));
    assert!(r["result"]["tools"].is_array(), "{r}");
}

#[test]
fn fifty_silent_connections_from_one_source_leave_room_for_a_user_from_another() {
    // Default caps: 10 connections logging in, 5 of them from one source.
    // The long deadline keeps the silent ones in their places throughout.
    let srv = Server::start(alpha(), &["--login-grace-time", "300"]);
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..50 {
        let mut s = tcp_from(NOISY, srv.port);
        if greeted(&mut s) {
            held.push(s);
        } else {
            refused += 1;
        }
    }
    assert_eq!((held.len(), refused), (5, 45));
    // While 127.0.0.2 holds its five, 127.0.0.1 gets in at once.
    assert_served(&srv);
    // The refusals were logged once, with the address.
    let log = srv.log();
    let line = "5 connections from 127.0.0.2 still logging in; more from it are refused quietly";
    assert_eq!(log.matches(line).count(), 1, "{log}");
}

#[test]
fn a_source_failing_to_log_in_ten_times_is_refused_for_its_penalty_then_served_again() {
    let srv = Server::start(alpha(), &["--per-source-penalty", "3:60"]);
    let (stranger, _) = client_key(srv.dir.path(), "stranger");
    for n in 1..=10 {
        let out = openssh_from_noisy(&srv, &stranger);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Permission denied"), "login {n}: {err}");
    }
    let first = "penalty: connections from 127.0.0.2 refused for 3 s after 10 failed logins";
    assert!(srv.wait_log(first), "{}", srv.log());
    // The penalty began before the line was seen: it is over 3 s from now.
    let over = Instant::now() + Duration::from_secs(3);
    assert!(
        !greeted(&mut tcp_from(NOISY, srv.port)),
        "served while penalized"
    );
    assert_served(&srv);
    std::thread::sleep(over.saturating_duration_since(Instant::now()));
    if let Err(e) = login_from(&srv, NOISY) {
        panic!("not served after its penalty: {e}");
    }
    // One more failure: refused again, twice as long.
    let out = openssh_from_noisy(&srv, &stranger);
    assert!(!out.status.success());
    let second = "penalty: connections from 127.0.0.2 refused for 6 s after 11 failed logins";
    assert!(srv.wait_log(second), "{}", srv.log());
    assert!(!greeted(&mut tcp_from(NOISY, srv.port)));
    // Each penalty was logged once.
    let log = srv.log();
    assert_eq!(log.matches("penalty: connections from").count(), 2, "{log}");
}

#[test]
fn a_source_that_keeps_stalling_until_the_login_deadline_is_penalized_too() {
    let srv = Server::start(
        alpha(),
        &[
            "--login-grace-time",
            "1",
            "--max-startups",
            "20",
            "--per-source-penalty",
            "300",
        ],
    );
    // Ten silent connections (the default share of 20 is 10), each hung up
    // on at its deadline.
    let silent: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = tcp_from(NOISY, srv.port);
            assert!(greeted(&mut s));
            s
        })
        .collect();
    for mut s in silent {
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("not hung up on at the deadline: {e}"),
        }
    }
    let line = "penalty: connections from 127.0.0.2 refused for 300 s after 10 failed logins";
    assert!(srv.wait_log(line), "{}", srv.log());
    assert!(!greeted(&mut tcp_from(NOISY, srv.port)));
    assert_served(&srv);
}

#[test]
fn bad_per_source_flags_are_refused_with_exit_2() {
    for (flag, value) in [
        ("--per-source-max-startups", "0"),
        ("--per-source-penalty", "x"),
        ("--per-source-penalty", "5:4"),
        ("--per-source-penalty", "86401"),
    ] {
        let out = Command::new("timeout")
            .arg("20")
            .arg(server_bin())
            .args(["--port", "0", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
}
