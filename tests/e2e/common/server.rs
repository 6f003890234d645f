//! The server binary as a process: started on a free loopback port with a
//! temp dir of keys and config, its log collected, stopped on drop; and the
//! fixture MCP servers it runs as children.

use super::client::Mcp;
use super::procfs::{listens_on, signal};
use super::ssh::{client_key, ssh2_session};
use super::{TempDir, WAIT, eventually};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_m2m-mcp-server-ssh-server"))
}

/// The fixture MCP server (built by `cargo test` as an example).
fn fixture_bin() -> PathBuf {
    let p = server_bin()
        .parent()
        .unwrap()
        .join("examples")
        .join("fixture_mcp");
    assert!(p.exists(), "fixture not built at {}", p.display());
    p
}

/// A config entry for the fixture named `name`, with `extra` flags.
pub fn fixture(name: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--name".to_string(), name.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    json!({"command": fixture_bin(), "args": args})
}

/// A config entry for the fixture named `name` that also appends every line
/// the gateway sends it to `wire_log`: what the child received, as sent.
pub fn recorded_fixture(name: &str, wire_log: &Path) -> Value {
    json!({"command": "sh", "args": ["-c", r#"tee -a "$0" | exec "$1" --name "$2""#,
        wire_log, fixture_bin(), name]})
}

/// The lines a [`recorded_fixture`] has received so far (complete ones).
pub fn recorded_lines(wire_log: &Path) -> Vec<Value> {
    let mut bytes = std::fs::read(wire_log).unwrap_or_default();
    bytes.truncate(bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1));
    super::client::json_lines(&bytes)
}

/// Two fixtures, alpha and beta (beta lists its tools 3 a page): the
/// merged gateway of most tests.
pub fn two_children() -> Value {
    json!({"alpha": fixture("alpha", &[]), "beta": fixture("beta", &["--page-size", "3"])})
}

/// One fixture, alpha.
pub fn alpha() -> Value {
    json!({"alpha": fixture("alpha", &[])})
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
    /// The process; taken by the drop.
    child: Option<Child>,
    pid: u32,
    pub port: u16,
    pub dir: TempDir,
    pub key: PathBuf,
    log: Arc<Mutex<String>>,
    log_reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts the server with `servers` as its mcpServers and waits until it listens.
    pub fn start(servers: Value, extra: &[&str]) -> Server {
        let (dir, key) = Self::files(servers);
        Self::start_in(dir, key, extra)
    }

    /// Starts with the key API on a free port too; returns (server, API port).
    pub fn start_with_key_api(servers: Value, extra: &[&str]) -> (Server, u16) {
        let api = free_port();
        let p = api.to_string();
        let mut args = vec!["--run-key-server", "--key-server-port", &p];
        args.extend_from_slice(extra);
        let (dir, key) = Self::files(servers);
        (Self::launch(dir, key, &args, Some(api), &[]), api)
    }

    /// Like [`Server::start`], with `env` added to the server's environment.
    pub fn start_with_env(servers: Value, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let (dir, key) = Self::files(servers);
        Self::launch(dir, key, extra, None, env)
    }

    /// Starts the server on the files in `dir` (authorized_keys,
    /// servers_config.json, hostkey/) with `key` as the test's client key.
    pub fn start_in(dir: TempDir, key: PathBuf, extra: &[&str]) -> Server {
        Self::launch(dir, key, extra, None, &[])
    }

    /// A temp dir with a client key, its authorized_keys and a config with
    /// `servers`: (dir, client key).
    pub fn files(servers: Value) -> (TempDir, PathBuf) {
        let dir = TempDir::new("srv");
        let (key, public) = client_key(dir.path(), "client");
        std::fs::write(dir.path().join("authorized_keys"), format!("{public}\n")).unwrap();
        std::fs::write(
            dir.path().join("servers_config.json"),
            json!({ "mcpServers": servers }).to_string(),
        )
        .unwrap();
        (dir, key)
    }

    /// Spawns the binary with `env` added and waits until it listens on its
    /// port (and on `api`, the key API's).
    fn launch(
        dir: TempDir,
        key: PathBuf,
        extra: &[&str],
        api: Option<u16>,
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
        let stderr = child.stderr.take().unwrap();
        let l2 = log.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("M2M_TEST_LOG").is_some() {
                    eprintln!("server: {line}");
                }
                let mut l = l2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut s = Server {
            pid: child.id(),
            child: Some(child),
            port,
            dir,
            key,
            log,
            log_reader: Some(log_reader),
        };
        let pid = s.pid();
        let ports: Vec<u16> = std::iter::once(port).chain(api).collect();
        let ready = eventually(|| s.running() && ports.iter().all(|&p| listens_on(pid, p)));
        // On failure the drop shows the server's log.
        assert!(ready, "the server did not come to listen on {ports:?}");
        s
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`, for the few tests whose
    /// subject is the log line itself.
    pub fn wait_log(&self, needle: &str) -> bool {
        eventually(|| self.log().contains(needle))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A file in the server's temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The public line of the server's host key.
    pub fn host_pub(&self) -> String {
        std::fs::read_to_string(self.path("hostkey/host_ed25519.pub"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// An authenticated ssh2 session with the test's key.
    pub fn ssh2(&self) -> ssh2::Session {
        ssh2_session(self.port, &self.key)
    }

    /// Starts the server and opens one session on it.
    pub fn with_session(servers: Value, extra: &[&str]) -> (Server, Mcp) {
        let srv = Server::start(servers, extra);
        let c = srv.session();
        (srv, c)
    }

    /// An MCP session over a `shell` channel, through the handshake.
    pub fn session(&self) -> Mcp {
        let mut c = self.connect();
        let init = c.initialize();
        assert!(init["result"].is_object(), "initialize: {init}");
        c
    }

    /// MCP over a `shell` channel.
    pub fn connect(&self) -> Mcp {
        self.connect_with(|ch| ch.shell())
    }

    /// MCP over a session channel that `open` turned into a shell, an exec
    /// or a subsystem.
    pub fn connect_with(
        &self,
        open: impl FnOnce(&mut ssh2::Channel) -> Result<(), ssh2::Error>,
    ) -> Mcp {
        let sess = self.ssh2();
        let mut ch = sess.channel_session().unwrap();
        open(&mut ch).expect("open the channel");
        Mcp::over(ch)
    }

    /// Waits for the server to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let end = Instant::now() + WAIT;
        loop {
            let child = self.child.as_mut().expect("the server process");
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < end, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits up to 10 s for a process told to stop, then kills it.
fn reap(mut child: Child) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running() {
            signal(self.pid, libc::SIGTERM);
        }
        let Some(child) = self.child.take() else {
            return;
        };
        if !std::thread::panicking() {
            // The shutdown is not what a test checks (and with the key API it
            // takes a second): a thread reaps the server meanwhile.
            std::thread::spawn(move || reap(child));
            return;
        }
        reap(child);
        // A failing test shows the server's whole log, shutdown included:
        // the reader ends once no process holds the pipe any more.
        if let Some(r) = self.log_reader.take() {
            eventually(|| r.is_finished());
        }
        eprintln!(
            "--- server log ---\n{}--- end of server log ---",
            self.log()
        );
    }
}
