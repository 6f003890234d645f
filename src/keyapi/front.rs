//! The key API's own HTTP/1.1 front. rouille's server (tiny_http) starts a
//! thread per connection with no cap, no read timeout and no bound on a
//! header line, and its accept thread ends for good on the first failed
//! accept (out of fds): so this front accepts, bounds and parses requests
//! itself, and hands each one, as a `rouille::Request`, to
//! [`KeyApi::handle`].
//!
//! - At most [`Limits::max_conns`] connections at once, and
//!   [`Limits::max_per_source`] from one source (an IPv4 address, or an
//!   IPv6 /64); a connection over either cap is accepted, answered 503 with
//!   `Retry-After` without waiting, and closed.
//! - One request per connection: the answer carries `Connection: close`,
//!   so no idle keep-alive connection is ever held.
//! - The whole exchange (request line, headers, body, answer) must finish
//!   within [`Limits::deadline`] of the accept; every read and write is
//!   bounded by what is left of it (`SO_RCVTIMEO`/`SO_SNDTIMEO`), so a
//!   client that trickles bytes is closed as surely as a silent one.
//! - Request line and headers: at most 8 KiB (else 431); a body only with
//!   `Content-Length` (a `Transfer-Encoding` gets 411), read only up to
//!   [`MAX_BODY`]: a larger declared body is never read, and the handler
//!   answers 413 from the header.
//!
//! The fd reserve: the API's fds are its listener, two eventfds and, per
//! connection, its socket plus, while a registration waits for the
//! registry's file lock, the lock file: at most `2 * max_conns + 5`, and
//! `max_conns` is at most an eighth of the fd limit
//! ([`Limits::for_fd_limit`]). So whatever the key API's clients do, three
//! quarters of the limit (over 760 fds at the common 1024) stay for the SSH
//! side; no count of open fds is needed. A failed accept (say, out of fds
//! because of SSH sessions) pauses accepting for 100 ms instead of ending
//! the API.

use super::{Error, KeyApi, MAX_BODY, error};
use crate::os::{self, Wake};
use rouille::{Request, Response};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most connections at once, whatever the fd limit.
const MAX_CONNS: usize = 128;
/// Time for a whole exchange, from the accept to the last byte of the
/// answer.
const DEADLINE: Duration = Duration::from_secs(10);
/// Largest request line plus headers.
const MAX_HEAD: usize = 8 * 1024;
/// After the answer, unread bytes (a body that was not read) are read
/// and dropped for at most this long and this much before the close, so
/// that the close does not reset the connection under the answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// How long a failed accept leaves the listener out of the poll.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Stack of a connection's thread: std's default, as rouille's threads
/// had. The handler parses and drops JSON nested as deep as serde_json
/// allows (128 levels), which takes over 256 KiB in a debug build; a
/// stack overflow would abort the whole server.
const CONN_STACK: usize = 2 * 1024 * 1024;

/// The key API's bounds (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_conns: usize,
    pub max_per_source: usize,
    pub deadline: Duration,
}

impl Limits {
    /// The bounds for a process whose soft RLIMIT_NOFILE is `nofile`:
    /// at most 128 connections and at most an eighth of the limit (128
    /// at 1024), half of them from one source.
    pub fn for_fd_limit(nofile: u64) -> Limits {
        let eighth = usize::try_from(nofile / 8).unwrap_or(usize::MAX);
        let max_conns = eighth.clamp(2, MAX_CONNS);
        Limits {
            max_conns,
            max_per_source: max_conns / 2,
            deadline: DEADLINE,
        }
    }
}

/// A running key API server.
pub struct Running {
    stop: Arc<Wake>,
    thread: JoinHandle<()>,
    pub addr: SocketAddr,
}

impl Running {
    /// Stops accepting, closes every open connection and joins every
    /// thread of the API.
    pub fn stop(self) {
        self.stop.wake();
        let _ = self.thread.join();
    }
}

/// Starts the API on its own thread.
pub fn start(addr: &str, port: u16, api: KeyApi, limits: Limits) -> Result<Running, Error> {
    let fail = |e: io::Error| Error::Http(format!("key API cannot listen on {addr}:{port}: {e}"));
    // std opens the listener and every accepted socket close-on-exec.
    let listener = TcpListener::bind((addr, port)).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    let eventfd = |e| Error::io("cannot create an eventfd", e);
    let stop = Arc::new(Wake::new().map_err(eventfd)?);
    let (done_tx, done_rx) = channel();
    let front = Front {
        api: Arc::new(api),
        limits,
        listener,
        open: HashMap::new(),
        per_source: HashMap::new(),
        reap: Arc::new(Wake::new().map_err(eventfd)?),
        done_tx,
        done_rx,
        next_id: 1,
        refused: 0,
    };
    let wake = stop.clone();
    let thread = std::thread::Builder::new()
        .name("keyapi".into())
        .spawn(move || front.run(&wake))
        .map_err(|e| Error::io("cannot start the key API thread", e))?;
    log::info!(
        "key API listening on http://{local} (at most {} connections, {} per source, \
         {} s per request)",
        limits.max_conns,
        limits.max_per_source,
        limits.deadline.as_secs()
    );
    Ok(Running {
        stop,
        thread,
        addr: local,
    })
}

/// An admitted connection.
struct Open {
    /// Shared with its thread, so that a stop can shut it down.
    stream: Arc<TcpStream>,
    source: IpAddr,
    thread: JoinHandle<()>,
}

/// The accept loop's state; only its thread touches it.
struct Front {
    api: Arc<KeyApi>,
    limits: Limits,
    listener: TcpListener,
    open: HashMap<u64, Open>,
    per_source: HashMap<IpAddr, usize>,
    /// Woken by each connection thread as its last act, after sending
    /// its id on `done_tx`: the loop joins it and frees its slots.
    reap: Arc<Wake>,
    done_tx: Sender<u64>,
    done_rx: Receiver<u64>,
    next_id: u64,
    refused: u64,
}

impl Front {
    fn run(mut self, stop: &Wake) {
        let mut pause: Option<Instant> = None;
        loop {
            let listen_fd = match pause {
                Some(_) => -1,
                None => self.listener.as_raw_fd(),
            };
            let ready = match os::poll_readable(
                [listen_fd, stop.fd(), self.reap.fd()],
                os::poll_timeout(pause),
            ) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("key API: poll failed, the API stops: {e}");
                    break;
                }
            };
            if ready[1] {
                break;
            }
            if ready[2] {
                self.reap_finished();
                pause = None; // a connection closed: its fd is free
            }
            if pause.is_some_and(|t| t <= Instant::now()) {
                pause = None;
            }
            if !ready[0] {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    log::warn!(
                        "key API: cannot accept: {e}; pausing new connections for \
                         {ACCEPT_PAUSE:?}"
                    );
                    pause = Some(Instant::now() + ACCEPT_PAUSE);
                }
            }
        }
        for o in self.open.values() {
            let _ = o.stream.shutdown(Shutdown::Both);
        }
        for (_, o) in self.open.drain() {
            let _ = o.thread.join();
        }
    }

    fn reap_finished(&mut self) {
        self.reap.drain();
        let ids: Vec<u64> = self.done_rx.try_iter().collect();
        for id in ids {
            let Some(o) = self.open.remove(&id) else {
                continue;
            };
            let _ = o.thread.join();
            if let Some(n) = self.per_source.get_mut(&o.source) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&o.source);
                }
            }
        }
    }

    /// Starts a thread for the connection, or answers 503 and closes it
    /// if a cap is reached.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let source = source_of(peer.ip());
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        let over = if self.open.len() >= self.limits.max_conns {
            Some(format!("{} connections open", self.open.len()))
        } else if from_source >= self.limits.max_per_source {
            Some(format!("{from_source} connections open from {source}"))
        } else {
            None
        };
        if let Some(why) = over {
            self.refused += 1;
            // A flood must not flood the log: the first, then every 1000th.
            if self.refused % 1000 == 1 {
                log::warn!(
                    "key API: refused a connection from {} with 503: {why} ({} refused so far)",
                    peer.ip(),
                    self.refused
                );
            } else {
                log::debug!("key API: refused a connection from {}: {why}", peer.ip());
            }
            let busy = error(503, "too many connections, try again later")
                .with_additional_header("Retry-After", "1");
            // Without waiting: the answer fits any socket buffer.
            let _ = stream.set_nonblocking(true);
            let _ = (&stream).write_all(&wire_bytes(busy, false));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let stream = Arc::new(stream);
        let deadline = Instant::now() + self.limits.deadline;
        let (api, conn, done, reap) = (
            self.api.clone(),
            stream.clone(),
            self.done_tx.clone(),
            self.reap.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("keyapi-{id}"))
            .stack_size(CONN_STACK)
            .spawn(move || {
                let run = AssertUnwindSafe(|| serve(&api, &conn, peer, deadline));
                if catch_unwind(run).is_err() {
                    log::error!("key API: a connection from {} ended by a bug", peer.ip());
                }
                let _ = done.send(id);
                reap.wake();
            });
        match spawned {
            Ok(thread) => {
                self.open.insert(
                    id,
                    Open {
                        stream,
                        source,
                        thread,
                    },
                );
                *self.per_source.entry(source).or_insert(0) += 1;
            }
            Err(e) => log::error!("key API: cannot start a thread: {e}"),
        }
    }
}

/// What a per-source cap counts by: an IPv4 address (IPv4-mapped IPv6
/// included), or an IPv6 address's /64, which one host usually holds
/// whole.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !(u128::from(u64::MAX))).into()),
        },
        v4 => v4,
    }
}

/// Serves one request on `s`, then closes its sending side and waits
/// (briefly) for the peer to close.
fn serve(api: &KeyApi, s: &TcpStream, peer: SocketAddr, deadline: Instant) {
    let (answer, head_only) = match read_request(s, peer, deadline) {
        Ok(Some(req)) => {
            let head_only = req.method() == "HEAD";
            let answer = catch_unwind(AssertUnwindSafe(|| api.handle(&req))).unwrap_or_else(|_| {
                log::error!("key API: the handler failed on {}", req.raw_url());
                error(500, "internal error")
            });
            (answer, head_only)
        }
        // The peer left, or the deadline passed: nothing to answer.
        Ok(None) => return,
        Err(refusal) => (refusal, false),
    };
    if s.set_write_timeout(Some(left(deadline))).is_ok() {
        let _ = (&*s).write_all(&wire_bytes(answer, head_only));
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut dropped = Vec::new();
    let linger = deadline.min(Instant::now() + LINGER);
    while dropped.len() < LINGER_BYTES && read_more(s, &mut dropped, linger) {}
}

/// What is left until `deadline`, at least 1 ms (a zero socket timeout
/// would mean none).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// Reads what arrives next onto `buf` (up to 4 KiB); false at the end of
/// the stream, on an error, or once `deadline` has passed.
fn read_more(s: &TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if Instant::now() >= deadline || s.set_read_timeout(Some(left(deadline))).is_err() {
            return false;
        }
        match (&*s).read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Reads one request: `Ok(None)` if the peer leaves or the deadline
/// passes first, `Err` with the answer to a request that is refused
/// before the handler.
fn read_request(
    s: &TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<Option<Request>, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut scanned = 0;
    let end = loop {
        if let Some(p) = memchr::memmem::find(&buf[scanned..], b"\r\n\r\n") {
            break scanned + p;
        }
        if buf.len() > MAX_HEAD {
            return Err(error(431, "request header fields too large"));
        }
        scanned = buf.len().saturating_sub(3);
        if !read_more(s, &mut buf, deadline) {
            return Ok(None);
        }
    };
    if end > MAX_HEAD {
        return Err(error(431, "request header fields too large"));
    }
    let head = parse_head(&buf[..end]).map_err(|why| error(400, why))?;
    let mut body = buf.split_off(end + 4);
    let length = body_length(&head.headers)?;
    if length > MAX_BODY {
        // Never read: the handler refuses it from the header.
        body.clear();
    } else {
        let expects_continue =
            header(&head.headers, "Expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects_continue && body.len() < length {
            let _ = s.set_write_timeout(Some(left(deadline)));
            let _ = (&*s).write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        while body.len() < length {
            if !read_more(s, &mut body, deadline) {
                return Ok(None);
            }
        }
        body.truncate(length);
    }
    Ok(Some(Request::fake_http_from(
        peer,
        head.method,
        head.target,
        head.headers,
        body,
    )))
}

/// A request line and its headers.
#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

/// Parses a request head (without the blank line that ends it).
fn parse_head(raw: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err("malformed request line");
    };
    if method.is_empty() || !method.bytes().all(is_tchar) || target.is_empty() {
        return Err("malformed request line");
    }
    if target.bytes().any(|b| b.is_ascii_control()) {
        return Err("malformed request line");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("only HTTP/1.0 and HTTP/1.1 are spoken");
    }
    let mut headers = Vec::new();
    for l in lines {
        let (name, value) = l.split_once(':').ok_or("malformed header")?;
        let value = value.trim_matches([' ', '\t']);
        let bad_value = value.bytes().any(|b| b.is_ascii_control() && b != b'\t');
        if name.is_empty() || !name.bytes().all(is_tchar) || bad_value {
            return Err("malformed header");
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    })
}

/// A token character (RFC 9110): what header names and methods are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The body's length from `Content-Length` (0 without one; every copy of
/// the header must agree); a chunked body is refused with 411.
fn body_length(headers: &[(String, String)]) -> Result<usize, Response> {
    if header(headers, "Transfer-Encoding").is_some() {
        return Err(error(411, "a body needs a Content-Length"));
    }
    let mut length = None;
    for (_, v) in headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
    {
        let n = match v.parse::<u64>() {
            Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(error(400, "invalid Content-Length")),
        };
        if length.is_some_and(|l| l != n) {
            return Err(error(400, "invalid Content-Length"));
        }
        length = Some(n);
    }
    Ok(usize::try_from(length.unwrap_or(0)).unwrap_or(usize::MAX))
}

/// An answer as sent: the status line, the handler's headers but those
/// this front sets itself, `Content-Length`, `Connection: close`, and
/// the body (left out for HEAD).
fn wire_bytes(answer: Response, head_only: bool) -> Vec<u8> {
    const OURS: [&str; 7] = [
        "Content-Length",
        "Connection",
        "Transfer-Encoding",
        "Upgrade",
        "Trailer",
        "Accept-Ranges",
        "Content-Range",
    ];
    let Response {
        status_code,
        headers,
        data,
        ..
    } = answer;
    let mut body = Vec::new();
    let _ = data.into_reader_and_size().0.read_to_end(&mut body);
    let mut out = format!("HTTP/1.1 {status_code} {}\r\n", reason(status_code));
    for (k, v) in &headers {
        let ours = OURS.iter().any(|h| k.eq_ignore_ascii_case(h));
        let unsafe_text = k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']);
        if !ours && !unsafe_text {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&body);
    }
    bytes
}

/// The reason phrase of a status code (may be empty, as HTTP allows).
fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_take_an_eighth_of_the_fd_limit_up_to_128() {
        let at = |n| {
            let l = Limits::for_fd_limit(n);
            (l.max_conns, l.max_per_source)
        };
        assert_eq!(at(1024), (128, 64));
        assert_eq!(at(256), (32, 16));
        assert_eq!(at(1 << 20), (128, 64));
        assert_eq!(at(u64::MAX), (128, 64));
        assert_eq!(at(0), (2, 1));
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let s = |a: &str| source_of(a.parse().unwrap()).to_string();
        assert_eq!(s("127.0.0.3"), "127.0.0.3");
        assert_eq!(s("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(s("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(s("2001:db8:1:2::9"), s("2001:db8:1:2:ffff::1"));
    }

    #[test]
    fn heads_parse_and_malformed_ones_are_refused() {
        let h = parse_head(b"POST /register?x=1 HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nContent-Type:  application/json \t").unwrap();
        assert_eq!(
            (h.method.as_str(), h.target.as_str()),
            ("POST", "/register?x=1")
        );
        assert_eq!(header(&h.headers, "content-type"), Some("application/json"));
        assert_eq!(header(&h.headers, "x-empty"), Some(""));
        for bad in [
            &b"GET /"[..],
            b"GET / HTTP/1.1 extra",
            b"GET / HTTP/2.0",
            b"G(T / HTTP/1.1",
            b"GET /\x01 HTTP/1.1",
            b"GET / HTTP/1.1\r\nno colon",
            b"GET / HTTP/1.1\r\nBad Name: v",
            b"GET / HTTP/1.1\r\nX: a\x00b",
            b"GET / HTTP/1.1\r\nX: \xff",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn body_length_needs_one_agreeing_decimal_content_length() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let status = |r: Result<usize, Response>| r.map_err(|e| e.status_code);
        assert_eq!(status(body_length(&h(&[]))), Ok(0));
        assert_eq!(status(body_length(&h(&[("content-length", "12")]))), Ok(12));
        let twice = [("Content-Length", "5"), ("Content-Length", "5")];
        assert_eq!(status(body_length(&h(&twice))), Ok(5));
        let differ = [("Content-Length", "5"), ("Content-Length", "6")];
        assert_eq!(status(body_length(&h(&differ))), Err(400));
        for bad in ["-1", "+5", "0x10", "", "1 2"] {
            assert_eq!(
                status(body_length(&h(&[("Content-Length", bad)]))),
                Err(400),
                "{bad}"
            );
        }
        let chunked = [("Transfer-Encoding", "chunked")];
        assert_eq!(status(body_length(&h(&chunked))), Err(411));
    }

    #[test]
    fn answers_carry_length_and_close_and_drop_unsafe_headers() {
        let r = Response::text("hi")
            .with_additional_header("Retry-After", "3")
            .with_additional_header("Connection", "keep-alive")
            .with_additional_header("X-Bad", "a\r\nInjected: 1");
        let text = String::from_utf8(wire_bytes(r, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nRetry-After: 3\r\n"), "{text}");
        assert!(
            text.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\nhi"),
            "{text}"
        );
        assert!(
            !text.contains("keep-alive") && !text.contains("Injected"),
            "{text}"
        );
        let head = String::from_utf8(wire_bytes(Response::text("hi"), true)).unwrap();
        assert!(
            head.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
    }
}
