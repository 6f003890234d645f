//! `m2m-mcp-server-ssh-client`: a stdio MCP server for the AI host that
//! forwards every byte over SSH to the gateway, unparsed, so every present
//! and future MCP feature passes. One thread drives the libssh2 session from
//! one poll over stdin, the socket and a signal fd; logs go to stderr only.

pub mod keyserver;
pub mod known_hosts;

use crate::error::Error;
use crate::keys::{self, fingerprint};
use crate::os::{self, Wake, install_signal_handlers, poll_events};
use known_hosts::Verdict;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::Duration;

/// Client settings (flags of the Python client).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    pub passphrase: Option<String>,
    pub disable_host_key_checking: bool,
    pub use_key_server: bool,
    pub key_server_port: u16,
    pub key_server_token: Option<String>,
}

/// Modern algorithms first; the rest only where older servers need them.
const KEX: &str = "curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,ecdh-sha2-nistp256,diffie-hellman-group14-sha256";
const HOSTKEYS: &str = "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256";
const CIPHERS: &str = "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes128-ctr";
const MACS: &str =
    "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,hmac-sha2-512";

/// The key type named inside a public-key blob.
fn blob_type(blob: &[u8]) -> String {
    if blob.len() < 4 {
        return "unknown".into();
    }
    let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    blob.get(4..4 + n)
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Connects, verifies, authenticates and bridges until stdin or the server ends.
pub fn run(opts: &ClientOptions) -> Result<(), Error> {
    keys::ensure_key(&opts.client_key, "m2m-mcp-server-ssh-client")?;
    let expected = if opts.use_key_server {
        let line = keyserver::fetch_server_key(&opts.host, opts.key_server_port)?;
        let (key, _) = keys::parse_line(&line).ok_or_else(|| {
            Error::Http(format!("the key server sent an invalid host key: {line:?}"))
        })?;
        let pub_path = keys::pub_path(&opts.client_key);
        let public = std::fs::read_to_string(&pub_path)
            .map_err(|e| Error::io(format!("cannot read {}", pub_path.display()), e))?;
        keyserver::register(
            &opts.host,
            opts.key_server_port,
            public.trim(),
            opts.key_server_token.as_deref(),
        )?;
        Some(key.blob)
    } else {
        None
    };

    let target = format!("{}:{}", opts.host, opts.port);
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| Error::io(format!("cannot resolve {target}"), e))?
        .collect();
    let tcp = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(10)).ok())
        .ok_or_else(|| Error::ssh(format!("cannot connect to {target}"), ""))?;
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    let mut sess =
        ssh2::Session::new().map_err(|e| Error::ssh("cannot create a libssh2 session", e))?;
    sess.set_tcp_stream(tcp);
    sess.set_timeout(15_000);
    for (m, p) in [
        (ssh2::MethodType::Kex, KEX),
        (ssh2::MethodType::HostKey, HOSTKEYS),
        (ssh2::MethodType::CryptCs, CIPHERS),
        (ssh2::MethodType::CryptSc, CIPHERS),
        (ssh2::MethodType::MacCs, MACS),
        (ssh2::MethodType::MacSc, MACS),
    ] {
        let _ = sess.method_pref(m, p);
    }
    sess.handshake()
        .map_err(|e| Error::ssh(format!("SSH handshake with {target} failed"), e))?;
    let (blob, _) = sess
        .host_key()
        .ok_or_else(|| Error::HostKey("the server sent no host key".into()))?;
    let blob = blob.to_vec();
    verify_host(opts, &blob, expected.as_deref())?;

    let pubfile = keys::pub_path(&opts.client_key);
    sess.userauth_pubkey_file(
        &opts.username,
        pubfile.exists().then_some(pubfile.as_path()),
        &opts.client_key,
        opts.passphrase.as_deref(),
    )
    .map_err(|e| {
        Error::ssh(
            format!(
                "authentication as {} at {target} with {} failed",
                opts.username,
                opts.client_key.display()
            ),
            e,
        )
    })?;
    let mut channel = sess
        .channel_session()
        .map_err(|e| Error::ssh("cannot open a session channel", e))?;
    channel
        .shell()
        .map_err(|e| Error::ssh("the server refused the MCP session", e))?;
    log::info!("connected to {target} as {}", opts.username);
    sess.set_keepalive(false, 30);
    sess.set_blocking(false);
    bridge(&sess, &mut channel, fd)
}

fn verify_host(opts: &ClientOptions, blob: &[u8], expected: Option<&[u8]>) -> Result<(), Error> {
    let name = known_hosts::host_name(&opts.host, opts.port);
    let desc = format!("{} {}", blob_type(blob), fingerprint(blob));
    if let Some(exp) = expected {
        if exp != blob {
            return Err(Error::HostKey(format!(
                "host key verification failed: {name} presented {desc}, not the key its key server published ({})",
                fingerprint(exp)
            )));
        }
        return Ok(());
    }
    if opts.disable_host_key_checking {
        log::warn!("host key checking is disabled: accepting {desc} from {name} unverified");
        return Ok(());
    }
    let text = std::fs::read_to_string(&opts.known_hosts).unwrap_or_default();
    match known_hosts::check(&text, &opts.host, opts.port, blob) {
        Verdict::Match => Ok(()),
        Verdict::Revoked => Err(Error::HostKey(format!(
            "host key verification failed: the key of {name} ({desc}) is marked @revoked in {}",
            opts.known_hosts.display()
        ))),
        Verdict::Mismatch => Err(Error::HostKey(format!(
            "host key verification failed: {name} presented {desc}, which does not match {}: \
             the server key changed or someone is intercepting the connection",
            opts.known_hosts.display()
        ))),
        Verdict::Unknown => Err(Error::HostKey(format!(
            "host key verification failed: {name} is not in {} (it presented {desc}); add its key \
             (for example from `ssh-keyscan -p {} {}`), or use --use-key-server",
            opts.known_hosts.display(),
            opts.port,
            opts.host
        ))),
    }
}

fn bridge(sess: &ssh2::Session, channel: &mut ssh2::Channel, sock: i32) -> Result<(), Error> {
    let stop = Wake::new().map_err(|e| Error::io("cannot create an eventfd", e))?;
    install_signal_handlers(&stop);
    let mut stdout = std::io::stdout();
    let mut to_server: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdin_eof = false;
    let mut eof_sent = false;
    let mut stopping = false;
    loop {
        // Server -> stdout.
        loop {
            match channel.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if stdout
                        .write_all(&buf[..n])
                        .and_then(|_| stdout.flush())
                        .is_err()
                    {
                        log::info!("stdout closed; ending the session");
                        stopping = true;
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(Error::ssh("connection lost", e)),
            }
        }
        loop {
            match channel.stderr().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => log::warn!("server: {}", String::from_utf8_lossy(&buf[..n]).trim_end()),
                Err(_) => break,
            }
        }
        if channel.eof() {
            sess.set_blocking(true);
            sess.set_timeout(2_000);
            let _ = channel.close();
            let _ = channel.wait_close();
            let status = channel.exit_status().unwrap_or(0);
            if eof_sent || stopping {
                return Ok(());
            }
            return Err(Error::ssh(
                format!("the server closed the session (exit status {status})"),
                "",
            ));
        }
        // stdin -> server.
        while !to_server.is_empty() {
            match channel.write(&to_server) {
                Ok(n) => {
                    to_server.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(Error::ssh("connection lost", e)),
            }
        }
        if (stdin_eof || stopping) && to_server.is_empty() && !eof_sent {
            match channel.send_eof() {
                Ok(()) => eof_sent = true,
                Err(e) if matches!(e.code(), ssh2::ErrorCode::Session(-37)) => {} // EAGAIN
                Err(e) => return Err(Error::ssh("connection lost", e)),
            }
        }
        let next_keepalive = sess.keepalive_send().unwrap_or(30).max(1);
        let dirs = sess.block_directions();
        let blocked_out = matches!(
            dirs,
            ssh2::BlockDirections::Outbound | ssh2::BlockDirections::Both
        );
        let want_out = !to_server.is_empty() || blocked_out;
        // libssh2 reads the socket inside other calls too (a write first
        // drains incoming packets, a stderr read takes stdout data off the
        // wire): what it queued that way no longer makes the socket
        // readable, so go round again at once instead of sleeping on it.
        let queued = (channel.read_window().available > 0 && !stopping)
            || channel.eof()
            || (!to_server.is_empty() && channel.write_window().remaining > 0);
        let timeout_ms = if queued && !blocked_out {
            0
        } else {
            (next_keepalive as i32).saturating_mul(1000)
        };
        // Stop reading stdin while 1 MiB waits for the server (backpressure);
        // poll skips a negative fd.
        let read_stdin = !stdin_eof && !stopping && to_server.len() < (1 << 20);
        let sock_events = libc::POLLIN | if want_out { libc::POLLOUT } else { 0 };
        let [_, stop_ready, stdin_ready] = poll_events(
            [
                (sock, sock_events),
                (stop.fd(), libc::POLLIN),
                (if read_stdin { 0 } else { -1 }, libc::POLLIN),
            ],
            timeout_ms,
        )
        .map_err(|e| Error::io("poll", e))?;
        if stop_ready {
            log::info!("signal received; closing the session");
            stop.drain();
            stopping = true;
        }
        if stdin_ready {
            match os::read_fd(std::io::stdin().as_fd(), &mut buf) {
                Ok(0) => stdin_eof = true,
                Ok(n) => to_server.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => stdin_eof = true,
            }
        }
    }
}
