//! Load driver for `scripts/bench.sh`: runs a shell command that speaks MCP
//! on stdio (a child directly, `ssh -T ...`, or our client) and measures it.
//!
//! ```text
//! mcp_bench connect  CMD REPEATS                 -> connect-to-tools/list ms (median)
//! mcp_bench latency  CMD CALLS TOOL ARGS_JSON    -> p50/p90/p99 us of sequential tools/call
//! mcp_bench latency-eras CMD CALLS TOOL ARGS_JSON [PAIRS [same-bytes]] -> the same for a legacy and a
//!                                                   2026-07-28 session side by side, calls alternating,
//!                                                   over PAIRS (5) fresh pairs; ratio_p50 is the median
//!                                                   of the pairs' p50 ratios; same-bytes (echo child)
//!                                                   adds a legacy session whose messages are as long
//!                                                   as the modern ones on the SSH leg
//! mcp_bench latency-ab CMD_A CMD_B CALLS TOOL ARGS_JSON [PAIRS] -> the same for a session to each command
//!                                                   side by side, calls alternating, over PAIRS (5) fresh
//!                                                   pairs; diff_p50_us is the median of the pairs' B - A
//! mcp_bench big      CMD BYTES                   -> ms for one echo of BYTES, checked intact
//! mcp_bench throughput CMD SESSIONS CALLS TOOL ARGS_JSON -> calls/s over all sessions
//!                                                   (MCP_BENCH_SYNC=1: prints "ready" and "done" around
//!                                                   the calls, each time waiting for a line on stdin)
//! mcp_bench hold     CMD SESSIONS                -> opens and initializes, prints "ready", waits for stdin EOF
//! mcp_bench sessions CMD COUNT PARALLEL          -> COUNT short sessions (initialize, tools/list), PARALLEL at a time;
//!                                                   fails if none finishes for 10 s (a stalled session)
//! ```
//! Prints one JSON object on stdout; exits non-zero on any failure.
//! `MCP_BENCH_MORE=REQUEST,ANSWER` makes `latency` a same-bytes session
//! (see latency-eras) whose request and answer are that much longer.
//! `MCP_BENCH_ERA=2026-07-28` speaks that revision instead: no
//! `initialize` (a `server/discover` opens the session) and the `_meta`
//! envelope on every request.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

struct Session {
    /// It speaks 2026-07-28.
    modern: bool,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
    line: String,
}

impl Session {
    fn start(cmd: &str) -> Session {
        Session::start_era(cmd, modern())
    }

    fn start_era(cmd: &str, modern: bool) -> Session {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
        Session {
            modern,
            child,
            stdin,
            stdout,
            next: 0,
            line: String::new(),
        }
    }

    fn request(&mut self, method: &str, mut params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        if self.modern {
            params["_meta"] = meta();
        }
        let mut buf = serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .unwrap();
        buf.push(b'\n');
        self.stdin.write_all(&buf).expect("write request");
        self.stdin.flush().unwrap();
        loop {
            self.line.clear();
            let n = self.stdout.read_line(&mut self.line).expect("read");
            if n == 0 {
                eprintln!("mcp_bench: the command closed its output");
                std::process::exit(1);
            }
            let v: Value = match serde_json::from_str(&self.line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v.get("id") == Some(&json!(id)) && v.get("method").is_none() {
                if v.get("error").is_some() {
                    eprintln!("mcp_bench: {method} failed: {v}");
                    std::process::exit(1);
                }
                return v;
            }
        }
    }

    /// The timed call of `latency`: the request's text is built once
    /// (`tail` is everything after the id) and the answer is validated but
    /// not built as a tree, so the client's own JSON work is small and the
    /// same in both eras, and the gateway's cost is what differs.
    fn call_text(&mut self, tail: &str) {
        #[derive(serde::Deserialize)]
        struct Answer {
            id: Option<u64>,
            method: Option<serde::de::IgnoredAny>,
            error: Option<serde::de::IgnoredAny>,
        }
        self.next += 1;
        let id = self.next;
        let mut buf = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},{tail}\n");
        self.stdin.write_all(buf.as_bytes()).expect("write request");
        self.stdin.flush().unwrap();
        loop {
            buf.clear();
            if self.stdout.read_line(&mut buf).expect("read") == 0 {
                eprintln!("mcp_bench: the command closed its output");
                std::process::exit(1);
            }
            let Ok(a) = serde_json::from_str::<Answer>(&buf) else {
                continue;
            };
            if a.id == Some(id) && a.method.is_none() {
                if a.error.is_some() {
                    eprintln!("mcp_bench: the call failed: {buf}");
                    std::process::exit(1);
                }
                return;
            }
        }
    }

    /// Initializes, lists, makes 50 calls of `tool` and returns the text
    /// of the timed call for [`Session::call_text`].
    fn warm_call(&mut self, tool: &str, args: &str) -> String {
        self.initialize();
        self.request("tools/list", json!({}));
        let args = serde_json::from_str::<Value>(args).unwrap_or_else(|e| {
            eprintln!("mcp_bench: ARGS_JSON: {e}");
            std::process::exit(2)
        });
        let mut params = json!({"name": tool, "arguments": args});
        for _ in 0..50 {
            self.request("tools/call", params.clone());
        }
        if self.modern {
            params["_meta"] = meta();
        }
        let call = json!({"method": "tools/call", "params": params}).to_string();
        call[1..].to_owned() // after the '{', which the id's text opens
    }

    fn initialize(&mut self) {
        if self.modern {
            self.request("server/discover", json!({}));
            return;
        }
        self.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "mcp_bench", "version": "1"}}),
        );
        self.stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .unwrap();
    }

    fn close(mut self) {
        drop(self.stdin);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `_meta` of every 2026-07-28 request.
fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "mcp_bench", "version": "1"},
    })
}

/// `MCP_BENCH_ERA=2026-07-28`: a client of that revision.
fn modern() -> bool {
    static MODERN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MODERN.get_or_init(|| std::env::var("MCP_BENCH_ERA").is_ok_and(|v| v == "2026-07-28"))
}

/// `args` (the echo child's, with a string `text`) asking for an answer
/// `more` bytes longer (echo_mcp's `more` argument).
fn with_more(args: &str, more: usize) -> String {
    let mut v: Value = serde_json::from_str(args).unwrap_or_else(|e| {
        eprintln!("mcp_bench: ARGS_JSON: {e}");
        std::process::exit(2)
    });
    if v.get("text").and_then(Value::as_str).is_none() {
        eprintln!("mcp_bench: same-bytes needs the echo child's {{\"text\": ...}} arguments");
        std::process::exit(2)
    }
    v["more"] = json!(more);
    v.to_string()
}

/// A same-bytes session's call (see latency-eras): `s` warmed with the
/// echo child's `args` asking for `more_answer` more bytes, its tail
/// lengthened by spaces to the plain call's length plus `more_request`;
/// and how many more bytes than the plain call's its request carries to
/// the child.
fn same_bytes_tail(
    s: &mut Session,
    tool: &str,
    args: &str,
    more_request: usize,
    more_answer: usize,
) -> (String, usize) {
    let grown = with_more(args, more_answer);
    let tail = s.warm_call(tool, &grown);
    // The plain call's tail differs only in its arguments.
    let plain_args = serde_json::from_str::<Value>(args).map_or(0, |v| v.to_string().len());
    let to_child = grown.len() - plain_args;
    (
        spaced(&tail, tail.len() - to_child + more_request),
        to_child,
    )
}

/// Opens two sessions (`open(0)`, `open(1)`), the second first when
/// `second_first`: a session keeps its threads' placement for its life,
/// and which opens first can favour it.
fn open_pair(open: impl Fn(usize) -> Session, second_first: bool) -> Vec<Session> {
    if second_first {
        let b = open(1);
        vec![open(0), b]
    } else {
        let a = open(0);
        vec![a, open(1)]
    }
}

/// `rounds` rounds of one call per session, each session going first in
/// turn; closes the sessions. The times in us, per session.
fn alternate(sessions: Vec<Session>, tails: &[String], rounds: usize) -> Vec<Vec<u128>> {
    let mut s = sessions;
    let n = s.len();
    let mut us = vec![Vec::with_capacity(rounds); n];
    for i in 0..rounds {
        for k in 0..n {
            let k = (k + i) % n;
            let t = Instant::now();
            s[k].call_text(&tails[k]);
            us[k].push(t.elapsed().as_micros());
        }
    }
    for session in s {
        session.close();
    }
    us
}

/// The p50 of `us` (sorted here), in us.
fn p50(us: &mut [u128]) -> f64 {
    percentiles(us)["p50_us"].as_f64().unwrap_or(0.0)
}

/// A call's `tail` with spaces after `"params":` until it is `len` bytes
/// long (unchanged if it is already): JSON whitespace, which the gateway
/// parses and does not forward.
fn spaced(tail: &str, len: usize) -> String {
    let at = tail
        .find("\"params\":")
        .map_or(0, |i| i + "\"params\":".len());
    let spaces = " ".repeat(len.saturating_sub(tail.len()));
    format!("{}{spaces}{}", &tail[..at], &tail[at..])
}

/// p50/p90/p99 of `us` (sorted here) as JSON.
fn percentiles(us: &mut [u128]) -> Value {
    us.sort();
    json!({"p50_us": pct(us, 0.5), "p90_us": pct(us, 0.9), "p99_us": pct(us, 0.99), "calls": us.len()})
}

fn pct(sorted: &[u128], p: f64) -> u128 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints `word` and waits for a line on stdin.
fn handshake(word: &str) {
    println!("{word}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: see the doc comment in examples/mcp_bench.rs");
        std::process::exit(2)
    };
    let arg = |i: usize| a.get(i).cloned().unwrap_or_else(|| usage());
    let num = |i: usize| arg(i).parse::<usize>().unwrap_or_else(|_| usage());
    match arg(1).as_str() {
        "connect" => {
            let mut times = Vec::new();
            for i in 0..num(3) {
                if i > 0 {
                    // Sessions a second apart, so a gateway's warm spare is
                    // ready again, as between real connections.
                    std::thread::sleep(Duration::from_secs(1));
                }
                let t = Instant::now();
                let mut s = Session::start(&arg(2));
                s.initialize();
                s.request("tools/list", json!({}));
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                s.close();
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{}",
                json!({"connect_ms": times[times.len() / 2], "all_ms": times})
            );
        }
        "sessions" => {
            let (cmd, count, par) = (arg(2), num(3), num(4).max(1));
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (tx, rx) = std::sync::mpsc::channel::<f64>();
            for _ in 0..par {
                let (cmd, next, tx) = (cmd.clone(), next.clone(), tx.clone());
                std::thread::spawn(move || {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                        let t = Instant::now();
                        let mut s = Session::start(&cmd);
                        s.initialize();
                        s.request("tools/list", json!({}));
                        s.close();
                        let _ = tx.send(t.elapsed().as_secs_f64() * 1000.0);
                    }
                });
            }
            drop(tx);
            let mut times = Vec::with_capacity(count);
            while times.len() < count {
                match rx.recv_timeout(Duration::from_secs(10)) {
                    Ok(ms) => times.push(ms),
                    Err(_) => {
                        eprintln!(
                            "mcp_bench: no session finished for 10 s after {} of {count}",
                            times.len()
                        );
                        std::process::exit(1);
                    }
                }
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{}",
                json!({"sessions": count, "p50_ms": times[count / 2], "max_ms": times[count - 1]})
            );
        }
        "latency" => {
            let mut s = Session::start(&arg(2));
            let tail = match std::env::var("MCP_BENCH_MORE").ok() {
                // "REQUEST,ANSWER": a same-bytes session of its own (for
                // callgrind), its messages that many bytes longer.
                Some(more) => {
                    let n = |i: usize| more.split(',').nth(i).and_then(|x| x.parse().ok());
                    let (Some(req), Some(ans)) = (n(0), n(1)) else {
                        usage()
                    };
                    same_bytes_tail(&mut s, &arg(4), &arg(5), req, ans).0
                }
                None => s.warm_call(&arg(4), &arg(5)),
            };
            let mut us = Vec::with_capacity(num(3));
            for _ in 0..num(3) {
                let t = Instant::now();
                s.call_text(&tail);
                us.push(t.elapsed().as_micros());
            }
            s.close();
            println!("{}", percentiles(&mut us));
        }
        "latency-ab" => {
            // Two commands (two servers, say with and without a feature),
            // a session to each side by side, calls alternating, over PAIRS
            // fresh pairs: the median of the pairs' p50 differences (B - A)
            // is what B costs more, with the machine's drift the same for
            // both (see latency-eras).
            let (calls, pairs) = (num(4), a.get(7).map_or(5, |_| num(7)).max(1));
            let mut diffs = Vec::with_capacity(pairs);
            let mut all: [Vec<u128>; 2] = [Vec::new(), Vec::new()];
            for pair in 0..pairs {
                let mut s = open_pair(|k| Session::start(&arg(2 + k)), pair % 2 == 1);
                let tails: Vec<String> = s
                    .iter_mut()
                    .map(|x| x.warm_call(&arg(5), &arg(6)))
                    .collect();
                let mut us = alternate(s, &tails, calls.div_ceil(pairs));
                diffs.push(p50(&mut us[1]) - p50(&mut us[0]));
                for k in 0..2 {
                    all[k].append(&mut us[k]);
                }
            }
            diffs.sort_by(f64::total_cmp);
            let (pa, pb) = (percentiles(&mut all[0]), percentiles(&mut all[1]));
            println!(
                "{}",
                json!({"a_p50_us": pa["p50_us"], "b_p50_us": pb["p50_us"],
                       "diff_p50_us": diffs[diffs.len() / 2], "pair_diffs": diffs,
                       "calls": all[0].len()})
            );
        }
        "latency-eras" => {
            // A legacy and a 2026-07-28 session open side by side, their
            // calls alternating: both see the same machine at each moment.
            // A pair keeps its threads' placement for its life, which can
            // favour one session throughout, so the calls are spread over
            // PAIRS fresh pairs (each era opening first in turn) and the
            // ratio is the median of the pairs' ratios.
            //
            // `same-bytes` (the echo child, examples/echo_mcp.rs) adds a
            // third, legacy session whose request and answer are as long as
            // the 2026-07-28 ones on the SSH leg. The revision's messages
            // are longer (the `_meta` on every request, `resultType` and
            // `serverInfo` on every result), and every byte costs the
            // client, the SSH transport and the gateway. The request is
            // lengthened by spaces after `"params":`, which the gateway
            // parses and never forwards (as it never forwards `_meta` to
            // the legacy child); the answer by the child (echo_mcp's `more`
            // argument), the only way an initialize-era answer grows. So
            // against this session the SSH leg costs the same, and what
            // differs is the gateway's own era work, less the cost of the
            // answer's extra bytes on the child's pipe, which only this
            // session pays (`bytes.child_more`).
            let (calls, pairs) = (num(3), a.get(6).map_or(5, |_| num(6)).max(1));
            let same_bytes = match a.get(7).map(String::as_str) {
                None => false,
                Some("same-bytes") => true,
                Some(_) => usage(),
            };
            let kinds = if same_bytes { 3 } else { 2 };
            // Per kind (legacy, modern, same bytes): all times, pair ratios.
            let mut all: Vec<Vec<u128>> = vec![Vec::new(); kinds];
            let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); kinds];
            let mut bytes = json!({});
            for pair in 0..pairs {
                // Modern first on odd pairs.
                let mut s = open_pair(|k| Session::start_era(&arg(2), k == 1), pair % 2 == 1);
                let mut tails: Vec<String> = s
                    .iter_mut()
                    .map(|x| x.warm_call(&arg(4), &arg(5)))
                    .collect();
                if same_bytes {
                    let more_request = tails[1].len().saturating_sub(tails[0].len());
                    let more_answer = s[1].line.len().saturating_sub(s[0].line.len());
                    let mut third = Session::start_era(&arg(2), false);
                    let (tail, to_child) =
                        same_bytes_tail(&mut third, &arg(4), &arg(5), more_request, more_answer);
                    tails.push(tail);
                    s.push(third);
                    bytes = json!({
                        "legacy": [tails[0].len(), s[0].line.len()],
                        "modern": [tails[1].len(), s[1].line.len()],
                        "same_bytes": [tails[2].len(), s[2].line.len()],
                        "child_more": [to_child, more_answer],
                    });
                }
                let mut us = alternate(s, &tails, calls.div_ceil(pairs));
                let p: Vec<f64> = us.iter_mut().map(|u| p50(u)).collect();
                for k in 0..kinds {
                    ratios[k].push(p[1] / p[k]);
                    all[k].append(&mut us[k]);
                }
            }
            let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
            let median = |r: &mut Vec<f64>| {
                r.sort_by(f64::total_cmp);
                r3(r[r.len() / 2])
            };
            let (l, m) = (percentiles(&mut all[0]), percentiles(&mut all[1]));
            let mut out = json!({"legacy_p50_us": l["p50_us"], "legacy_p90_us": l["p90_us"],
                   "modern_p50_us": m["p50_us"], "modern_p90_us": m["p90_us"],
                   "ratio_p50": median(&mut ratios[0]),
                   "pair_ratios": ratios[0].iter().map(|&x| r3(x)).collect::<Vec<_>>(),
                   "calls": all[0].len()});
            if same_bytes {
                let sb = percentiles(&mut all[2]);
                out["same_bytes_p50_us"] = sb["p50_us"].clone();
                out["ratio_same_bytes_p50"] = json!(median(&mut ratios[2]));
                out["same_bytes_pair_ratios"] =
                    json!(ratios[2].iter().map(|&x| r3(x)).collect::<Vec<_>>());
                out["bytes"] = bytes;
            }
            println!("{out}");
        }
        "big" => {
            let n = num(3);
            let text: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let mut s = Session::start(&arg(2));
            s.initialize();
            s.request("tools/list", json!({}));
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                let r = s.request(
                    "tools/call",
                    json!({"name": "echo", "arguments": {"text": text}}),
                );
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if r["result"]["content"][0]["text"].as_str() != Some(text.as_str()) {
                    eprintln!("mcp_bench: the {n}-byte echo came back altered");
                    std::process::exit(1);
                }
                best = best.min(ms);
            }
            s.close();
            println!("{}", json!({"big_ms": best, "bytes": n}));
        }
        "throughput" => {
            let (cmd, sessions, calls) = (arg(2), num(3), num(4));
            let params = json!({"name": arg(5), "arguments": serde_json::from_str::<Value>(&arg(6)).unwrap()});
            let mut ready = Vec::new();
            for _ in 0..sessions {
                let mut s = Session::start(&cmd);
                s.initialize();
                s.request("tools/list", json!({}));
                ready.push(s);
            }
            // With MCP_BENCH_SYNC set, the caller samples the server between
            // "ready" and "done" (the calls only, no set-up or teardown).
            let sync = std::env::var_os("MCP_BENCH_SYNC").is_some();
            if sync {
                handshake("ready");
            }
            let t = Instant::now();
            let threads: Vec<_> = ready
                .into_iter()
                .map(|mut s| {
                    let p = params.clone();
                    std::thread::spawn(move || {
                        for _ in 0..calls {
                            s.request("tools/call", p.clone());
                        }
                        s
                    })
                })
                .collect();
            let done: Vec<Session> = threads.into_iter().map(|h| h.join().unwrap()).collect();
            let secs = t.elapsed().as_secs_f64();
            if sync {
                handshake("done");
            }
            for s in done {
                s.close();
            }
            println!(
                "{}",
                json!({"calls_per_s": (sessions * calls) as f64 / secs, "sessions": sessions})
            );
        }
        "hold" => {
            let mut held = Vec::new();
            for _ in 0..num(3) {
                let mut s = Session::start(&arg(2));
                s.initialize();
                s.request("tools/list", json!({}));
                held.push(s);
            }
            println!("ready");
            std::io::stdout().flush().unwrap();
            let mut sink = String::new();
            let _ = std::io::stdin().read_line(&mut sink);
            for s in held {
                s.close();
            }
        }
        _ => usage(),
    }
}
