//! `m2m-mcp-server-ssh-server`: serve MCP servers over SSH.

use argh::FromArgs;
use m2m_mcp_server_ssh_server::keys::clients::{self, Revocation};
use m2m_mcp_server_ssh_server::keys::registry::Registry;
use m2m_mcp_server_ssh_server::logging::{self, expand_home};
use m2m_mcp_server_ssh_server::server::{self, KeyServerOptions, ServerOptions};
use m2m_mcp_server_ssh_server::ssh::persource::{self, Policy};
use std::path::Path;
use std::time::Duration;

/// MCP SSH server: runs the MCP servers in servers_config.json and serves them, merged, over SSH.
#[derive(FromArgs)]
struct Args {
    /// address to bind the SSH server to (default: 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    host: String,
    /// port of the SSH server (default: 8022)
    #[argh(option, default = "8022")]
    port: u16,
    /// authorized_keys file of the clients allowed in (default: ~/.ssh/authorized_keys)
    #[argh(option, default = "String::from(\"~/.ssh/authorized_keys\")")]
    authorized_clients: String,
    /// file the key API appends registered client keys to, also trusted (default: ~/.ssh/m2m_mcp_server_ssh_clients)
    #[argh(
        option,
        default = "String::from(\"~/.ssh/m2m_mcp_server_ssh_clients\")"
    )]
    registered_clients: String,
    /// host private key, ed25519, generated if missing (default: ~/.ssh/m2m_mcp_server_ssh_server)
    #[argh(option, default = "String::from(\"~/.ssh/m2m_mcp_server_ssh_server\")")]
    server_key: String,
    /// passphrase of an encrypted host key
    #[argh(option)]
    passphrase: Option<String>,
    /// MCP servers config (default: servers_config.json)
    #[argh(option, default = "String::from(\"servers_config.json\")")]
    servers_config: String,
    /// log level: DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)
    #[argh(option, default = "String::from(\"INFO\")")]
    log_level: String,
    /// largest JSON-RPC line accepted, in bytes (default: 16777216)
    #[argh(option, default = "16 * 1024 * 1024")]
    max_line_bytes: usize,
    /// seconds a request to an MCP server may take without progress (default: 120)
    #[argh(option, default = "120.0")]
    request_timeout: f64,
    /// started spare processes kept per MCP server, handed to new sessions (default: 1)
    #[argh(option, default = "1")]
    warm_spares: usize,
    /// most concurrent SSH connections (default: 64)
    #[argh(option, default = "64")]
    max_sessions: usize,
    /// most connections still in key exchange or authentication; more are refused at once (default: 10)
    #[argh(option, default = "10")]
    max_startups: usize,
    /// most of those from one source address (IPv4, or IPv6 /64) (default: half of --max-startups, at least 2)
    #[argh(option)]
    per_source_max_startups: Option<usize>,
    /// SECS[:MAX]: a source's 10th failed login gets it refused for SECS, each later one for twice as long up to MAX; 0 turns this off (default: 30:600)
    #[argh(option, default = "String::from(persource::DEFAULT_PENALTY)")]
    per_source_penalty: String,
    /// seconds a client has to finish key exchange and authentication, in all (default: 10)
    #[argh(option, default = "10")]
    login_grace_time: u64,
    /// append one JSON line per session and per tool call, prompt or resource read to this file (reopened on SIGHUP)
    #[argh(option)]
    audit_log: Option<String>,
    /// run the HTTP key-management API beside the SSH server
    #[argh(switch)]
    run_key_server: bool,
    /// address of the key API (default: 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    key_server_host: String,
    /// port of the key API (default: 8000)
    #[argh(option, default = "8000")]
    key_server_port: u16,
    /// file holding a bearer token that POST /register (and GET /clients, DELETE /clients/...) must present
    #[argh(option)]
    key_server_token_file: Option<String>,
    /// key API requests allowed per client IP per minute (default: 10)
    #[argh(option, default = "10")]
    key_server_rate_limit: u32,
    /// CIDR,...: connections from these addresses (a load balancer such as HAProxy with send-proxy-v2) must start with a PROXY protocol v1 or v2 header, whose client address then counts for from=, limits, logs and the audit log
    #[argh(option)]
    proxy_protocol_from: Option<String>,
    /// CA public keys (authorized_keys format) whose OpenSSH user certificates are accepted, as sshd's TrustedUserCAKeys
    #[argh(option)]
    trusted_user_ca_keys: Option<String>,
    /// public keys refused however offered (plain, certified, or as a certificate's CA), as sshd's RevokedKeys
    #[argh(option)]
    revoked_keys: Option<String>,
    /// program printing authorized_keys lines for a login, as sshd's AuthorizedKeysCommand: absolute path and arguments, with %u user, %f fingerprint, %t key type, %k base64 key, %% a %
    #[argh(option)]
    authorized_keys_command: Option<String>,
    /// seconds the --authorized-keys-command may run before the login is refused (default: 5)
    #[argh(option, default = "5.0")]
    authorized_keys_command_timeout: f64,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Clients(Clients),
}

/// See or revoke the trusted client keys, in the files of --authorized-clients and --registered-clients (give them before "clients"); the server need not be stopped.
#[derive(FromArgs)]
#[argh(subcommand, name = "clients")]
struct Clients {
    #[argh(subcommand)]
    action: ClientsAction,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum ClientsAction {
    List(List),
    Revoke(Revoke),
}

/// Print every trusted key line of both files: a table, or JSON lines with --json.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct List {
    /// one JSON object per line, as the key API's GET /clients gives them
    #[argh(switch)]
    json: bool,
}

/// Remove a key from --registered-clients (exit 0; 1 if no such key there, 2 on a malformed fingerprint or a file error); a key in --authorized-clients is reported, never edited.
#[derive(FromArgs)]
#[argh(subcommand, name = "revoke")]
struct Revoke {
    /// the key's fingerprint, SHA256:..., as ssh-keygen -l prints it
    #[argh(positional)]
    fingerprint: String,
}

fn main() {
    let args: Args = argh::from_env();
    if args.version {
        println!("m2m-mcp-server-ssh-server {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if let Some(Command::Clients(c)) = &args.command {
        let authorized = expand_home(&args.authorized_clients);
        let registered = expand_home(&args.registered_clients);
        std::process::exit(clients_command(&c.action, &authorized, &registered));
    }
    logging::init_from_flag(&args.log_level);
    let per_source = match check_ranges(&args).and_then(|()| per_source_policy(&args)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let opts = ServerOptions {
        host: args.host,
        port: args.port,
        authorized_clients: expand_home(&args.authorized_clients),
        registered_clients: expand_home(&args.registered_clients),
        server_key: expand_home(&args.server_key),
        passphrase: args.passphrase,
        servers_config: expand_home(&args.servers_config),
        max_line: args.max_line_bytes,
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        max_sessions: args.max_sessions,
        max_startups: args.max_startups,
        per_source,
        login_grace: Duration::from_secs(args.login_grace_time),
        warm_spares: args.warm_spares,
        audit_log: args.audit_log.as_deref().map(expand_home),
        key_server: args.run_key_server.then(|| KeyServerOptions {
            host: args.key_server_host,
            port: args.key_server_port,
            token_file: args.key_server_token_file.as_deref().map(expand_home),
            per_minute: args.key_server_rate_limit,
        }),
        proxy_protocol_from: args.proxy_protocol_from,
        trusted_user_ca_keys: args.trusted_user_ca_keys.as_deref().map(expand_home),
        revoked_keys: args.revoked_keys.as_deref().map(expand_home),
        authorized_keys_command: args.authorized_keys_command.map(|c| {
            let t = Duration::from_secs_f64(args.authorized_keys_command_timeout);
            (c, t)
        }),
    };
    if let Err(e) = server::run(&opts) {
        log::error!("{e}");
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

/// `clients list` / `clients revoke`, on the trust files themselves (the
/// registry's lock keeps a revocation and the key API's writes apart);
/// returns the exit code.
fn clients_command(action: &ClientsAction, authorized: &Path, registered: &Path) -> i32 {
    let failed = |e: std::io::Error| {
        eprintln!("error: {e}");
        2
    };
    match action {
        ClientsAction::List(l) => match clients::list(authorized, registered) {
            Ok(all) if l.json => {
                for c in &all {
                    println!("{}", c.to_json());
                }
                0
            }
            Ok(all) => {
                print!("{}", clients::table(&all));
                0
            }
            Err(e) => failed(e),
        },
        ClientsAction::Revoke(r) => {
            let fp = r.fingerprint.as_str();
            if !clients::is_fingerprint(fp) {
                eprintln!(
                    "error: {fp:?} is not a key fingerprint: write SHA256: and 43 base64 characters, as ssh-keygen -l prints it"
                );
                return 2;
            }
            let registry = Registry::new(registered.to_path_buf());
            let kept = || {
                format!(
                    "{fp} is in {}, which this command never edits: it stays trusted until removed there by hand",
                    authorized.display()
                )
            };
            match clients::revoke(&registry, authorized, fp) {
                Ok(Revocation::Removed {
                    lines,
                    also_authorized,
                }) => {
                    println!(
                        "revoked {fp}: {lines} line(s) removed from {}",
                        registered.display()
                    );
                    if also_authorized {
                        println!("{}", kept());
                    }
                    0
                }
                Ok(Revocation::OnlyAuthorized) => {
                    eprintln!("{}", kept());
                    1
                }
                Ok(Revocation::NotFound) => {
                    eprintln!(
                        "{fp} is in neither {} nor {}",
                        registered.display(),
                        authorized.display()
                    );
                    1
                }
                Err(e) => failed(e),
            }
        }
    }
}

/// The per-source limits from their flags.
fn per_source_policy(a: &Args) -> Result<Policy, String> {
    let max_startups = a
        .per_source_max_startups
        .unwrap_or(Policy::default_max_startups(a.max_startups));
    if max_startups == 0 {
        return Err("--per-source-max-startups must be at least 1".into());
    }
    let (penalty, penalty_max) = Policy::parse_penalty(&a.per_source_penalty)?;
    Ok(Policy {
        max_startups,
        penalty,
        penalty_max,
    })
}

/// Out-of-range numbers are refused, not silently clamped.
fn check_ranges(a: &Args) -> Result<(), String> {
    if !(a.request_timeout > 0.0 && a.request_timeout < 1e7) {
        return Err("--request-timeout must be a positive number of seconds".into());
    }
    if !(1..=600).contains(&a.login_grace_time) {
        return Err("--login-grace-time must be from 1 to 600 seconds".into());
    }
    if a.max_sessions == 0 {
        return Err("--max-sessions must be at least 1".into());
    }
    if a.max_startups == 0 {
        return Err("--max-startups must be at least 1".into());
    }
    if a.warm_spares > 16 {
        return Err("--warm-spares must be from 0 to 16".into());
    }
    if a.max_line_bytes < 1024 {
        return Err("--max-line-bytes must be at least 1024".into());
    }
    if !(a.authorized_keys_command_timeout > 0.0 && a.authorized_keys_command_timeout <= 600.0) {
        return Err("--authorized-keys-command-timeout must be from 0 to 600 seconds".into());
    }
    if a.key_server_rate_limit == 0 {
        return Err("--key-server-rate-limit must be at least 1".into());
    }
    Ok(())
}
