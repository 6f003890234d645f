//! The PROXY protocol (HAProxy's, v1 text and v2 binary), receiving side. A
//! TCP load balancer in front of the server sends one header before the SSH
//! bytes, naming the client it relays; that address, not the balancer's,
//! is then the client's for `from=`, the per-source limits, the logs and the
//! audit log (`--proxy-protocol-from`).
//!
//! [`parse`] is pure: it looks at the bytes read so far and says whether
//! they are a whole header, how many more bytes may be read without reading
//! past one, or what is wrong. [`read_header`] does the reading, on the
//! connection's thread, under a deadline and never a byte beyond the header:
//! the SSH client's banner follows at once and belongs to libssh.
//!
//! Accepted: v1 `TCP4`, `TCP6` and `UNKNOWN`; v2 `PROXY` over TCP/IPv4 and
//! TCP/IPv6, `PROXY` with `UNSPEC` and `LOCAL` (a health check: the
//! balancer speaks for itself). With `UNKNOWN`, `UNSPEC` and `LOCAL` the
//! connection's own peer stays the client, as the specification says. TLVs
//! are skipped. Refused: UDP and Unix-socket families (not an SSH client's),
//! a v1 line over 107 bytes, and a v2 address block over [`V2_MAX_BODY`].

use crate::keys::pattern::AddrPatterns;
use crate::os;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

/// The longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;

/// The shortest v1 header, `PROXY UNKNOWN\r\n`: this many bytes may always
/// be read first, whatever the header turns out to be.
const V1_MIN: usize = 15;

/// The v2 signature, the first 12 of its 16 fixed bytes.
pub const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v2 address block (addresses and TLVs) accepted. The protocol
/// allows 64 KiB; HAProxy in TCP mode sends 12 (IPv4) or 36 (IPv6) bytes
/// plus a few small TLVs, and cloud balancers' TLVs are tens of bytes. A
/// bound keeps a broken sender from making the server read and hold 64 KiB.
pub const V2_MAX_BODY: usize = 1024;

const V1_START: &[u8] = b"PROXY ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// A whole header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// The client the balancer relays; `None` when it speaks for itself
    /// (v2 `LOCAL`) or does not say (v1 `UNKNOWN`, v2 `UNSPEC`): the
    /// connection's own peer stays the client then.
    pub source: Option<SocketAddr>,
    /// Its length in bytes: the SSH stream starts after it.
    pub len: usize,
}

/// What the bytes read so far are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header (the first `len` bytes; what follows is not looked at).
    Done(Header),
    /// Not a whole header yet: at most `max` more bytes belong to it and may
    /// be read; with `line`, only those up to and including the first `\n`
    /// (a v1 header ends there, at an unknown length).
    More { max: usize, line: bool },
    /// Not a header the server takes.
    Bad(Bad),
}

/// Why a header is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Not a PROXY header at all; `ssh` when it is the start of an SSH
    /// banner (a client that came straight to the server).
    NoHeader { ssh: bool },
    /// A v1 line with no CRLF within 107 bytes.
    TooLong,
    /// A v2 address block of this many bytes, over [`V2_MAX_BODY`].
    TooBig(usize),
    /// A v1 line that breaks the format: what is wrong.
    Malformed(&'static str),
    /// A v2 version/command byte other than 2/LOCAL or 2/PROXY.
    Command(u8),
    /// A v2 family/transport byte other than TCP over IPv4 or IPv6 (or
    /// UNSPEC), for a PROXY command.
    Family(u8),
    /// A v2 address block of this many bytes, too short for its family.
    Short(usize),
    /// The peer closed the connection after this many bytes of a header.
    Truncated(usize),
    /// The login deadline passed after this many bytes of a header.
    Deadline(usize),
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::NoHeader { ssh: true } => f.write_str(
                "it sent an SSH banner, no PROXY header: a client came straight to the server, \
                 not through the balancer",
            ),
            Bad::NoHeader { ssh: false } => f.write_str("it sent no PROXY header"),
            Bad::TooLong => write!(f, "PROXY v1 line without CRLF in {V1_MAX} bytes"),
            Bad::TooBig(n) => write!(
                f,
                "PROXY v2 address block of {n} bytes (at most {V2_MAX_BODY} accepted)"
            ),
            Bad::Malformed(why) => write!(f, "malformed PROXY v1 line: {why}"),
            Bad::Command(b) => write!(
                f,
                "PROXY v2 version/command byte {b:#04x} (only 0x20 LOCAL and 0x21 PROXY)"
            ),
            Bad::Family(b) => write!(
                f,
                "PROXY v2 family/transport byte {b:#04x} (only 0x11 TCP/IPv4, 0x21 TCP/IPv6 \
                 and 0x00 UNSPEC)"
            ),
            Bad::Short(n) => write!(
                f,
                "PROXY v2 address block of {n} bytes, too short for its family"
            ),
            Bad::Truncated(n) => write!(f, "it closed the connection after {n} bytes of a header"),
            Bad::Deadline(n) => write!(
                f,
                "no whole PROXY header by the login deadline ({n} bytes came)"
            ),
        }
    }
}

/// Looks at `buf`, the bytes read so far from a connection that must start
/// with a header.
pub fn parse(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Parsed::More {
            max: V1_MIN,
            line: true,
        },
        Some(b'\r') => parse_v2(buf),
        Some(b'P') => parse_v1(buf),
        Some(_) => Parsed::Bad(Bad::NoHeader {
            ssh: b"SSH-".starts_with(&buf[..buf.len().min(4)]),
        }),
    }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let known = buf.len().min(V1_START.len());
    if buf[..known] != V1_START[..known] {
        return Parsed::Bad(Bad::NoHeader { ssh: false });
    }
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Parsed::Bad(Bad::TooLong);
        }
        return Parsed::More {
            max: V1_MAX - buf.len(),
            line: true,
        };
    };
    if end >= V1_MAX {
        return Parsed::Bad(Bad::TooLong);
    }
    let Some(line) = buf[..end].strip_suffix(b"\r") else {
        return Parsed::Bad(Bad::Malformed("the line ends in LF without CR"));
    };
    match v1_source(line) {
        Ok(source) => Parsed::Done(Header {
            version: Version::V1,
            source,
            len: end + 1,
        }),
        Err(why) => Parsed::Bad(Bad::Malformed(why)),
    }
}

/// The client of a v1 line (CRLF removed).
fn v1_source(line: &[u8]) -> Result<Option<SocketAddr>, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "not ASCII")?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", checked
    let v6 = match fields.next() {
        Some("UNKNOWN") => return Ok(None), // the rest is to be ignored
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => return Err("the protocol must be TCP4, TCP6 or UNKNOWN"),
    };
    let f: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = f[..] else {
        return Err("TCP4 and TCP6 take four fields, single-spaced");
    };
    let ip = |s: &str| -> Result<IpAddr, &'static str> {
        if v6 {
            s.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| "not an IPv6 address")
        } else {
            s.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| "not an IPv4 address")
        }
    };
    let (src, _) = (ip(src)?, ip(dst)?);
    let port = |s: &str| -> Result<u16, &'static str> {
        match s.parse() {
            Ok(p) if !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(p)
            }
            _ => Err("a port must be a decimal number up to 65535"),
        }
    };
    port(dport)?;
    Ok(Some(SocketAddr::new(src, port(sport)?)))
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let known = buf.len().min(V2_SIG.len());
    if buf[..known] != V2_SIG[..known] {
        return Parsed::Bad(Bad::NoHeader { ssh: false });
    }
    if buf.len() < 16 {
        return Parsed::More {
            max: 16 - buf.len(),
            line: false,
        };
    }
    let (command, family) = (buf[12], buf[13]);
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if command != 0x20 && command != 0x21 {
        return Parsed::Bad(Bad::Command(command));
    }
    if body > V2_MAX_BODY {
        return Parsed::Bad(Bad::TooBig(body));
    }
    let len = 16 + body;
    if buf.len() < len {
        return Parsed::More {
            max: len - buf.len(),
            line: false,
        };
    }
    let done = |source| {
        Parsed::Done(Header {
            version: Version::V2,
            source,
            len,
        })
    };
    let b = &buf[16..len];
    // LOCAL: the balancer's own connection (health checks); its address
    // block, whatever it holds, is ignored.
    if command == 0x20 {
        return done(None);
    }
    match family {
        0x00 => done(None),
        0x11 if body >= 12 => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            done(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        0x21 if body >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[..16]);
            done(Some(SocketAddr::new(
                Ipv6Addr::from(a).into(),
                u16::from_be_bytes([b[32], b[33]]),
            )))
        }
        0x11 | 0x21 => Parsed::Bad(Bad::Short(body)),
        other => Parsed::Bad(Bad::Family(other)),
    }
}

/// Reads one header from `stream` and not a byte more, by `deadline`;
/// `None` if `wake` (the server's shutdown) fires first. The stream is a
/// blocking socket: each read comes after poll reports data, so none waits.
pub fn read_header(
    stream: &mut TcpStream,
    deadline: Instant,
    wake: RawFd,
) -> Option<Result<Header, Bad>> {
    let mut buf: Vec<u8> = Vec::with_capacity(64);
    let mut chunk = [0u8; 16 + V2_MAX_BODY];
    loop {
        let (max, line) = match parse(&buf) {
            Parsed::Done(h) => return Some(Ok(h)),
            Parsed::Bad(why) => return Some(Err(why)),
            Parsed::More { max, line } => (max, line),
        };
        let ready =
            match os::poll_readable([stream.as_raw_fd(), wake], os::poll_timeout(Some(deadline))) {
                Ok(r) => r,
                Err(_) => return Some(Err(Bad::Truncated(buf.len()))),
            };
        if ready[1] {
            return None;
        }
        if !ready[0] {
            if Instant::now() >= deadline {
                return Some(Err(Bad::Deadline(buf.len())));
            }
            continue; // interrupted
        }
        let want = &mut chunk[..max];
        // A v1 line ends at its LF: look before taking, and take no more.
        let got = if line {
            match stream.peek(want) {
                Ok(0) | Err(_) => 0,
                Ok(n) => {
                    let n = want[..n]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(n, |p| p + 1);
                    match stream.read_exact(&mut want[..n]) {
                        Ok(()) => n,
                        Err(_) => 0,
                    }
                }
            }
        } else {
            stream.read(want).unwrap_or(0)
        };
        if got == 0 {
            return Some(Err(Bad::Truncated(buf.len())));
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// Parses `--proxy-protocol-from`: the addresses that must send a header,
/// as the `from=` option writes them (addresses, CIDR blocks, `*`/`?`
/// wildcards, `!` to exclude), host names refused (there is no DNS).
pub fn parse_senders(list: &str) -> Result<AddrPatterns, String> {
    let bad = |why: String| format!("--proxy-protocol-from {list:?}: {why}");
    for entry in list.split(',') {
        let body = entry.strip_prefix('!').unwrap_or(entry);
        if !body
            .chars()
            .all(|c| c.is_ascii_hexdigit() || ".:/*?".contains(c))
        {
            return Err(bad(format!(
                "{entry:?} is not an address or CIDR block (no host names: there is no DNS)"
            )));
        }
    }
    AddrPatterns::parse(list).map_err(bad)
}

/// Which PROXY header a client's first line (as libssh received it, CR and
/// LF removed) starts, if any: v1's text, or v2's binary signature, whose
/// first line is empty. For the log line that names a sender missing from
/// `--proxy-protocol-from` (or a client pretending to be one).
pub fn header_banner(banner: &str) -> Option<Version> {
    if banner.starts_with("PROXY ") {
        Some(Version::V1)
    } else if banner.is_empty() {
        Some(Version::V2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn done(buf: &[u8]) -> Header {
        match parse(buf) {
            Parsed::Done(h) => h,
            other => panic!("{other:?} for {buf:?}"),
        }
    }

    fn bad(buf: &[u8]) -> Bad {
        match parse(buf) {
            Parsed::Bad(b) => b,
            other => panic!("{other:?} for {buf:?}"),
        }
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// A v2 header: command byte, family byte, address block.
    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.extend([command, family]);
        h.extend((body.len() as u16).to_be_bytes());
        h.extend(body);
        h
    }

    fn v4_block() -> Vec<u8> {
        let mut b = vec![203, 0, 113, 7, 192, 0, 2, 1];
        b.extend(51234u16.to_be_bytes());
        b.extend(22u16.to_be_bytes());
        b
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 22\r\nSSH-2.0-x\r\n";
        let h = done(line);
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.source, sa("203.0.113.7:51234"));
        assert_eq!(&line[h.len..], b"SSH-2.0-x\r\n");
        let h = done(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 22\r\n");
        assert_eq!(h.source, sa("[2001:db8::7]:65535"));
        let h = done(b"PROXY UNKNOWN\r\n");
        assert_eq!((h.source, h.len), (None, 15));
        let h = done(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
        assert_eq!(h.source, None);
    }

    #[test]
    fn the_longest_v1_line_fits_and_one_more_byte_does_not() {
        let a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        // The specification's worst case.
        let line = format!("PROXY UNKNOWN {a} {a} 65535 65535\r\n");
        assert_eq!(line.len(), V1_MAX);
        assert_eq!(done(line.as_bytes()).len, V1_MAX);
        let tcp6 = format!("PROXY TCP6 {a} {a} 65535 65535\r\n");
        assert!(done(tcp6.as_bytes()).source.is_some());
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX));
        assert_eq!(bad(long.as_bytes()), Bad::TooLong);
        assert_eq!(bad(&long.as_bytes()[..V1_MAX]), Bad::TooLong);
    }

    #[test]
    fn a_v1_prefix_asks_for_more_up_to_its_line_end() {
        assert_eq!(
            parse(b""),
            Parsed::More {
                max: V1_MIN,
                line: true
            }
        );
        assert_eq!(
            parse(b"PROXY TCP4 1.2"),
            Parsed::More {
                max: V1_MAX - 14,
                line: true
            }
        );
        assert_eq!(
            parse(b"PRO"),
            Parsed::More {
                max: V1_MAX - 3,
                line: true
            }
        );
    }

    #[test]
    fn malformed_v1_lines_are_refused() {
        for line in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 22\n"[..],
            b"PROXY TCP4 2001:db8::7 192.0.2.1 51234 22\r\n",
            b"PROXY TCP6 203.0.113.7 2001:db8::1 51234 22\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 22\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 +5 22\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 51234\r\n",
            b"PROXY TCP4 203.0.113.7  192.0.2.1 51234 22\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 22 x\r\n",
            b"PROXY UDP4 203.0.113.7 192.0.2.1 51234 22\r\n",
            b"PROXY TCP4 999.0.113.7 192.0.2.1 51234 22\r\n",
            b"PROXY TCP4 \xff.0.113.7 192.0.2.1 51234 22\r\n",
        ] {
            assert!(matches!(bad(line), Bad::Malformed(_)), "{line:?}");
        }
        assert_eq!(bad(b"PROXX "), Bad::NoHeader { ssh: false });
    }

    #[test]
    fn v2_proxy_over_ipv4_and_ipv6_with_tlvs_skipped() {
        let mut block = v4_block();
        block.extend([0x04, 0x00, 0x02, b'h', b'i']); // a NOOP TLV
        let mut h = v2(0x21, 0x11, &block);
        let len = h.len();
        h.extend(b"SSH-2.0-x\r\n");
        let got = done(&h);
        assert_eq!(got.version, Version::V2);
        assert_eq!(got.source, sa("203.0.113.7:51234"));
        assert_eq!(got.len, len);

        let mut block = Vec::new();
        block.extend("2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        block.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend(4242u16.to_be_bytes());
        block.extend(22u16.to_be_bytes());
        assert_eq!(
            done(&v2(0x21, 0x21, &block)).source,
            sa("[2001:db8::7]:4242")
        );
    }

    #[test]
    fn v2_local_and_unspec_keep_the_connections_own_peer() {
        assert_eq!(done(&v2(0x20, 0x00, &[])).source, None);
        // LOCAL ignores whatever address block it carries.
        assert_eq!(done(&v2(0x20, 0x11, &v4_block())).source, None);
        assert_eq!(done(&v2(0x21, 0x00, &[])).source, None);
    }

    #[test]
    fn v2_prefixes_ask_for_exactly_what_is_missing() {
        let h = v2(0x21, 0x11, &v4_block());
        assert_eq!(
            parse(&h[..2]),
            Parsed::More {
                max: 14,
                line: false
            }
        );
        assert_eq!(
            parse(&h[..16]),
            Parsed::More {
                max: 12,
                line: false
            }
        );
        assert_eq!(
            parse(&h[..20]),
            Parsed::More {
                max: 8,
                line: false
            }
        );
    }

    #[test]
    fn bad_v2_headers_are_refused() {
        let mut sig = v2(0x21, 0x11, &v4_block());
        sig[7] = b'X';
        assert_eq!(bad(&sig), Bad::NoHeader { ssh: false });
        assert_eq!(bad(&v2(0x21, 0x12, &v4_block())), Bad::Family(0x12), "UDP");
        assert_eq!(bad(&v2(0x21, 0x31, &[0; 216])), Bad::Family(0x31), "unix");
        assert_eq!(bad(&v2(0x21, 0x51, &v4_block())), Bad::Family(0x51));
        assert_eq!(bad(&v2(0x22, 0x11, &v4_block())), Bad::Command(0x22));
        assert_eq!(bad(&v2(0x11, 0x11, &v4_block())), Bad::Command(0x11));
        assert_eq!(bad(&v2(0x21, 0x11, &[1, 2, 3])), Bad::Short(3));
        assert_eq!(bad(&v2(0x21, 0x21, &v4_block())), Bad::Short(12));
    }

    #[test]
    fn an_oversized_v2_block_is_refused_from_its_length_alone() {
        let mut h = V2_SIG.to_vec();
        h.extend([0x21, 0x11]);
        h.extend(((V2_MAX_BODY + 1) as u16).to_be_bytes());
        assert_eq!(bad(&h), Bad::TooBig(V2_MAX_BODY + 1));
        assert!(matches!(
            parse(&v2(0x21, 0x11, &vec![0; V2_MAX_BODY])),
            Parsed::Done(_)
        ));
    }

    #[test]
    fn an_ssh_banner_or_other_bytes_are_no_header() {
        assert_eq!(bad(b"SSH-2.0-OpenSSH_9.2\r\n"), Bad::NoHeader { ssh: true });
        assert_eq!(bad(b"S"), Bad::NoHeader { ssh: true });
        assert_eq!(bad(b"GET / HTTP/1.1\r\n"), Bad::NoHeader { ssh: false });
        assert_eq!(bad(b"\r\n\r\n\r"), Bad::NoHeader { ssh: false });
    }

    #[test]
    fn senders_are_addresses_and_blocks_never_host_names() {
        let s = parse_senders("127.0.0.1,10.0.0.0/8,!10.9.9.9,2001:db8::/32").unwrap();
        assert!(s.matches("127.0.0.1".parse().unwrap()));
        assert!(s.matches("10.1.2.3".parse().unwrap()));
        assert!(!s.matches("10.9.9.9".parse().unwrap()));
        assert!(s.matches("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!s.matches("127.0.0.2".parse().unwrap()));
        for wrong in ["haproxy.local", "10.0.0.0/33", "", "1.2.3.4,", "10.0.0.1/8"] {
            let e = parse_senders(wrong).unwrap_err();
            assert!(e.starts_with("--proxy-protocol-from"), "{e}");
        }
    }

    /// A loopback connection: (the server's end, the client's end).
    fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap().0, c)
    }

    #[test]
    fn read_header_takes_the_header_and_leaves_the_ssh_banner_after_it() {
        let mut block = v4_block();
        block.extend([0x04, 0x00, 0x01, 0x00]); // a TLV
        let v2h = v2(0x21, 0x11, &block);
        let v1h = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 22\r\n".to_vec();
        let never = os::Wake::new().unwrap(); // not woken
        for header in [v1h, v2h, b"PROXY UNKNOWN\r\n".to_vec()] {
            let (mut server, mut client) = pair();
            // One byte at a time, then the banner: each read must stop in time.
            let sent = header.clone();
            let writer = std::thread::spawn(move || {
                for b in &sent {
                    client.write_all(&[*b]).unwrap();
                }
                client.write_all(b"SSH-2.0-x\r\n").unwrap();
                client
            });
            let deadline = Instant::now() + std::time::Duration::from_secs(20);
            let h = read_header(&mut server, deadline, never.fd())
                .expect("not woken")
                .expect("a header");
            assert_eq!(h.len, header.len());
            let _client = writer.join().unwrap();
            let mut rest = [0u8; 11];
            server.read_exact(&mut rest).unwrap();
            assert_eq!(&rest, b"SSH-2.0-x\r\n");
        }
    }

    #[test]
    fn read_header_reports_a_sender_that_hangs_up_midway() {
        let never = os::Wake::new().unwrap();
        let (mut server, mut client) = pair();
        client
            .write_all(&v2(0x21, 0x11, &v4_block())[..20])
            .unwrap();
        drop(client);
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let got = read_header(&mut server, deadline, never.fd());
        assert_eq!(got, Some(Err(Bad::Truncated(20))));
    }

    #[test]
    fn first_lines_that_start_a_header_are_recognised() {
        let v1 = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2";
        assert_eq!(header_banner(v1), Some(Version::V1));
        assert_eq!(header_banner(""), Some(Version::V2));
        assert_eq!(header_banner("SSH-2.0-OpenSSH_9.2"), None);
        assert_eq!(header_banner("GET / HTTP/1.1"), None);
    }
}
