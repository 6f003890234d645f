//! The key API's bounds against the real binary: a flood of requests that
//! never finish, under a 1024-fd limit, leaves SSH logins and /health
//! served; a request that stalls or trickles is closed at its deadline;
//! a connection over the per-source cap gets 503 at once; a body nested as
//! deep as JSON allows does not overflow a connection thread's stack.

use crate::common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// A python3 helper (std's TcpStream cannot pick its source address):
/// opens `argv[2]` connections from 127.0.0.3 to the key API on port
/// `argv[1]`, sends each the headers of a POST that announce a body and
/// never the body, prints `{"connected": N, "failed": N}` and holds them all
/// until its stdin closes or it is killed.
const FLOOD: &str = r#"
import json, resource, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
head = (b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
held, failed = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(5)
    s.bind(("127.0.0.3", 0))
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        failed += 1
        s.close()
        continue
    held.append(s)
    try:
        s.sendall(head)
    except OSError:
        pass  # already refused (503) and closed by the server
print(json.dumps({"connected": len(held), "failed": failed}), flush=True)
sys.stdin.read()
"#;

/// The soft and hard RLIMIT_NOFILE of `pid`, from /proc.
fn nofile_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("no open-files line");
    let mut n = line.split_whitespace().skip(3).map(|w| w.parse().unwrap());
    (n.next().unwrap(), n.next().unwrap())
}

/// A number from the key API's start-up line, `... (at most N connections,
/// M per source, S s per request)`: the word before `what`.
fn logged_limit(srv: &Server, what: &str) -> usize {
    let log = srv.log();
    let line = log
        .lines()
        .find(|l| l.contains("key API listening"))
        .expect("no key API start-up line");
    let words: Vec<&str> = line.split([' ', ',', '(']).collect();
    let at = words.iter().position(|w| *w == what).expect(what);
    words[at - 1].parse().unwrap()
}

#[test]
fn a_thousand_stalled_requests_under_1024_fds_leave_ssh_and_health_served() {
    let (srv, api) = Server::start_with_key_api(alpha(), &[]);
    let pid = srv.pid();
    let (soft, hard) = nofile_limits(pid);
    assert_eq!(
        soft, hard,
        "the soft fd limit was not raised to the hard one"
    );
    // The common limit, soft and hard, as `prlimit --nofile=1024:1024`.
    let set = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=1024:1024"])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(set.success());
    assert_eq!(nofile_limits(pid), (1024, 1024));
    let mut cmd = Command::new("python3");
    cmd.args(["-c", FLOOD, &api.to_string(), "1000"]);
    let mut flood = StdioClient::spawn(cmd);
    assert_eq!(flood.recv(), json!({"connected": 1000, "failed": 0}));
    // While they are held: the key API holds its share of fds, not all.
    let fds = fd_count(pid);
    assert!(fds < 256, "{fds} fds open: {:?}", fd_list(pid));
    let mut c = srv.connect();
    assert!(c.initialize()["result"].is_object());
    assert_eq!(
        text(&c.call("echo", json!({"text": "still here"}))),
        "still here"
    );
    let (st, _, body) = get(api, "/health");
    assert_eq!(st, 200, "{body}");
    assert!(
        srv.log()
            .contains("key API: refused a connection from 127.0.0.3 with 503")
    );
}

#[test]
fn a_request_that_stalls_or_trickles_is_closed_by_its_deadline() {
    let (_srv, api) = Server::start_with_key_api(json!({}), &[]);
    // Closed means: EOF (or a reset) within WAIT, the deadline being 10 s.
    let silent = std::thread::spawn(move || bytes_until_hangup(api, WAIT.as_secs()));
    let partial = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", api)).unwrap();
        s.write_all(b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            .unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        let end = s.read_to_end(&mut got);
        assert!(
            !end.as_ref().is_err_and(still_open),
            "still open after {WAIT:?}"
        );
        got
    });
    // A header line every 200 ms: each read is quick, the whole is not.
    let mut s = TcpStream::connect(("127.0.0.1", api)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut closed = s.write_all(b"GET /health HTTP/1.1\r\n").is_err();
    while !closed && start.elapsed() < WAIT {
        closed = s.write_all(b"X-Slow: 1\r\n").is_err()
            || match s.read(&mut [0u8; 64]) {
                Ok(n) => n == 0,
                Err(e) => !still_open(&e),
            };
    }
    assert!(closed, "a trickling request was still open after {WAIT:?}");
    assert_eq!(silent.join().unwrap(), b"");
    assert_eq!(partial.join().unwrap(), b"");
}

/// Whether a read failed only for its timeout.
fn still_open(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[test]
fn over_the_per_source_cap_a_connection_gets_503_until_a_slot_frees() {
    let (srv, api) = Server::start_with_key_api(json!({}), &[]);
    let per_source = logged_limit(&srv, "per");
    assert_eq!(per_source, 64, "the default at a 1024-fd limit or above");
    let idle: Vec<TcpStream> = (0..per_source)
        .map(|_| TcpStream::connect(("127.0.0.1", api)).unwrap())
        .collect();
    // Accepted in order: by the time this one is, the idle ones hold every
    // slot of 127.0.0.1.
    let (st, head, body) = get(api, "/health");
    assert_eq!(st, 503, "{head}{body}");
    assert!(head.contains("Retry-After: 1"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    drop(idle);
    assert!(eventually(|| get(api, "/health").0 == 200));
}

#[test]
fn bodies_nested_as_deep_as_json_allows_get_400_and_the_server_lives() {
    let (_srv, api) = Server::start_with_key_api(json!({}), &["--key-server-rate-limit", "1000"]);
    let arrays = format!("{}{}", "[".repeat(127), "]".repeat(127));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(127), "}".repeat(127));
    for body in [arrays, objects] {
        let (st, _, resp) = post_register(api, "application/json", body.as_bytes());
        assert_eq!(st, 400, "{resp}");
    }
    assert_eq!(get(api, "/health").0, 200);
}
