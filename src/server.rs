//! The server binary's work: load config and keys, start the key API if
//! asked, then serve SSH until SIGINT/SIGTERM.

use crate::config;
use crate::keyapi::{self, KeyApi, RateLimiter};
use crate::keys::registry::Registry;
use crate::keys::{self, authorized::Authorized};
use crate::pool::Pool;
use crate::ssh::listener;
use crate::ssh::session::Shared;
use crate::ssh::sys::Key;
use crate::ssh::wake::Wake;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Everything the server needs, resolved from flags.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub host: String,
    pub port: u16,
    pub authorized_clients: PathBuf,
    pub registered_clients: PathBuf,
    pub server_key: PathBuf,
    pub passphrase: Option<String>,
    pub servers_config: PathBuf,
    pub max_line: usize,
    pub request_timeout: Duration,
    pub max_sessions: usize,
    /// Most connections not yet authenticated (the rest of `max_sessions`
    /// stays free for clients that log in).
    pub max_startups: usize,
    /// Time for key exchange and authentication together.
    pub login_grace: Duration,
    /// Default warm spares per server (`warmSpares` in the config overrides).
    pub warm_spares: usize,
    pub key_server: Option<KeyServerOptions>,
}

/// `--run-key-server` settings.
#[derive(Debug, Clone)]
pub struct KeyServerOptions {
    pub host: String,
    pub port: u16,
    pub token_file: Option<PathBuf>,
    pub per_minute: u32,
}

/// Why the server could not run; `exit_code` tells the binary what to return.
#[derive(Debug)]
pub enum ServerError {
    /// Bad configuration (exit code 2).
    Config(String),
    /// Anything else at start-up or while serving (exit code 1).
    Runtime(String),
}

impl ServerError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ServerError::Config(_) => 2,
            ServerError::Runtime(_) => 1,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Config(s) | ServerError::Runtime(s) => f.write_str(s),
        }
    }
}

/// True for addresses that only this machine can reach.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Keeps glibc from giving every thread its own malloc arena: with a thread
/// per session and three per child, per-thread arenas cost megabytes of RSS
/// for no gain at this server's allocation rate (small boards first).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Runs the server until a shutdown signal; every session ends first.
pub fn run(opts: &ServerOptions) -> Result<(), ServerError> {
    limit_malloc_arenas();
    let servers = config::load(&opts.servers_config).map_err(|e| ServerError::Config(e.0))?;
    if servers.is_empty() {
        log::warn!(
            "{}: no enabled MCP servers; sessions will have no tools",
            opts.servers_config.display()
        );
    }
    if !is_loopback(&opts.host) {
        log::warn!(
            "!!! listening on {} which is NOT a loopback address: anyone who can reach this port \
             and holds an authorized key can run the configured MCP tools. Firewall it. !!!",
            opts.host
        );
    }
    keys::ensure_key(&opts.server_key, "m2m-mcp-server-ssh-server")
        .map_err(|e| ServerError::Config(e.0))?;
    let key_path = opts.server_key.to_string_lossy().into_owned();
    let host_key = Key::import_private(&key_path, opts.passphrase.as_deref())
        .map_err(|e| ServerError::Config(e.0))?;
    let public = host_key
        .public_line()
        .map_err(|e| ServerError::Runtime(e.0))?;
    log::info!(
        "host key {} ({})",
        opts.server_key.display(),
        keys::parse_line(&public)
            .map(|(k, _)| k.fingerprint())
            .unwrap_or_default()
    );
    let authorized = Authorized::new(vec![
        opts.authorized_clients.clone(),
        opts.registered_clients.clone(),
    ]);
    let trusted = authorized.count();
    log::info!(
        "{trusted} authorized client key(s) from {} and {}",
        opts.authorized_clients.display(),
        opts.registered_clients.display()
    );
    if trusted == 0 && opts.key_server.is_none() {
        log::warn!(
            "no client key is authorized yet: add a public key to {} (read on every login), \
             or run with --run-key-server",
            opts.authorized_clients.display()
        );
    }
    let targets = servers
        .iter()
        .map(|s| s.warm_spares.unwrap_or(opts.warm_spares))
        .collect();
    let pool = Pool::start(servers.clone(), targets, opts.max_line);
    let shared = Arc::new(Shared {
        authorized,
        pool: pool.clone(),
        servers,
        max_line: opts.max_line,
        request_timeout: opts.request_timeout,
        max_total: opts.request_timeout.max(Duration::from_secs(3600)),
        shutdown: AtomicBool::new(false),
        auth_deadline: opts.login_grace,
        // libssh warnings reach the DEBUG log; M2M_LIBSSH_LOG=2..4 asks for more.
        libssh_verbosity: std::env::var("M2M_LIBSSH_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    });
    let key_api = match &opts.key_server {
        Some(k) => Some(start_key_api(k, &public, &opts.registered_clients)?),
        None => None,
    };
    let stop = Wake::new().map_err(|e| ServerError::Runtime(e.to_string()))?;
    crate::ssh::wake::install_signal_handlers(&stop);
    let served = listener::serve(
        &opts.host,
        opts.port,
        host_key,
        shared,
        opts.max_sessions,
        opts.max_startups,
        &stop,
    )
    .map_err(ServerError::Runtime);
    if let Some(k) = key_api {
        k.stop();
    }
    pool.shutdown();
    served?;
    log::info!("stopped");
    Ok(())
}

fn start_key_api(
    k: &KeyServerOptions,
    public: &str,
    registered: &std::path::Path,
) -> Result<keyapi::Running, ServerError> {
    let token = match &k.token_file {
        None => None,
        Some(p) => {
            let t = std::fs::read_to_string(p).map_err(|e| {
                ServerError::Config(format!(
                    "cannot read --key-server-token-file {}: {e}",
                    p.display()
                ))
            })?;
            let t = t.trim().to_owned();
            if t.len() < 16 {
                return Err(ServerError::Config(format!(
                    "{}: the token must be at least 16 characters",
                    p.display()
                )));
            }
            Some(t)
        }
    };
    if !is_loopback(&k.host) && token.is_none() {
        log::warn!(
            "!!! the key API listens on {} without --key-server-token-file: anyone who reaches \
             it can register a key and use every configured tool !!!",
            k.host
        );
    }
    keyapi::start(
        &k.host,
        k.port,
        KeyApi {
            server_pub_key: public.to_owned(),
            registry: Registry::new(registered.to_path_buf()),
            limiter: RateLimiter::new(k.per_minute),
            token,
        },
    )
    .map_err(ServerError::Runtime)
}
