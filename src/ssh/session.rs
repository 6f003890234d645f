//! One SSH connection on its own thread: handshake under a deadline,
//! public-key auth, one session channel, then the MCP session loop that
//! bridges the channel and the children through the router.

use super::sys::{Channel, EventLoop, Request, Session};
use super::wake::Wake;
use crate::child::{self, ChildEvent, ChildProc, Sink};
use crate::config::ServerSpec;
use crate::keys::authorized::Authorized;
use crate::mcp::jsonrpc::{self, Frame, Framer};
use crate::mcp::router::{Action, ChildInfo, Options, Router};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What every session shares.
pub struct Shared {
    pub authorized: Authorized,
    pub pool: Arc<crate::pool::Pool>,
    pub servers: Vec<ServerSpec>,
    pub max_line: usize,
    pub request_timeout: Duration,
    pub max_total: Duration,
    pub shutdown: AtomicBool,
    /// Seconds allowed for key exchange and authentication together.
    pub auth_deadline: Duration,
    /// libssh's own log verbosity for session threads (`M2M_LIBSSH_LOG`).
    pub libssh_verbosity: i32,
}

const MAX_AUTH_ATTEMPTS: u32 = 20;

/// How the client asked for the MCP stream.
enum Start {
    /// All configured servers (shell, subsystem mcp, empty exec).
    All,
    /// `exec "a,b"`: only these servers.
    Only(Vec<String>),
}

/// Runs one connection to its end. `id` tags log lines.
pub fn run(session: Session, shared: &Shared, wake: Arc<Wake>, id: u64) {
    super::sys::forward_logs(shared.libssh_verbosity);
    session.prepare(shared.auth_deadline.as_secs().max(1) as i64);
    if let Err(e) = session.handle_key_exchange() {
        log::info!("s{id}: key exchange failed: {e}");
        return;
    }
    let Some(user) = authenticate(&session, shared, id) else {
        session.disconnect();
        return;
    };
    let Some((channel, start)) = open_channel(&session, id) else {
        session.disconnect();
        return;
    };
    session.stop_queueing();
    session.clear_timeout();
    let servers: Vec<ServerSpec> = match start {
        Start::All => shared.servers.clone(),
        Start::Only(names) => {
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| !shared.servers.iter().any(|s| &s.name == *n))
                .collect();
            if !unknown.is_empty() {
                let msg = format!(
                    "unknown MCP server(s): {}; configured: {}\n",
                    unknown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    shared
                        .servers
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                channel.write_stderr(msg.as_bytes());
                channel.finish(1);
                drain_close(&session, &channel, &wake);
                // libssh's disconnect frees the session's channels: ours first.
                drop(channel);
                session.disconnect();
                return;
            }
            shared
                .servers
                .iter()
                .filter(|s| names.contains(&s.name))
                .cloned()
                .collect()
        }
    };
    log::info!(
        "s{id}: user {user:?} authenticated; serving {} MCP server(s)",
        servers.len()
    );
    mcp_loop(&session, &channel, shared, &servers, wake, id);
    drop(channel);
    session.disconnect();
    log::info!("s{id}: session ended");
}

/// Public-key auth only; every other method is refused. Returns the user.
fn authenticate(session: &Session, shared: &Shared, id: u64) -> Option<String> {
    let deadline = Instant::now() + shared.auth_deadline;
    let mut attempts = 0;
    while Instant::now() < deadline && attempts < MAX_AUTH_ATTEMPTS {
        let msg = session.next_message()?;
        match msg.request() {
            Request::AuthPublicKey { signed } => {
                attempts += 1;
                let known = msg
                    .auth_key()
                    .is_some_and(|(kind, blob)| shared.authorized.allows(&kind, &blob));
                match (known, signed) {
                    (true, false) => msg.reply_pk_ok(),
                    (true, true) => {
                        msg.reply_auth_success();
                        return Some(msg.auth_user());
                    }
                    (false, _) => {
                        if let Some((kind, blob)) = msg.auth_key() {
                            log::info!(
                                "s{id}: refused {kind} key {} (not authorized)",
                                crate::keys::fingerprint(&blob)
                            );
                        }
                        msg.reply_auth_denied()
                    }
                }
            }
            Request::AuthOther => {
                attempts += 1;
                msg.reply_auth_denied();
            }
            _ => msg.reply_default(),
        }
    }
    log::info!("s{id}: authentication did not complete");
    None
}

/// Accepts one session channel and its shell/exec/subsystem request.
fn open_channel<'s>(session: &'s Session, id: u64) -> Option<(Channel<'s>, Start)> {
    let mut channel: Option<Channel<'s>> = None;
    loop {
        let msg = session.next_message()?;
        match msg.request() {
            Request::OpenSession if channel.is_none() => channel = Some(msg.accept_channel()?),
            Request::Shell if channel.is_some() => {
                msg.reply_success();
                return Some((channel?, Start::All));
            }
            Request::Subsystem(name) if channel.is_some() && name == "mcp" => {
                msg.reply_success();
                return Some((channel?, Start::All));
            }
            Request::Exec(cmd) if channel.is_some() => {
                msg.reply_success();
                let names: Vec<String> = cmd
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                let start = if names.is_empty() {
                    Start::All
                } else {
                    Start::Only(names)
                };
                return Some((channel?, start));
            }
            other => {
                log::debug!("s{id}: refused {other:?}");
                msg.reply_default();
            }
        }
    }
}

/// After exit-status, EOF and close: wait briefly for the client's close.
fn drain_close(session: &Session, channel: &Channel, wake: &Wake) {
    if let Ok(mut ev) = EventLoop::new(session, channel, wake.fd()) {
        wait_for_close(&mut ev);
    }
}

/// Polls (200 ms at most) until the client's channel close arrives, so
/// OpenSSH sees a clean end instead of "closed by remote host".
fn wait_for_close(ev: &mut EventLoop) {
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end && !ev.inbound().closed && ev.connected() {
        let left = end.saturating_duration_since(Instant::now()).as_millis() as i32;
        if ev.poll(left.max(1)).is_err() {
            break;
        }
    }
}

fn mcp_loop(
    session: &Session,
    channel: &Channel,
    shared: &Shared,
    servers: &[ServerSpec],
    wake: Arc<Wake>,
    id: u64,
) {
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, ChildEvent)>();
    let mut children: Vec<Option<ChildProc>> = Vec::with_capacity(servers.len());
    let infos: Vec<ChildInfo> = servers
        .iter()
        .map(|s| ChildInfo {
            name: s.name.clone(),
            timeout: s.request_timeout.unwrap_or(shared.request_timeout),
            prefix: s.name_prefix.clone(),
        })
        .collect();
    let mut router = Router::new(
        infos,
        Options {
            max_total: shared.max_total,
            server_name: "m2m-mcp-server-ssh-server".into(),
            server_version: env!("CARGO_PKG_VERSION").into(),
        },
    );
    for (i, spec) in servers.iter().enumerate() {
        let started = match shared.pool.take(&spec.name) {
            Some(c) => Ok(c),
            None => ChildProc::spawn(spec, shared.max_line),
        };
        match started {
            Ok(mut c) => {
                c.attach(Sink {
                    index: i,
                    tx: tx.clone(),
                    wake: wake.clone(),
                });
                log::debug!("s{id}: started {} (pid {})", spec.name, c.pid());
                children.push(Some(c));
            }
            Err(e) => {
                log::error!("s{id}: server {} failed to start: {e}; left out", spec.name);
                router.child_unavailable(i);
                children.push(None);
            }
        }
    }
    drop(tx);

    let mut ev = match EventLoop::new(session, channel, wake.fd()) {
        Ok(ev) => ev,
        Err(e) => {
            log::error!("s{id}: {e}");
            let mut live: Vec<ChildProc> = children.into_iter().flatten().collect();
            child::stop_all(&mut live);
            return;
        }
    };
    let mut framer = Framer::new(shared.max_line);
    let mut out = Outbox::default();
    let mut frames = Vec::new();
    let mut scratch = Vec::new();
    // Bytes that arrived with the channel request, before callbacks existed.
    let mut early = Vec::new();
    let mut eof = channel.read_nonblocking(&mut early);
    ev.inbound().data.extend_from_slice(&early);
    let mut status = 0;

    loop {
        let now = Instant::now();
        // Swap buffers so both keep their capacity across turns.
        std::mem::swap(&mut scratch, &mut ev.inbound().data);
        framer.push(&scratch, &mut frames);
        scratch.clear();
        if scratch.capacity() > 1 << 20 {
            scratch = Vec::new(); // do not keep a big message's buffer for the session's life
        }
        for f in frames.drain(..) {
            let actions = match f {
                Frame::Line(l) => router.from_client_line(&l, now),
                Frame::TooLong => router.client_line_too_long(shared.max_line),
            };
            apply(actions, &mut out, &children, id);
        }
        eof |= ev.inbound().eof;
        ev.inbound().woken = false;
        while let Ok((idx, e)) = rx.try_recv() {
            let actions = match e {
                ChildEvent::Message(m) => router.from_child_incoming(idx, m, now),
                ChildEvent::BadLine(l) => {
                    log::warn!(
                        "s{id}: [{}] wrote a non-JSON line to stdout: {}",
                        servers[idx].name,
                        truncate(&l, 200)
                    );
                    Vec::new()
                }
                ChildEvent::Closed => {
                    if let Some(Some(c)) = children.get(idx) {
                        log::warn!(
                            "s{id}: server {} exited; stderr: {}",
                            c.name,
                            c.stderr_tail()
                        );
                    }
                    router.child_closed(idx, now)
                }
            };
            apply(actions, &mut out, &children, id);
        }
        if router.next_deadline().is_some_and(|d| d <= now) {
            let actions = router.tick(now);
            apply(actions, &mut out, &children, id);
        }
        if let Err(e) = out.flush(channel) {
            log::info!("s{id}: {e}");
            break;
        }
        if ev.inbound().closed || !ev.connected() || shared.shutdown.load(Ordering::Relaxed) {
            break;
        }
        // Client closed its input: finish what is in flight, then end.
        if eof && out.is_empty() && router.next_deadline().is_none() {
            break;
        }
        let timeout = router
            .next_deadline()
            .map(|d| {
                d.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32
                    + 1
            })
            .unwrap_or(-1);
        if let Err(e) = ev.poll(timeout) {
            log::info!("s{id}: connection error: {e}");
            status = 1;
            break;
        }
    }
    if ev.connected() && !ev.inbound().closed {
        channel.finish(status);
        wait_for_close(&mut ev);
    }
    drop(ev);
    let mut live: Vec<ChildProc> = children.into_iter().flatten().collect();
    child::stop_all(&mut live);
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn apply(actions: Vec<Action>, out: &mut Outbox, children: &[Option<ChildProc>], id: u64) {
    for a in actions {
        match a {
            Action::ToClient(v) => out.push(&jsonrpc::to_line(&v)),
            Action::ToClientRaw(line) => out.push(&line),
            Action::ToChild(i, v) => {
                if let Some(Some(c)) = children.get(i) {
                    c.send(jsonrpc::to_line(&v));
                }
            }
            Action::ChildFailed(i, why) => {
                if let Some(Some(c)) = children.get(i) {
                    log::error!(
                        "s{id}: server {} left out: {why}; stderr: {}",
                        c.name,
                        c.stderr_tail()
                    );
                }
            }
        }
    }
}

/// Bytes waiting for the client, written only as far as its window allows so
/// a slow reader never blocks the session thread.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    start: usize,
}

impl Outbox {
    fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    fn is_empty(&self) -> bool {
        self.start >= self.buf.len()
    }

    fn flush(&mut self, channel: &Channel) -> Result<(), String> {
        while !self.is_empty() {
            let window = channel.window() as usize;
            if window == 0 {
                break;
            }
            let end = (self.start + window.min(256 * 1024)).min(self.buf.len());
            let n = channel
                .write(&self.buf[self.start..end])
                .map_err(|e| format!("write to client failed: {e}"))?;
            if n == 0 {
                break;
            }
            self.start += n;
        }
        if self.is_empty() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > 1 << 20 {
                self.buf.shrink_to(64 * 1024);
            }
        }
        Ok(())
    }
}
