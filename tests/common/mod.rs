//! Shared fixtures: start the real server binary on an ephemeral loopback
//! port with temp keys and config, and talk to it with real SSH clients.
//! Every wait is bounded so a hang fails fast.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_m2m-mcp-server-ssh-server"))
}

/// The fixture MCP server (built by `cargo test` as an example).
pub fn fixture_bin() -> PathBuf {
    let p = server_bin()
        .parent()
        .unwrap()
        .join("examples")
        .join("fixture_mcp");
    assert!(p.exists(), "fixture not built at {}", p.display());
    p
}

pub fn fixture(name: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--name".to_string(), name.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    json!({"command": fixture_bin(), "args": args})
}

/// A fresh temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("m2m-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a fresh ed25519 client key (OpenSSH format, 0600) and returns
/// (private key path, public line).
pub fn client_key(dir: &Path, name: &str) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let (private, public) = m2m_mcp_server_ssh_server::keys::generate_ed25519(name);
    let p = dir.join(name);
    std::fs::write(&p, private).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join(format!("{name}.pub")), format!("{public}\n")).unwrap();
    (p, public)
}

/// A port that is free now, taken below the kernel's ephemeral range
/// (32768 and up) so that no client connection of a parallel test can grab
/// it as its source port before the server binds it.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = (std::process::id() % 400) * 30;
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (20000 + (start + n) % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found below 32768");
}

/// A running server binary.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: TempDir,
    pub key: PathBuf,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server with `servers` as its mcpServers and waits until it listens.
    pub fn start(servers: Value, extra: &[&str]) -> Server {
        let dir = TempDir::new("srv");
        let (key, public) = client_key(dir.path(), "client");
        std::fs::write(dir.path().join("authorized_keys"), format!("{public}\n")).unwrap();
        std::fs::write(
            dir.path().join("servers_config.json"),
            json!({ "mcpServers": servers }).to_string(),
        )
        .unwrap();
        Self::start_in(dir, key, extra)
    }

    pub fn start_in(dir: TempDir, key: PathBuf, extra: &[&str]) -> Server {
        Self::start_in_env(dir, key, extra, &[])
    }

    /// Like [`Server::start_in`], with extra environment for the server.
    pub fn start_in_env(
        dir: TempDir,
        key: PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let port = free_port();
        let d = dir.path();
        let mut child = Command::new(server_bin())
            .envs(env.iter().copied())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--authorized-clients")
            .arg(d.join("authorized_keys"))
            .arg("--registered-clients")
            .arg(d.join("registered_clients"))
            .arg("--server-key")
            .arg(d.join("hostkey/host_ed25519"))
            .arg("--servers-config")
            .arg(d.join("servers_config.json"))
            .args(["--log-level", "DEBUG"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("M2M_TEST_LOG").is_some() {
                    eprintln!("server: {line}");
                }
                if line.contains("SSH server listening") {
                    let _ = tx.send(());
                }
                let mut l = l2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let ok = rx.recv_timeout(WAIT).is_ok();
        let mut s = Server {
            child,
            port,
            dir,
            key,
            log,
        };
        if !ok {
            let _ = s.child.kill();
            panic!("server did not start:\n{}", s.log());
        }
        s
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Opens an authenticated ssh2 session.
    pub fn ssh2(&self) -> ssh2::Session {
        ssh2_session(self.port, &self.key)
    }

    /// An MCP connection over a `shell` channel.
    pub fn connect(&self) -> Mcp {
        let sess = self.ssh2();
        let mut ch = sess.channel_session().unwrap();
        ch.shell().unwrap();
        Mcp::new(sess, ch)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY-free: plain kill(2) through the libc crate is not available
        // here, so use the `kill` command for SIGTERM and then force.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        let mut exited = false;
        while !exited && Instant::now() < end {
            exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if !exited {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A failing test shows the server's whole log, shutdown included.
        if std::thread::panicking() {
            self.wait_log("stopped");
            eprintln!(
                "--- server log ---\n{}--- end of server log ---",
                self.log()
            );
        }
    }
}

pub fn ssh2_session(port: u16, key: &Path) -> ssh2::Session {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut sess = ssh2::Session::new().unwrap();
    sess.set_tcp_stream(tcp);
    sess.set_timeout(WAIT.as_millis() as u32);
    sess.handshake().unwrap();
    sess.userauth_pubkey_file("mcp", None, key, None)
        .expect("public-key auth");
    assert!(sess.authenticated());
    sess
}

/// Line-oriented MCP over an ssh2 channel.
pub struct Mcp {
    pub sess: ssh2::Session,
    pub ch: ssh2::Channel,
    buf: Vec<u8>,
    next: u64,
}

impl Mcp {
    pub fn new(sess: ssh2::Session, ch: ssh2::Channel) -> Mcp {
        Mcp {
            sess,
            ch,
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
        self.ch.write_all(b).unwrap();
        self.ch.flush().unwrap();
    }

    /// The next line from the server (bounded by the session timeout).
    pub fn recv(&mut self) -> Value {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                return serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!(
                        "bad line from server: {e}: {}",
                        String::from_utf8_lossy(&line)
                    )
                });
            }
            let mut tmp = [0u8; 65536];
            let n = self.ch.read(&mut tmp).expect("read from server");
            assert!(n > 0, "server closed the channel");
            self.buf.extend_from_slice(&tmp[..n]);
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
        let mut others = Vec::new();

        self.request_with(method, params, &mut others)
    }

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

/// `ssh -T` to the test server with its key, under a 30 s bound; `extra`
/// ends with the destination (and any command).
pub fn openssh_command(port: u16, key: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("30")
        .arg("ssh")
        .args(["-T", "-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-i")
        .arg(key)
        .args(extra);
    cmd
}

/// Runs OpenSSH `ssh -T` against the server with `input` on stdin.
pub fn openssh(port: u16, key: &Path, extra: &[&str], input: &str) -> std::process::Output {
    let mut child = openssh_command(port, key, extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    child.wait_with_output().unwrap()
}

/// Lines of output parsed as JSON.
pub fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// PIDs whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if stat_fields(p).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// The fields of /proc/PID/stat after the command name: state, ppid, ...
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls `f` until true or the bound passes (for observing /proc after a
/// disconnect, where there is no event to block on).
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn read_all(ch: &mut ssh2::Channel) -> String {
    let mut s = String::new();
    let _ = ch.read_to_string(&mut s);
    s
}

/// A minimal HTTP/1.1 exchange (Connection: close): (status, headers, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// POSTs `{"client_pub_key": key}` as JSON.
pub fn register(port: u16, key: &str, extra: &[(&str, &str)]) -> (u16, String, String) {
    let body = json!({ "client_pub_key": key }).to_string();
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(extra);
    http(port, "POST", "/register", &h, body.as_bytes())
}

impl Server {
    /// Starts with the key API on an ephemeral port; returns (server, api port).
    pub fn start_with_key_api(servers: Value, extra: &[&str]) -> (Server, u16) {
        let api = free_port();
        let p = api.to_string();
        let mut args = vec!["--run-key-server", "--key-server-port", &p];
        args.extend_from_slice(extra);
        let s = Server::start(servers, &args);
        assert!(s.wait_log("key API listening"), "{}", s.log());
        (s, api)
    }
}

pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_m2m-mcp-server-ssh-client"))
}

/// Our client binary as an AI host runs it: JSON lines on stdin/stdout.
pub struct StdioClient {
    pub child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    pub stderr: Arc<Mutex<String>>,
    /// Collects stderr until the client's end of the pipe closes.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<std::process::ChildStdin>>,
}

impl StdioClient {
    pub fn start(args: &[&str]) -> StdioClient {
        let mut child = Command::new(client_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
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
        StdioClient {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            writer: None,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    pub fn send(&mut self, v: &Value) {
        let s = self.stdin.as_mut().expect("stdin open");
        writeln!(s, "{v}").unwrap();
        s.flush().unwrap();
    }

    pub fn recv(&mut self) -> Value {
        let l = self
            .lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no line from the client; stderr:\n{}", self.stderr()));
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))
    }

    /// Writes `data` to the client's stdin from a thread, so the caller can
    /// read answers meanwhile; [`StdioClient::join_writer`] takes stdin back.
    pub fn send_raw_in_background(&mut self, data: String) {
        let mut s = self.stdin.take().expect("stdin open");
        self.writer = Some(std::thread::spawn(move || {
            s.write_all(data.as_bytes()).unwrap();
            s.flush().unwrap();
            s
        }));
    }

    pub fn join_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            self.stdin = Some(w.join().expect("writer thread"));
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the exit status (bounded).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // The client spawns nothing, so its exit closed the pipe: the
                // reader ends at once, and then stderr() has everything.
                if let Some(r) = self.stderr_reader.take() {
                    r.join().expect("stderr reader");
                }
                return s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("client did not exit; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StdioClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks that only public-key auth is offered and that `none`, `password`,
/// `keyboard-interactive` and (if given) an unauthorized key are refused,
/// through both the ssh2 crate and OpenSSH.
pub fn assert_only_authorized_keys_get_in(port: u16, key: &Path, stranger: Option<&Path>) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut s = ssh2::Session::new().unwrap();
    s.set_tcp_stream(tcp);
    s.set_timeout(WAIT.as_millis() as u32);
    s.handshake().unwrap();
    // auth_methods sends a "none" request: it must not authenticate.
    assert_eq!(s.auth_methods("mcp").unwrap(), "publickey");
    assert!(!s.authenticated(), "the none method authenticated");
    assert!(s.userauth_password("mcp", "mcp").is_err());
    struct P;
    impl ssh2::KeyboardInteractivePrompt for P {
        fn prompt(&mut self, _: &str, _: &str, p: &[ssh2::Prompt]) -> Vec<String> {
            p.iter().map(|_| "x".to_string()).collect()
        }
    }
    assert!(s.userauth_keyboard_interactive("mcp", &mut P).is_err());
    if let Some(other) = stranger {
        assert!(s.userauth_pubkey_file("mcp", None, other, None).is_err());
    }
    assert!(!s.authenticated());
    for method in ["none", "password", "keyboard-interactive"] {
        let pref = format!("PreferredAuthentications={method}");
        let out = openssh(port, key, &["-o", &pref, "mcp@127.0.0.1"], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{method} got in");
        assert!(err.contains("Permission denied"), "{method}: {err}");
    }
}

/// What a process's fds point at (for failure messages).
pub fn fd_list(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let t = std::fs::read_link(e.path())
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    format!("{}->{t}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// (threads, fds) of a process once both hold still for 200 ms: a
/// session's last fds close just after its thread ends, and a new warm
/// spare's threads start just after its process.
/// Asserts that the server gets back to `children` children, `threads`
/// threads and `fds` open fds (each within the usual bound).
pub fn assert_back_to(pid: u32, children: usize, threads: usize, fds: usize) {
    assert!(
        eventually(|| children_of(pid).len() == children),
        "children left: {:?}",
        children_of(pid)
    );
    assert!(
        eventually(|| thread_count(pid) == threads),
        "threads {} != {threads}",
        thread_count(pid)
    );
    assert!(
        eventually(|| fd_count(pid) == fds),
        "fds {} != {fds}: {:?}",
        fd_count(pid),
        fd_list(pid)
    );
}

pub fn settled_counts(pid: u32) -> (usize, usize) {
    let read = || (thread_count(pid), fd_count(pid));
    let mut last = read();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Connects without speaking and returns what the server sends before it
/// hangs up; panics, with the server's log, if it has not within `secs`.
pub fn bytes_until_hangup(srv: &Server, secs: u64) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        panic!(
            "the server did not hang up within {secs} s ({e}); got {:?}; server log:\n{}",
            String::from_utf8_lossy(&got),
            srv.log()
        );
    }
    got
}
