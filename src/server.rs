//! The server binary's work: load config and keys, start the key API if
//! asked, then serve SSH until SIGINT/SIGTERM.

use crate::audit::AuditLog;
use crate::config::{self, Scope, ServerSpec};
use crate::error::Error;
use crate::gateway::{self, Gateway};
use crate::keyapi::{self, KeyApi, RateLimiter};
use crate::keys::cert::Authorities;
use crate::keys::command::KeysCommand;
use crate::keys::registry::Registry;
use crate::keys::revoked::Revoked;
use crate::keys::{self, authorized::Authorized};
use crate::os::{self, Wake};
use crate::pool::Pool;
use crate::shared::SharedServer;
use crate::ssh::conn::Login;
use crate::ssh::listener::{self, Limits, Proxied};
use crate::ssh::persource::Policy;
use crate::ssh::proxy;
use crate::ssh::sys::{Bind, BindConfig, Key};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
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
    /// `--per-source-max-startups` and `--per-source-penalty`.
    pub per_source: Policy,
    /// Time for key exchange and authentication together.
    pub login_grace: Duration,
    /// Default warm spares per server (`warmSpares` in the config overrides).
    pub warm_spares: usize,
    /// `--audit-log`.
    pub audit_log: Option<PathBuf>,
    pub key_server: Option<KeyServerOptions>,
    /// `--proxy-protocol-from`: addresses whose connections start with a
    /// PROXY header (checked by [`run`]).
    pub proxy_protocol_from: Option<String>,
    /// `--trusted-user-ca-keys`.
    pub trusted_user_ca_keys: Option<PathBuf>,
    /// `--revoked-keys`.
    pub revoked_keys: Option<PathBuf>,
    /// `--authorized-keys-command` and its timeout.
    pub authorized_keys_command: Option<(String, Duration)>,
}

/// `--run-key-server` settings.
#[derive(Debug, Clone)]
pub struct KeyServerOptions {
    pub host: String,
    pub port: u16,
    pub token_file: Option<PathBuf>,
    pub per_minute: u32,
}

/// True for addresses that only this machine can reach.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Runs the server until a shutdown signal; every session ends first.
pub fn run(opts: &ServerOptions) -> Result<(), Error> {
    let proxy_senders = match &opts.proxy_protocol_from {
        Some(list) => Some(proxy::parse_senders(list).map_err(Error::Config)?),
        None => None,
    };
    os::limit_malloc_arenas();
    let nofile = raise_fd_limit();
    let servers = config::load(&opts.servers_config)?;
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
    keys::ensure_key(&opts.server_key, "m2m-mcp-server-ssh-server")?;
    let key_path = opts.server_key.to_string_lossy().into_owned();
    let host_key = Key::import_private(&key_path, opts.passphrase.as_deref())?;
    let public = host_key.public_line()?;
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
    let mut login = Login {
        authorized,
        cas: user_cas(opts)?,
        revoked: opts.revoked_keys.clone().map(Revoked::open).transpose()?,
        command: keys_command(opts)?,
        audit: None,
        grace: opts.login_grace,
        // libssh warnings reach the DEBUG log; M2M_LIBSSH_LOG=2..4 asks for more.
        libssh_verbosity: std::env::var("M2M_LIBSSH_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    };
    let audit = match &opts.audit_log {
        Some(p) => {
            log::info!("audit log: {}", p.display());
            Some(Arc::new(AuditLog::open(p)?))
        }
        None => None,
    };
    login.audit = audit.clone();
    // New sessions take the current gateway; SIGHUP swaps in a new one.
    let current = Arc::new(Mutex::new(Arc::new(gateway_for(
        opts, servers, &audit, None,
    ))));
    let key_api = match &opts.key_server {
        Some(k) => {
            // Scoped registrations name the servers of the config in force.
            let now = {
                let current = current.clone();
                move || current.lock().unwrap_or_else(|p| p.into_inner()).clone()
            };
            let now2 = now.clone();
            let names = move || now().servers.iter().map(|s| s.name.clone()).collect();
            let health = move || now2().health();
            Some(start_key_api(
                k,
                &public,
                opts,
                Box::new(names),
                Box::new(health),
                nofile,
            )?)
        }
        None => None,
    };
    let stop = Wake::new().map_err(|e| Error::io("cannot create an eventfd", e))?;
    let hangup = Wake::new().map_err(|e| Error::io("cannot create an eventfd", e))?;
    os::install_signal_handlers(&stop);
    os::install_hangup_handler(&hangup);
    let on_hangup = || {
        if let Some(a) = &audit {
            a.reopen();
        }
        reload(opts, &current, &audit);
    };
    let served = Bind::listen(BindConfig {
        addr: &opts.host,
        port: opts.port,
        host_key,
    })
    .and_then(|bind| {
        log::info!("SSH server listening on {}:{}", opts.host, opts.port);
        if let Some(list) = &opts.proxy_protocol_from {
            log::info!(
                "PROXY protocol: connections from {list} must start with a header naming the client"
            );
        }
        let shutdown = Arc::new(AtomicBool::new(false));
        let (login, gw, flag) = (Arc::new(login), current.clone(), shutdown.clone());
        listener::serve(
            bind,
            Limits {
                max_sessions: opts.max_sessions,
                max_startups: opts.max_startups,
                per_source: opts.per_source,
                proxy: proxy_senders.map(|senders| Proxied {
                    senders,
                    grace: opts.login_grace,
                }),
            },
            &stop,
            (&hangup, &on_hangup),
            &shutdown,
            Arc::new(move |session, conn| {
                let gw = gw.lock().unwrap_or_else(|p| p.into_inner()).clone();
                gateway::serve(session, &login, &gw, conn, &flag)
            }),
        )
    });
    if let Some(k) = key_api {
        k.stop();
    }
    current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pool
        .shutdown();
    served?;
    log::info!("stopped");
    Ok(())
}

/// The gateway for a config, with its warm spares and shared servers
/// starting. A shared server whose spec did not change is kept from
/// `previous` (a reload does not restart it).
fn gateway_for(
    opts: &ServerOptions,
    servers: Vec<ServerSpec>,
    audit: &Option<Arc<AuditLog>>,
    previous: Option<&Gateway>,
) -> Gateway {
    let targets = servers
        .iter()
        .map(|s| match s.scope {
            Scope::Session => s.warm_spares.unwrap_or(opts.warm_spares),
            Scope::Shared { .. } => 0,
        })
        .collect();
    // Session-scope counters carry over a reload, so open sessions still count.
    let stats = servers
        .iter()
        .map(|s| {
            let kept = previous.and_then(|g| g.stats.get(&s.name).cloned());
            (s.name.clone(), kept.unwrap_or_default())
        })
        .collect();
    let mut shared = HashMap::new();
    for s in &servers {
        let Scope::Shared { processes } = s.scope else {
            continue;
        };
        let kept = previous.and_then(|g| {
            let old = g.servers.iter().find(|o| o.name == s.name)?;
            (old == s).then(|| g.shared.get(&s.name).cloned()).flatten()
        });
        // One left out (by its era probe, or a bug in its mux) is started anew.
        let kept = kept.filter(|k| !k.left_out());
        let timeout = s.request_timeout.unwrap_or(opts.request_timeout);
        let server = match kept {
            Some(k) => k,
            None => match SharedServer::start(s.clone(), processes, timeout, opts.max_line) {
                Ok(new) => Arc::new(new),
                Err(e) => {
                    log::error!("{e}; server {} left out", s.name);
                    continue;
                }
            },
        };
        shared.insert(s.name.clone(), server);
    }
    Gateway {
        pool: Pool::start(servers.clone(), targets, opts.max_line),
        servers,
        shared,
        stats,
        audit: audit.clone(),
        max_line: opts.max_line,
        request_timeout: opts.request_timeout,
        max_total: opts.request_timeout.max(Duration::from_secs(3600)),
    }
}

/// SIGHUP: re-reads the servers config. New sessions get the new set;
/// open sessions keep theirs until they end. A broken config is refused
/// with the usual message and the old one keeps serving.
fn reload(opts: &ServerOptions, current: &Mutex<Arc<Gateway>>, audit: &Option<Arc<AuditLog>>) {
    let path = opts.servers_config.display();
    match config::load(&opts.servers_config) {
        Ok(servers) => {
            let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
            let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
            let new = Arc::new(gateway_for(opts, servers, audit, Some(&cur)));
            let old = std::mem::replace(&mut *cur, new);
            drop(cur);
            log::info!(
                "SIGHUP: reloaded {path}: new sessions get [{}]; open sessions keep theirs",
                names.join(", ")
            );
            // Sessions already running own their children; only the old
            // warm spares go.
            old.pool.shutdown();
        }
        Err(e) => log::error!("SIGHUP: {e}; still serving the previous config"),
    }
}

/// `--trusted-user-ca-keys`: the file must be readable at start-up (later
/// it is re-read when it changes, and a missing file trusts no CA).
fn user_cas(opts: &ServerOptions) -> Result<Option<Authorities>, Error> {
    let Some(path) = &opts.trusted_user_ca_keys else {
        return Ok(None);
    };
    std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("--trusted-user-ca-keys {}: {e}", path.display())))?;
    let cas = Authorities::new(path.clone());
    log::info!(
        "{} trusted user CA key(s) in {}",
        cas.count(),
        path.display()
    );
    Ok(Some(cas))
}

/// `--authorized-keys-command`, checked at start-up (exit 2 when unusable).
fn keys_command(opts: &ServerOptions) -> Result<Option<KeysCommand>, Error> {
    let Some((cmd, timeout)) = &opts.authorized_keys_command else {
        return Ok(None);
    };
    let c = KeysCommand::new(cmd, *timeout)
        .map_err(|e| Error::Config(format!("--authorized-keys-command {cmd:?}: {e}")))?;
    log::info!(
        "AuthorizedKeysCommand: {cmd} (timeout {} s)",
        timeout.as_secs_f64()
    );
    Ok(Some(c))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the soft
/// limit in force (1024, the common default, if it cannot be read).
fn raise_fd_limit() -> u64 {
    match os::raise_nofile_limit() {
        Ok((before, after)) if before == after => {
            log::debug!("open-file limit: {after} (already the hard limit)");
            after
        }
        Ok((before, after)) => {
            log::debug!("open-file limit raised from {before} to the hard limit, {after}");
            after
        }
        Err(e) => {
            log::debug!("cannot raise the open-file limit: {e}");
            1024
        }
    }
}

/// Starts the key API, bounded for a process whose fd limit is `nofile`.
fn start_key_api(
    k: &KeyServerOptions,
    public: &str,
    opts: &ServerOptions,
    servers: keyapi::ServerNames,
    health: keyapi::Health,
    nofile: u64,
) -> Result<keyapi::Running, Error> {
    let token = match &k.token_file {
        None => None,
        Some(p) => {
            let t = std::fs::read_to_string(p).map_err(|e| {
                Error::Config(format!(
                    "cannot read --key-server-token-file {}: {e}",
                    p.display()
                ))
            })?;
            let t = t.trim().to_owned();
            if t.len() < 16 {
                return Err(Error::Config(format!(
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
            registry: Registry::new(opts.registered_clients.clone()),
            authorized: opts.authorized_clients.clone(),
            health,
            servers,
            limiter: RateLimiter::new(k.per_minute),
            token,
        },
        keyapi::Limits::for_fd_limit(nofile),
    )
}
