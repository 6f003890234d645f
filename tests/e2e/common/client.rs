//! The one JSON-line client of the tests. [`JsonClient`] does the framing,
//! the request ids and the MCP handshake; a [`Wire`] carries the bytes:
//! an ssh2 channel ([`Mcp`]), or the stdin/stdout of a child process such as
//! our client binary or OpenSSH ([`StdioClient`]).

use super::WAIT;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a [`JsonClient`]'s bytes go and come from.
pub trait Wire {
    /// Writes all of `bytes` and flushes.
    fn write(&mut self, bytes: &[u8]);
    /// Appends the next bytes that arrive to `buf`; `false` once the peer
    /// has closed. Panics if nothing arrives within [`WAIT`].
    fn read_more(&mut self, buf: &mut Vec<u8>) -> bool;
    /// What to show beside a failure (the peer's stderr, say).
    fn context(&self) -> String {
        String::new()
    }
}

/// Newline-delimited JSON-RPC over a [`Wire`].
pub struct JsonClient<W: Wire> {
    pub wire: W,
    buf: Vec<u8>,
    next: u64,
}

/// One line of JSON, or a panic that shows the line.
pub fn parse_line(line: &[u8]) -> Value {
    serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("bad JSON line: {e}: {}", String::from_utf8_lossy(line)))
}

/// The non-blank lines of a whole output, parsed as JSON.
pub fn json_lines(out: &[u8]) -> Vec<Value> {
    out.split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .map(parse_line)
        .collect()
}

/// The text of a tool result's first content item.
pub fn text(r: &Value) -> &str {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text result in {r}"))
}

/// Asserts that `r` is a JSON-RPC error with `code` whose message
/// contains `needle`.
pub fn assert_error(r: &Value, code: i64, needle: &str) {
    assert_eq!(r["error"]["code"], code, "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {r}");
}

/// The `name`s of a list result's `field` (tools, prompts).
pub fn names(list: &Value, field: &str) -> Vec<String> {
    list["result"][field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

impl<W: Wire> JsonClient<W> {
    pub fn new(wire: W) -> Self {
        JsonClient {
            wire,
            buf: Vec::new(),
            next: 1000,
        }
    }

    pub fn send(&mut self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    pub fn send_raw(&mut self, b: &[u8]) {
        self.wire.write(b);
    }

    /// The next line from the peer.
    pub fn recv(&mut self) -> Value {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                return parse_line(&line);
            }
            if !self.wire.read_more(&mut self.buf) {
                panic!(
                    "the peer closed the connection; left over: {:?}\n{}",
                    String::from_utf8_lossy(&self.buf),
                    self.wire.context()
                );
            }
        }
    }

    /// Sends a request and returns its response, collecting anything else
    /// that arrived first into `others`.
    pub fn request_with(&mut self, method: &str, params: Value, others: &mut Vec<Value>) -> Value {
        self.next += 1;
        let id = self.next;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let m = self.recv();
            if m.get("id") == Some(&json!(id)) && m.get("method").is_none() {
                return m;
            }
            others.push(m);
        }
    }

    pub fn request(&mut self, method: &str, params: Value) -> Value {
        self.request_with(method, params, &mut Vec::new())
    }

    /// `tools/call` of `name` with `arguments`.
    pub fn call(&mut self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
    }

    /// The MCP handshake (as a client with sampling and roots); returns the
    /// `initialize` response.
    pub fn initialize(&mut self) -> Value {
        let r = self.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}, "roots": {"listChanged": true}},
                   "clientInfo": {"name": "itest", "version": "1"}}),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        r
    }
}

/// An ssh2 session channel (shell, exec or subsystem already requested);
/// it keeps its session alive.
pub struct SshChannel {
    pub ch: ssh2::Channel,
}

/// MCP over an SSH channel.
pub type Mcp = JsonClient<SshChannel>;

impl Mcp {
    /// A client on `ch` (reads are bounded by its session's timeout).
    pub fn over(ch: ssh2::Channel) -> Mcp {
        JsonClient::new(SshChannel { ch })
    }
}

impl Mcp {
    /// Whether the server ends the connection (EOF or a reset) within two
    /// reads, that is: at once, or after what it had already sent.
    pub fn ended_by_server(&mut self) -> bool {
        let mut buf = [0u8; 256];
        (0..2).any(|_| matches!(self.wire.ch.read(&mut buf), Ok(0) | Err(_)))
    }
}

impl Wire for SshChannel {
    fn write(&mut self, bytes: &[u8]) {
        // No `flush`: for an ssh2 channel it is libssh2_channel_flush, which
        // throws away what has arrived and not been read yet (a notification
        // that came before this request was lost that way).
        self.ch.write_all(bytes).unwrap();
    }

    fn read_more(&mut self, buf: &mut Vec<u8>) -> bool {
        let mut tmp = [0u8; 65536];
        let n = self.ch.read(&mut tmp).expect("read from the server");
        buf.extend_from_slice(&tmp[..n]);
        n > 0
    }
}

/// A child process spoken to through its stdin and stdout; its stderr is
/// collected.
pub struct Process {
    pub child: Child,
    stdin: Option<ChildStdin>,
    chunks: Receiver<Vec<u8>>,
    stderr: Arc<Mutex<String>>,
    /// Collects stderr until the child's end of the pipe closes.
    stderr_reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<ChildStdin>>,
}

/// JSON lines through a child process's stdio: our client binary as an AI
/// host runs it, or `ssh -T`.
pub type StdioClient = JsonClient<Process>;

impl Wire for Process {
    fn write(&mut self, bytes: &[u8]) {
        let s = self.stdin.as_mut().expect("stdin open");
        s.write_all(bytes).unwrap();
        s.flush().unwrap();
    }

    fn read_more(&mut self, buf: &mut Vec<u8>) -> bool {
        match self.chunks.recv_timeout(WAIT) {
            Ok(c) => {
                buf.extend_from_slice(&c);
                true
            }
            Err(RecvTimeoutError::Disconnected) => false,
            Err(RecvTimeoutError::Timeout) => {
                panic!("nothing from the process in {WAIT:?}\n{}", self.context())
            }
        }
    }

    fn context(&self) -> String {
        format!("its stderr:\n{}", self.stderr.lock().unwrap())
    }
}

impl StdioClient {
    /// Our client binary with `args`.
    pub fn start(args: &[&str]) -> StdioClient {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_m2m-mcp-server-ssh-client"));
        cmd.args(args);
        Self::spawn(cmd)
    }

    /// `cmd` with its stdio piped to the test.
    pub fn spawn(mut cmd: Command) -> StdioClient {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, chunks) = std::sync::mpsc::channel();
        let mut out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut tmp = [0u8; 65536];
            while let Ok(n @ 1..) = out.read(&mut tmp) {
                if tx.send(tmp[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let e2 = stderr.clone();
        let err = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = e2.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        JsonClient::new(Process {
            stdin: child.stdin.take(),
            child,
            chunks,
            writer: None,
            stderr,
            stderr_reader: Some(stderr_reader),
        })
    }

    pub fn pid(&self) -> u32 {
        self.wire.child.id()
    }

    /// Writes `data` to stdin from a thread, so the caller can read answers
    /// meanwhile; [`StdioClient::join_writer`] takes stdin back.
    pub fn send_raw_in_background(&mut self, data: String) {
        let mut s = self.wire.stdin.take().expect("stdin open");
        self.wire.writer = Some(std::thread::spawn(move || {
            s.write_all(data.as_bytes()).unwrap();
            s.flush().unwrap();
            s
        }));
    }

    pub fn join_writer(&mut self) {
        if let Some(w) = self.wire.writer.take() {
            self.wire.stdin = Some(w.join().expect("writer thread"));
        }
    }

    pub fn close_stdin(&mut self) {
        self.wire.stdin = None;
    }

    pub fn stderr(&self) -> String {
        self.wire.stderr.lock().unwrap().clone()
    }

    /// Waits for the exit status; then stderr() has everything.
    pub fn wait(&mut self) -> ExitStatus {
        let end = Instant::now() + WAIT;
        let p = &mut self.wire;
        loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                // The processes driven here spawn nothing that outlives
                // them, so the exit closed the pipe and the reader ends.
                if let Some(r) = p.stderr_reader.take() {
                    r.join().expect("stderr reader");
                }
                return s;
            }
            if Instant::now() > end {
                let _ = p.child.kill();
                panic!("the process did not exit; {}", p.context());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
