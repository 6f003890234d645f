//! The PROXY protocol (`--proxy-protocol-from`): the test plays the load
//! balancer, on 127.0.0.1, writing a v1 or v2 header before it hands the
//! connection to ssh2. The header's client (203.0.113.7 and the like) must
//! be what `from=`, the per-source limits, the logs and the audit log see;
//! a listed sender without a header, a header from an unlisted address, and
//! truncated, late, oversized and malformed headers are refused, and the
//! server serves the next client each time.

use crate::common::*;
use serde_json::{Value, json};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, TcpStream};

const CLIENT: &str = "203.0.113.7";

/// A v1 header naming `client` (TCP4 or TCP6 as its family says).
fn v1(client: &str) -> Vec<u8> {
    let ip: IpAddr = client.parse().unwrap();
    let (proto, dst) = if ip.is_ipv4() {
        ("TCP4", "192.0.2.1")
    } else {
        ("TCP6", "2001:db8::1")
    };
    format!("PROXY {proto} {client} {dst} 51234 22\r\n").into_bytes()
}

/// A v2 header: command and family bytes, then `block`.
fn v2_raw(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([command, family]);
    h.extend((block.len() as u16).to_be_bytes());
    h.extend(block);
    h
}

/// A v2 PROXY header naming `client`, over TCP/IPv4 or TCP/IPv6, with a
/// TLV after the addresses (HAProxy's unique-id, say) to be skipped.
fn v2(client: &str) -> Vec<u8> {
    let (family, mut block) = match client.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => {
            let mut b = a.octets().to_vec();
            b.extend(Ipv4Addr::new(192, 0, 2, 1).octets());
            (0x11, b)
        }
        IpAddr::V6(a) => {
            let mut b = a.octets().to_vec();
            b.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
            (0x21, b)
        }
    };
    block.extend(51234u16.to_be_bytes());
    block.extend(22u16.to_be_bytes());
    block.extend([0x05, 0x00, 0x03, b'a', b'b', b'c']);
    v2_raw(0x21, family, &block)
}

/// A TCP connection to the server that has sent `bytes`.
fn sent(srv: &Server, bytes: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    tcp.write_all(bytes).unwrap();
    tcp
}

/// Logs in with the test's key over a connection that starts with `header`.
fn login_via(srv: &Server, header: &[u8]) -> Result<ssh2::Session, ssh2::Error> {
    let sess = ssh2_handshake_on(sent(srv, header), WAIT)?;
    sess.userauth_pubkey_file("mcp", None, &srv.key, None)?;
    Ok(sess)
}

/// An MCP session through the handshake over a connection that starts
/// with `header`.
fn session_via(srv: &Server, header: &[u8]) -> Mcp {
    let sess = login_via(srv, header).expect("login through the header");
    let mut ch = sess.channel_session().unwrap();
    ch.shell().unwrap();
    let mut c = Mcp::over(ch);
    let init = c.initialize();
    assert!(init["result"].is_object(), "{init}");
    c
}

/// Whether the server greets the connection with its banner (true) or
/// closes it without a word (false).
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

/// A server that takes headers from 127.0.0.1 (the test), with `line` as
/// its authorized_keys line for the test's key (`{key}` stands for the
/// public key) and an audit log; (server, audit log).
fn start(line: &str, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let (dir, key) = Server::files(alpha());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let line = line.replace("{key}", public.trim());
    std::fs::write(dir.path().join("authorized_keys"), format!("{line}\n")).unwrap();
    let audit = dir.path().join("audit.log");
    let a = audit.to_str().unwrap().to_owned();
    let mut args = vec!["--proxy-protocol-from", "127.0.0.1", "--audit-log", &a];
    args.extend_from_slice(extra);
    (Server::start_in(dir, key, &args), audit)
}

/// The `client` of each session_start record so far.
fn audited_clients(audit: &std::path::Path) -> Vec<Value> {
    json_lines(&std::fs::read(audit).unwrap_or_default())
        .into_iter()
        .filter(|r| r["event"] == "session_start")
        .map(|r| r["client"].clone())
        .collect()
}

#[test]
fn the_headers_client_is_the_one_from_and_the_audit_log_see() {
    let (srv, audit) = start(&format!("from=\"{CLIENT},2001:db8::7\" {{key}}"), &[]);
    // Each session answers before the next starts: the records come in order.
    for header in [v1(CLIENT), v2(CLIENT), v1("2001:db8::7"), v2("2001:db8::7")] {
        let mut c = session_via(&srv, &header);
        let r = c.request("tools/list", json!({}));
        assert!(r["result"]["tools"].is_array(), "{r}");
    }
    let want = json!([CLIENT, CLIENT, "2001:db8::7", "2001:db8::7"]);
    assert!(
        eventually(|| Value::from(audited_clients(&audit)) == want),
        "{:?}",
        audited_clients(&audit)
    );
    // The same key from another client, or from the balancer itself, is
    // refused by its from= option: the header's address is what counts.
    assert!(login_via(&srv, &v1("198.51.100.9")).is_err());
    assert!(login_via(&srv, &v2("198.51.100.9")).is_err());
    assert!(login_via(&srv, &v2_raw(0x20, 0x00, &[])).is_err(), "LOCAL");
    assert!(srv.wait_log("127.0.0.1 relays 198.51.100.9:51234 (PROXY v2)"));
    assert!(
        srv.log()
            .contains("127.0.0.1 relays 203.0.113.7:51234 (PROXY v1)")
    );
    assert_eq!(audited_clients(&audit).len(), 4);
}

#[test]
fn local_and_unknown_headers_leave_the_connection_its_own_address() {
    let (srv, audit) = start("{key}", &[]);
    let local_with_block = v2_raw(0x20, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]);
    for header in [
        v2_raw(0x20, 0x00, &[]),
        local_with_block,
        v2_raw(0x21, 0x00, &[]),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY UNKNOWN 10.0.0.1 10.0.0.2 1 2\r\n".to_vec(),
    ] {
        drop(session_via(&srv, &header));
    }
    assert!(
        eventually(|| audited_clients(&audit) == vec![json!("127.0.0.1"); 5]),
        "{:?}",
        audited_clients(&audit)
    );
}

#[test]
fn a_listed_sender_without_a_header_is_refused() {
    let (srv, _) = start("{key}", &[]);
    assert!(try_login(srv.port, &srv.key).is_err());
    assert!(srv.wait_log(
        "refused: 127.0.0.1 is a --proxy-protocol-from sender, but it sent an SSH banner, \
         no PROXY header"
    ));
    drop(session_via(&srv, &v2(CLIENT)));
}

#[test]
fn a_header_from_an_address_not_listed_is_refused_and_plain_clients_are_served() {
    let (dir, key) = Server::files(alpha());
    let srv = Server::start_in(dir, key, &["--proxy-protocol-from", "192.0.2.1,10.0.0.0/8"]);
    for (header, v) in [(v2(CLIENT), "v2"), (v1(CLIENT), "v1")] {
        assert!(login_via(&srv, &header).is_err());
        assert!(srv.wait_log(&format!(
            "refused: 127.0.0.1 sent what starts as a PROXY {v} header, but \
             --proxy-protocol-from does not list it"
        )));
    }
    let mut c = srv.session();
    assert!(c.request("tools/list", json!({}))["result"].is_object());
}

#[test]
fn truncated_late_oversized_and_malformed_headers_are_refused_and_the_next_client_served() {
    let (srv, _) = start("{key}", &["--login-grace-time", "2"]);
    let next_client = |srv: &Server| drop(session_via(srv, &v2(CLIENT)));
    let refused = "refused: 127.0.0.1 is a --proxy-protocol-from sender, but";

    // Ten bytes of a v2 header, then the sender hangs up.
    let half = v2(CLIENT);
    let s = sent(&srv, &half[..10]);
    s.shutdown(Shutdown::Write).unwrap();
    assert!(srv.wait_log(&format!(
        "{refused} it closed the connection after 10 bytes of a header"
    )));
    drop(s);
    next_client(&srv);

    // Part of a v1 line, then silence: the login deadline ends it.
    let mut s = sent(&srv, b"PROXY TCP4 203.0");
    assert!(!greeted(&mut s), "closed at the deadline");
    assert!(srv.wait_log(&format!(
        "{refused} no whole PROXY header by the login deadline (16 bytes came)"
    )));
    next_client(&srv);

    // A v2 length over the bound: refused from the fixed 16 bytes alone.
    let mut big = v2_raw(0x21, 0x11, &[]);
    big[14..16].copy_from_slice(&2000u16.to_be_bytes());
    let mut s = sent(&srv, &big);
    assert!(!greeted(&mut s));
    assert!(srv.wait_log(&format!(
        "{refused} PROXY v2 address block of 2000 bytes (at most 1024 accepted)"
    )));
    next_client(&srv);

    for (header, why) in [
        (
            b"PROXY TCP4 999.0.113.7 192.0.2.1 51234 22\r\n".to_vec(),
            "malformed PROXY v1 line: not an IPv4 address",
        ),
        (
            format!("PROXY UNKNOWN {}\r\n", "x".repeat(100)).into_bytes(),
            "PROXY v1 line without CRLF in 107 bytes",
        ),
        (
            v2_raw(0x21, 0x12, &[0; 12]),
            "PROXY v2 family/transport byte 0x12",
        ),
        (
            v2_raw(0x21, 0x11, &[0; 6]),
            "PROXY v2 address block of 6 bytes, too short",
        ),
        (
            v2_raw(0x31, 0x11, &[0; 12]),
            "PROXY v2 version/command byte 0x31",
        ),
    ] {
        let mut s = sent(&srv, &header);
        assert!(!greeted(&mut s), "{why}");
        assert!(srv.wait_log(&format!("{refused} {why}")), "{why}");
        next_client(&srv);
    }
}

#[test]
fn the_per_source_limit_counts_the_headers_client_not_the_balancer() {
    let (srv, _) = start(
        "{key}",
        &[
            "--per-source-max-startups",
            "2",
            "--login-grace-time",
            "300",
        ],
    );
    // Two connections of 203.0.113.7 wait in key exchange; a third is
    // refused, while other clients of the same balancer get in.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = sent(&srv, &v2(CLIENT));
        assert!(greeted(&mut s));
        held.push(s);
    }
    let mut third = sent(&srv, &v1(CLIENT));
    assert!(!greeted(&mut third), "a third from {CLIENT}");
    let mut other = sent(&srv, &v2("203.0.113.8"));
    assert!(greeted(&mut other), "another client of the balancer");
    drop(session_via(&srv, &v1("198.51.100.1")));
    assert!(srv.wait_log("2 connections from 203.0.113.7 still logging in"));
}

#[test]
fn a_host_name_or_a_bad_block_in_the_flag_stops_the_server_at_start() {
    for (list, why) in [
        (
            "haproxy.local",
            "not an address or CIDR block (no host names",
        ),
        ("10.0.0.1/8", "address has bits set past /8"),
        ("127.0.0.1,", "empty entry"),
    ] {
        let out = std::process::Command::new("timeout")
            .arg("20")
            .arg(server_bin())
            .args(["--proxy-protocol-from", list])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{list}: {err}");
        assert!(
            err.contains("error: --proxy-protocol-from") && err.contains(why),
            "{err}"
        );
    }
}
