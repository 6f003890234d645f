//! One SSH connection on its own thread: handshake under a deadline,
//! public-key auth, one session channel, then the MCP session loop that
//! bridges the channel and the children through the router.
//!
//! The loop's state (`Core`: connection, router, buffers, children) sits in
//! a mutex. The session thread takes it to handle what the client sends and
//! sleeps in a poll over the socket and its wake fd without it. A child's
//! reader thread queues each message on the session's crossbeam channel and
//! then, if the mutex is free, runs the turn itself, so a response reaches the
//! client without waking the session thread; if the mutex is busy it wakes
//! the session thread instead.
//!
//! While the session is in its plain state (nothing waits for socket room, no
//! child's stdin is full), one reader thread also watches the client's socket
//! while it waits for its child (`Watch`): it polls both and handles a
//! request itself, so a call's round trip stays on one thread as in sshd's
//! one process per connection. Two threads on two CPUs cost two cross-CPU
//! wake-ups per call, which on a VM cost more than the gateway's own work.
//! The session thread then sleeps on its wake fd only, and takes the socket
//! back whenever the state leaves the plain one or the watcher stops.

use super::sys::{Channel, Live, Request, Session};
use super::wake::{Wake, poll_events, poll_readable};
use crate::child::{self, Backlog, ChildEvent, ChildProc, Idle, Sink};
use crate::config::ServerSpec;
use crate::keys::authorized::Authorized;
use crate::mcp::jsonrpc::{self, Frame, Framer};
use crate::mcp::router::{Action, ChildInfo, Options, Router};
use crossbeam_channel::Receiver;
use std::cell::Cell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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

/// Output a session holds for a slow client before its children are held
/// back. Readers wait between lines, so a longer message still goes through.
const BACKLOG_LIMIT: usize = 4 << 20;

/// How the client asked for the MCP stream.
enum Start {
    /// All configured servers (shell, subsystem mcp, empty exec).
    All,
    /// `exec "a,b"`: only these servers.
    Only(Vec<String>),
}

/// A connection's place among those still in key exchange or authentication
/// (`--max-startups`), given back when it logs in or ends.
pub struct Startup(Option<Arc<AtomicUsize>>);

impl Startup {
    pub fn take(count: &Arc<AtomicUsize>) -> Startup {
        count.fetch_add(1, Ordering::Relaxed);
        Startup(Some(count.clone()))
    }

    fn release(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        self.release();
    }
}

/// Runs one connection to its end. `id` tags log lines.
pub fn run(session: Session, shared: &Shared, wake: Arc<Wake>, id: u64, mut startup: Startup) {
    super::sys::forward_logs(shared.libssh_verbosity);
    // One deadline for key exchange and authentication together, so a client
    // that trickles packets cannot hold a connection slot unauthenticated.
    let deadline = Instant::now() + shared.auth_deadline;
    session.prepare(shared.auth_deadline);
    if let Err(e) = session.handle_key_exchange() {
        // libssh leaves the message empty when the client went silent (the
        // login deadline) or hung up.
        let e = e.to_string();
        let why = if e.is_empty() {
            "the client hung up or stayed silent until the login deadline"
        } else {
            &e
        };
        log::info!("s{id}: key exchange failed: {why}");
        return;
    }
    let Some(user) = authenticate(&session, shared, deadline, id) else {
        session.disconnect();
        return;
    };
    startup.release();
    // Channel setup gets its own bound per message, as key exchange had.
    session.set_timeout(shared.auth_deadline);
    let Some((channel, start)) = open_channel(&session, id) else {
        session.disconnect();
        return;
    };
    session.stop_queueing();
    session.clear_timeout();
    let channel = channel.into_raw();
    let mut live = match Live::new(session, channel) {
        Ok(l) => l,
        Err(e) => {
            log::error!("s{id}: {e}");
            return;
        }
    };
    live.take_early();
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
                live.write_stderr(msg.as_bytes());
                live.finish(1);
                wait_for_close(&mut live);
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
    mcp_loop(live, shared, &servers, wake, id);
    log::info!("s{id}: session ended");
}

/// Public-key auth only; every other method is refused. Returns the user.
fn authenticate(session: &Session, shared: &Shared, deadline: Instant, id: u64) -> Option<String> {
    let mut attempts = 0;
    while attempts < MAX_AUTH_ATTEMPTS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Each wait gets only what is left of the deadline.
        session.set_timeout(left);
        let Some(msg) = session.next_message() else {
            break; // timed out, or the client went away
        };
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

/// Polls (200 ms at most) until the client's channel close arrives, so
/// OpenSSH sees a clean end instead of "closed by remote host".
fn wait_for_close(live: &mut Live) {
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end && !live.inbound().closed && live.connected() {
        let left = end.saturating_duration_since(Instant::now()).as_millis() as i32;
        if live.poll(left.max(1)).is_err() {
            break;
        }
    }
}

/// What a turn decided.
enum Flow {
    /// Sleep until something arrives or the deadline passes.
    Wait(Option<Instant>),
    /// The session is over.
    End,
}

/// The session loop's state; see the module comment for who runs it.
struct Core {
    live: Live,
    router: Router,
    children: Vec<Option<ChildProc>>,
    rx: Receiver<(usize, ChildEvent)>,
    framer: Framer,
    frames: Vec<Frame>,
    /// Swapped with the inbound buffer so both keep their capacity.
    scratch: Vec<u8>,
    out: Outbox,
    eof: bool,
    /// Exit status for the client: 1 after a connection error.
    status: i32,
    /// Until when the session thread sleeps (None: until something arrives).
    sleep_until: Option<Instant>,
    /// A turn has ended the session; later turns only repeat that.
    done: bool,
    /// libssh holds output that waits for socket room (see `flush_pending`).
    write_pending: bool,
    /// A child's stdin backlog is full: the client's bytes stay in the socket.
    paused: bool,
    /// Who watches the socket; updated after each turn.
    watch: Arc<Watch>,
    /// What the outbox holds, for the children's reader threads.
    backlog: Arc<Backlog>,
    id: u64,
}

impl Core {
    /// Handles everything that has arrived: client bytes that libssh's
    /// callbacks collected, child messages queued on `rx`, expired deadlines;
    /// then writes what the client's window allows.
    fn turn(&mut self, shutdown: bool) -> Flow {
        if self.done {
            return Flow::End;
        }
        let flow = self.work(shutdown);
        self.done = matches!(flow, Flow::End);
        self.paused = self.children.iter().flatten().any(|c| c.stdin_full());
        self.watch
            .allow(!self.done && !self.write_pending && !self.paused);
        flow
    }

    /// A turn after the socket was readable: libssh reads it first.
    fn socket_turn(&mut self, shutdown: bool) -> Flow {
        if !self.done
            && let Err(e) = self.live.poll(0)
        {
            log::info!("s{}: connection error: {e}", self.id);
            self.status = 1;
            self.done = true;
            self.watch.allow(false);
            return Flow::End;
        }
        self.turn(shutdown)
    }

    /// Whether the session thread must run, after a turn on another thread:
    /// it sleeps until `sleep_until` and only waits for socket room if it knew
    /// of pending output, so wake it if this turn ended the session, set an
    /// earlier deadline or left output pending.
    fn needs_session_thread(&self, flow: &Flow) -> bool {
        match flow {
            Flow::End => true,
            Flow::Wait(d) => {
                self.write_pending || d.is_some_and(|d| self.sleep_until.is_none_or(|s| d < s))
            }
        }
    }

    fn work(&mut self, shutdown: bool) -> Flow {
        let id = self.id;
        // A write that waits for socket room lets libssh read the client too:
        // go round again while that brought something (bounded for fairness).
        for _ in 0..64 {
            let now = Instant::now();
            std::mem::swap(&mut self.scratch, &mut self.live.inbound().data);
            self.framer.push(&self.scratch, &mut self.frames);
            self.scratch.clear();
            if self.scratch.capacity() > 1 << 20 {
                self.scratch = Vec::new(); // do not keep a big message's buffer
            }
            for f in self.frames.drain(..) {
                let actions = match f {
                    Frame::Line(l) => self.router.from_client_line(&l, now),
                    Frame::TooLong => self.router.client_line_too_long(self.framer.max()),
                };
                apply(actions, &mut self.out, &self.children, id);
            }
            self.eof |= self.live.inbound().eof;
            while let Ok((idx, e)) = self.rx.try_recv() {
                let actions = match e {
                    ChildEvent::Message(m) => self.router.from_child_incoming(idx, m, now),
                    ChildEvent::BadLine(l) => {
                        if let Some(Some(c)) = self.children.get(idx) {
                            log::warn!(
                                "s{id}: [{}] wrote a non-JSON line to stdout: {}",
                                c.name,
                                truncate(&l, 200)
                            );
                        }
                        Vec::new()
                    }
                    ChildEvent::Closed => {
                        if let Some(Some(c)) = self.children.get(idx) {
                            log::warn!(
                                "s{id}: server {} exited; stderr: {}",
                                c.name,
                                c.stderr_tail()
                            );
                        }
                        self.router.child_closed(idx, now)
                    }
                };
                apply(actions, &mut self.out, &self.children, id);
            }
            if self.router.next_deadline().is_some_and(|d| d <= now) {
                let actions = self.router.tick(now);
                apply(actions, &mut self.out, &self.children, id);
            }
            if let Err(e) = self.out.flush(&mut self.live) {
                log::info!("s{id}: {e}");
                return Flow::End;
            }
            self.write_pending = self.live.flush_pending();
            self.backlog.set(self.out.pending());
            if self.live.inbound().data.is_empty() && self.rx.is_empty() {
                break;
            }
        }
        if !self.live.inbound().data.is_empty() || !self.rx.is_empty() {
            return Flow::Wait(Some(Instant::now())); // more to do: come back at once
        }
        let inb = self.live.inbound();
        if inb.closed || !self.live.connected() || shutdown {
            return Flow::End;
        }
        let next = self.router.next_deadline();
        // Client closed its input: finish what is in flight, then end.
        if self.eof && self.out.is_empty() && next.is_none() {
            return Flow::End;
        }
        Flow::Wait(next)
    }
}

/// Shared by the session thread and the children's reader threads; `None`
/// before the loop starts and after it ends.
type CoreCell = Arc<Mutex<Option<Core>>>;

/// Takes the mutex even if a turn panicked: the session loop then ends the
/// session (see `mcp_loop`) and still stops the children.
fn lock(cell: &CoreCell) -> MutexGuard<'_, Option<Core>> {
    cell.lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    /// Whether this thread has set libssh's (per-thread) log forwarding.
    static LIBSSH_LOGS: Cell<bool> = const { Cell::new(false) };
}

/// What a child's reader thread runs after queueing a message: deliver it
/// now if the session is idle, else leave it to the session thread.
fn notifier(cell: CoreCell, wake: Arc<Wake>, verbosity: i32) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        let mut guard = match cell.try_lock() {
            Ok(g) => g,
            Err(_) => return wake.wake(), // busy (or poisoned): its holder drains the queue
        };
        let Some(core) = guard.as_mut() else {
            return wake.wake();
        };
        reader_turn(core, false, verbosity, &wake);
    })
}

/// A turn on a child's reader thread (after the socket was readable, or
/// after queueing the child's output); wakes the session thread if it must
/// act. libssh's log forwarding is per thread: set it the first time.
fn reader_turn(core: &mut Core, socket: bool, verbosity: i32, wake: &Wake) {
    if !LIBSSH_LOGS.get() {
        super::sys::forward_logs(verbosity);
        LIBSSH_LOGS.set(true);
    }
    let flow = if socket {
        core.socket_turn(false)
    } else {
        core.turn(false)
    };
    if core.needs_session_thread(&flow) {
        wake.wake();
    }
}

/// Who watches the client's socket: the session thread, or (in the plain
/// state) the reader thread of one child while it waits for that child.
struct Watch {
    sock: RawFd,
    /// The watching reader's child index + 1; 0 while none watches.
    owner: AtomicUsize,
    /// Whether a reader may watch (the plain state, set after each turn).
    allowed: AtomicBool,
    /// Signalled when `allowed` turns false, to end a watcher's poll.
    evict: Wake,
    /// Held by a watcher while it polls, so the session thread can wait it
    /// out before the socket closes.
    polling: Mutex<()>,
    /// The session thread, woken when a watcher gives the socket back.
    wake: Arc<Wake>,
}

impl Watch {
    fn allow(&self, yes: bool) {
        if self.allowed.swap(yes, Ordering::AcqRel) && !yes {
            self.evict.wake();
        }
    }

    /// Whether the session thread may leave the socket to a reader.
    fn delegated(&self) -> bool {
        self.allowed.load(Ordering::Acquire) && self.owner.load(Ordering::Acquire) != 0
    }

    /// Makes `me` the watcher unless another reader is.
    fn claim(&self, me: usize) -> bool {
        self.owner.load(Ordering::Acquire) == me
            || self
                .owner
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Gives the socket back to the session thread if `me` watched it.
    fn release(&self, me: usize) {
        if self
            .owner
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.wake.wake();
        }
    }

    /// For good, before the socket closes: no reader watches from here on.
    fn end(&self) {
        self.allow(false);
        drop(self.polling.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The `idle` hook of child `index`'s reader thread: while it waits for its
/// child, it watches the socket too and handles what the client sends, if
/// the session is in its plain state and no other reader watches.
fn idle_hook(
    cell: CoreCell,
    watch: Arc<Watch>,
    index: usize,
    verbosity: i32,
) -> Arc<dyn Fn(Idle) + Send + Sync> {
    let me = index + 1;
    Arc::new(move |what| {
        let pipe = match what {
            Idle::Stop => return watch.release(me),
            Idle::Before(fd) => fd,
        };
        if !watch.allowed.load(Ordering::Acquire) {
            return watch.release(me);
        }
        if !watch.claim(me) {
            return; // another reader watches
        }
        let _polling = watch.polling.lock().unwrap_or_else(|p| p.into_inner());
        while watch.allowed.load(Ordering::Acquire) {
            let Ok([out, sock, evict]) = poll_readable([pipe, watch.sock, watch.evict.fd()], -1)
            else {
                break;
            };
            if evict {
                watch.evict.drain(); // the loop condition decides
            }
            if sock {
                let mut guard = lock(&cell);
                let Some(core) = guard.as_mut() else { break };
                reader_turn(core, true, verbosity, &watch.wake);
            }
            if out {
                return; // still the watcher: back after this read
            }
        }
        watch.release(me);
    })
}

fn mcp_loop(live: Live, shared: &Shared, servers: &[ServerSpec], wake: Arc<Wake>, id: u64) {
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, ChildEvent)>();
    let cell: CoreCell = Arc::new(Mutex::new(None));
    let notify = notifier(cell.clone(), wake.clone(), shared.libssh_verbosity);
    let watch = match Wake::new() {
        Ok(evict) => Arc::new(Watch {
            sock: live.fd(),
            owner: AtomicUsize::new(0),
            allowed: AtomicBool::new(false),
            evict,
            polling: Mutex::new(()),
            wake: wake.clone(),
        }),
        Err(e) => {
            log::error!("s{id}: cannot create an eventfd: {e}");
            return;
        }
    };
    let backlog = Backlog::new(BACKLOG_LIMIT);
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
    let mut children: Vec<Option<ChildProc>> = Vec::with_capacity(servers.len());
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
                    notify: notify.clone(),
                    idle: idle_hook(cell.clone(), watch.clone(), i, shared.libssh_verbosity),
                    backlog: backlog.clone(),
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
    drop((tx, notify));
    *lock(&cell) = Some(Core {
        live,
        router,
        children,
        rx,
        framer: Framer::new(shared.max_line),
        frames: Vec::new(),
        scratch: Vec::new(),
        out: Outbox::default(),
        eof: false,
        status: 0,
        sleep_until: None,
        done: false,
        write_pending: false,
        paused: false,
        watch: watch.clone(),
        backlog: backlog.clone(),
        id,
    });

    let mut socket_ready = true; // the first turn also handles early bytes
    loop {
        let (deadline, want_out, paused) = {
            let mut guard = lock(&cell);
            let Some(core) = guard.as_mut() else { break };
            if cell.is_poisoned() {
                log::error!("s{id}: session state is unusable after a panic; ending it");
                break;
            }
            let shutdown = shared.shutdown.load(Ordering::Relaxed);
            let flow = if socket_ready {
                core.socket_turn(shutdown)
            } else {
                core.turn(shutdown)
            };
            match flow {
                Flow::End => break,
                Flow::Wait(d) => {
                    core.sleep_until = d;
                    // A child's stdin backlog is full: leave the client's
                    // bytes in the socket (flow control holds it back) and
                    // watch only for its hang-up until the writer wakes us.
                    (d, core.write_pending, core.paused)
                }
            }
        };
        let timeout = match deadline {
            None => -1,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                None => 0,
                // Rounded up, so a deadline is never woken for just before.
                Some(left) => left.as_millis().min(i32::MAX as u128 - 1) as i32 + 1,
            },
        };
        let sock_events = if paused {
            libc::POLLRDHUP
        } else {
            libc::POLLIN
        } | if want_out { libc::POLLOUT } else { 0 };
        // A reader watches the socket: leave it out (-1 is skipped). If that
        // reader gives it back, it wakes this thread first.
        let sock = if watch.delegated() { -1 } else { watch.sock };
        match poll_events([(sock, sock_events), (wake.fd(), libc::POLLIN)], timeout) {
            Ok([s, w]) => {
                socket_ready = s;
                if w {
                    wake.drain();
                }
            }
            Err(e) => {
                log::error!("s{id}: poll failed: {e}");
                break;
            }
        }
    }
    // Readers waiting for room must see the end, or stop_all waits on them.
    backlog.close();
    let core = lock(&cell).take();
    // No turn runs from here on; a watching reader lets go of the socket.
    watch.end();
    let Some(mut core) = core else {
        return;
    };
    if core.live.connected() && !core.live.inbound().closed {
        core.live.finish(core.status);
        wait_for_close(&mut core.live);
    }
    let Core { live, children, .. } = core;
    drop(live);
    let mut children: Vec<ChildProc> = children.into_iter().flatten().collect();
    child::stop_all(&mut children);
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
            Action::ToClient(v) => out.push_json(&v),
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

    /// Serializes straight into the buffer (no line built and copied).
    fn push_json(&mut self, v: &serde_json::Value) {
        // Writing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, v);
        self.buf.push(b'\n');
    }

    fn is_empty(&self) -> bool {
        self.start >= self.buf.len()
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn flush(&mut self, live: &mut Live) -> Result<(), String> {
        while !self.is_empty() {
            let window = live.window() as usize;
            if window == 0 {
                break;
            }
            let end = (self.start + window.min(256 * 1024)).min(self.buf.len());
            let n = live
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

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch {
            sock: -1,
            owner: AtomicUsize::new(0),
            allowed: AtomicBool::new(true),
            evict: Wake::new().unwrap(),
            polling: Mutex::new(()),
            wake: Arc::new(Wake::new().unwrap()),
        }
    }

    fn readable(w: &Wake) -> bool {
        poll_readable([w.fd()], 0).unwrap()[0]
    }

    #[test]
    fn one_reader_watches_at_a_time_and_wakes_the_session_thread_when_it_lets_go() {
        let w = watch();
        assert!(!w.delegated());
        assert!(w.claim(1));
        assert!(w.claim(1), "the watcher keeps its claim across reads");
        assert!(!w.claim(2));
        assert!(w.delegated());
        w.release(2);
        assert!(!readable(&w.wake), "only the watcher can let go");
        assert!(w.delegated());
        w.release(1);
        assert!(
            readable(&w.wake),
            "the session thread must take the socket back"
        );
        assert!(!w.delegated());
        assert!(w.claim(2));
    }

    #[test]
    fn leaving_the_plain_state_evicts_the_watcher_once() {
        let w = watch();
        assert!(w.claim(1));
        w.allow(true);
        assert!(!readable(&w.evict));
        w.allow(false);
        assert!(readable(&w.evict));
        assert!(
            !w.delegated(),
            "the session thread watches while not allowed"
        );
        w.evict.drain();
        w.allow(false);
        assert!(!readable(&w.evict), "only the change to false signals");
        w.allow(true);
        assert!(w.delegated());
        w.end();
        assert!(!w.allowed.load(Ordering::Acquire));
    }
}
