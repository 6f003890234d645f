//! The MCP session of one SSH connection: the channel on one side, the
//! session's children on the other, the router in between, all owned by the
//! connection's thread. Child reader threads only frame and parse lines and
//! hand them over (a channel send and a wake-up); everything else happens
//! here, in one loop: poll the socket and the wake fd, let libssh read,
//! route client lines, route child messages, expire deadlines, write out.
//!
//! One `tools/call`, client to child and back:
//! 1. [`Bridge::run`] wakes: the socket is readable. [`Live::poll`] lets
//!    libssh decrypt it; the channel's data callback appends to `Inbound`.
//! 2. [`Bridge::turn`] frames the bytes ([`Framer::push`]) and gives each
//!    line to [`Router::from_client_line`], which maps the tool's exposed
//!    name to its child and returns `Action::ToChild` under a fresh id.
//! 3. [`Bridge::apply`] writes the line to the child's stdin
//!    ([`ChildProc::send`]).
//! 4. The child answers; its reader thread (`child::read_stdout`) frames and
//!    classifies the line, queues it on `rx` and wakes this thread.
//! 5. [`Bridge::run`] wakes on the wake fd; [`Bridge::turn`] drains `rx`
//!    into [`Router::from_child_incoming`], which puts the client's id back
//!    and returns the response as text (`Action::ToClientRaw`).
//! 6. [`Outbox::flush`] writes it to the channel as far as the client's
//!    window allows.

pub mod outbox;
pub mod select;

use crate::audit::{AuditLog, SessionAudit};
use crate::child::{self, Backlog, ChildEvent, ChildProc, Sink};
use crate::config::{Scope, ServerSpec};
use crate::eras::ChildEra;
use crate::mcp::framing::{Frame, Framer};
use crate::mcp::jsonrpc;
use crate::mcp::router::{Access, Action, ChildInfo, Options, Outcome, Record, Router};
use crate::os::{self, Wake};
use crate::pool::Pool;
use crate::relay::{Notify, ReaderTurn, Relay};
use crate::shared::{SharedLink, SharedServer};
use crate::ssh::conn::{self, Login, Startup};
use crate::ssh::sys::{Live, Session};
use crate::supervise::Backoff;
use crossbeam_channel::Receiver;
use outbox::Outbox;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What every MCP session shares.
pub struct Gateway {
    pub servers: Vec<ServerSpec>,
    pub pool: Arc<Pool>,
    pub max_line: usize,
    pub request_timeout: Duration,
    /// Longest a request may run in total, progress notwithstanding.
    pub max_total: Duration,
    /// `--audit-log`.
    pub audit: Option<Arc<AuditLog>>,
    /// The running `"scope": "shared"` servers, by name.
    pub shared: HashMap<String, Arc<SharedServer>>,
    /// Per session-scoped server: processes running in sessions, restarts.
    pub stats: HashMap<String, Arc<ScopeStats>>,
}

/// What `/health` reports of a session-scoped server.
#[derive(Default)]
pub struct ScopeStats {
    pub running: AtomicUsize,
    pub restarts: AtomicU64,
}

impl Gateway {
    /// Each configured server: scope, state, processes (in sessions or
    /// shared; warm spares apart), restarts; for `/health`.
    pub fn health(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .servers
            .iter()
            .map(|s| match (s.scope, self.shared.get(&s.name)) {
                (Scope::Shared { .. }, Some(sh)) => {
                    let st = sh.status();
                    json!({"name": s.name, "scope": "shared", "state": st.state,
                           "processes": st.processes, "restarts": st.restarts})
                }
                (Scope::Shared { .. }, None) => {
                    json!({"name": s.name, "scope": "shared", "state": "failed",
                           "processes": 0, "restarts": 0})
                }
                (Scope::Session, _) => {
                    let st = self.stats.get(&s.name);
                    let n = |f: fn(&ScopeStats) -> u64| st.map_or(0, |st| f(st));
                    json!({"name": s.name, "scope": "session", "state": "ready",
                           "processes": n(|s| s.running.load(Ordering::Relaxed) as u64),
                           "spares": self.pool.spares(&s.name),
                           "restarts": n(|s| s.restarts.load(Ordering::Relaxed))})
                }
            })
            .collect();
        serde_json::Value::Array(list)
    }
}

/// A session's connection to one configured server: a process of its own,
/// or its link to a shared server. Both take the router's messages and
/// answer on the session's event queue.
enum Endpoint {
    Own(ChildProc, Counted),
    Shared(SharedLink),
}

/// One running process in a [`ScopeStats`], counted until dropped.
struct Counted(Option<Arc<ScopeStats>>);

impl Counted {
    fn new(stats: Option<&Arc<ScopeStats>>) -> Counted {
        if let Some(s) = stats {
            s.running.fetch_add(1, Ordering::Relaxed);
        }
        Counted(stats.cloned())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.running.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Endpoint {
    fn name(&self) -> &str {
        match self {
            Endpoint::Own(c, _) => &c.name,
            Endpoint::Shared(l) => l.server().name(),
        }
    }

    fn send(&self, msg: serde_json::Value) {
        match self {
            Endpoint::Own(c, _) => c.send(jsonrpc::to_line(&msg)),
            Endpoint::Shared(l) => l.send(msg),
        }
    }

    /// Its stdin holds more than the limit (shared servers: the mux's queue
    /// is not counted per session).
    fn stdin_full(&self) -> bool {
        matches!(self, Endpoint::Own(c, _) if c.stdin_full())
    }

    fn stderr_tail(&self) -> String {
        match self {
            Endpoint::Own(c, _) => c.stderr_tail(),
            Endpoint::Shared(l) => l.server().stderr_tail(),
        }
    }
}

/// One accepted connection, as the listener hands it over.
pub struct Conn {
    /// Tags log lines (`s42`).
    pub id: u64,
    pub peer: std::net::SocketAddr,
    /// Woken by the children's reader threads and by the listener at shutdown.
    pub wake: Arc<Wake>,
    pub startup: Startup,
}

/// How often an open session checks that its key is still trusted (a
/// stat of the trust files; they are re-read only when they changed).
const TRUST_CHECK: Duration = Duration::from_secs(2);

/// Output a session holds for a slow client before its children are held
/// back. Readers wait between lines, so a longer message still goes through.
const BACKLOG_LIMIT: usize = 4 << 20;

/// Serves one connection to its end, on the calling thread.
pub fn serve(session: Session, login: &Login, gw: &Gateway, conn: Conn, shutdown: &AtomicBool) {
    let id = conn.id;
    crate::ssh::sys::forward_logs(login.libssh_verbosity);
    let Some(est) = conn::establish(session, login, id, conn.peer.ip(), conn.startup) else {
        return;
    };
    let mut live = est.live;
    let grant = est.grant;
    let audit = gw.audit.as_ref().map(|log| {
        let key = est.key.fingerprint();
        let cert = est.key.cert();
        let who = conn::who(conn.peer.ip(), &est.user, &key, Some(grant.comment()), cert);
        SessionAudit::new(log.clone(), id, who)
    });
    let servers = match select::servers(&gw.servers, &est.start, |s| grant.allows_server(s)) {
        Ok(s) => s,
        Err(msg) => {
            if let Some(a) = &audit {
                a.event("session_refused", &json!({"reason": msg.trim_end()}));
            }
            live.write_stderr(msg.as_bytes());
            conn::close_channel(&mut live, 1);
            return;
        }
    };
    if let Some(a) = &audit {
        let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
        a.event("session_start", &json!({ "servers": names }));
    }
    log::info!(
        "s{id}: user {:?} from {} authenticated; serving {} MCP server(s)",
        est.user,
        conn.peer.ip(),
        servers.len()
    );
    let recheck = conn::Recheck::new(
        login,
        est.user,
        est.key,
        est.source,
        grant.clone(),
        conn.peer.ip(),
    );
    let access = Access {
        tools: Some(Box::new({
            let g = grant.clone();
            move |name: &str| g.allows_tool(name)
        })),
        prompts: Some(Box::new(move |name: &str| grant.allows_prompt(name))),
    };
    let trusted = || recheck.check();
    let started = Instant::now();
    let relay = Relay::new(conn.wake.clone());
    let notify: Notify = {
        // Weak: the readers must not keep the session alive (see `run`).
        let relay = Arc::downgrade(&relay);
        let wake = conn.wake.clone();
        Arc::new(move || match relay.upgrade() {
            Some(r) => r.nudge(),
            None => wake.wake(),
        })
    };
    let mut bridge = Bridge::start(live, gw, &servers, access, conn.wake, notify, id);
    bridge.audit = audit;
    bridge.libssh_verbosity = login.libssh_verbosity;
    relay.put(bridge);
    run(&relay, shutdown, &trusted, started);
    log::info!("s{id}: session ended");
}

/// A child to stop and reap: one that went down, or one left out (with the
/// log line saying why, written once it is stopped, so that the line has
/// all the child wrote to stderr).
type Grave = (ChildProc, Counted, Option<String>);

/// Stops and reaps children that went down or were left out (on the session
/// thread only, and without the relay lock: a reader may be the child's own).
fn bury(dead: Vec<Grave>) {
    for (c, counted, left_out) in dead {
        let (name, pid) = (c.name.clone(), c.pid());
        let (how, stderr) = child::stop_one(c);
        match left_out {
            Some(line) => log::error!("{line}; stderr: {stderr}"),
            None => log::info!("server {name} (pid {pid}) reaped: {how}"),
        }
        drop(counted);
    }
}

/// Takes the session out of its relay when the session thread leaves `run`
/// by any path, a panic included: the session (its connection, its
/// children) then ends on this thread, and no reader turn can run on it.
struct TakeOnExit<'a>(&'a Relay<Bridge>);

impl Drop for TakeOnExit<'_> {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

/// The session loop: one poll over the socket and the wake fd, then a
/// turn, until the client or the server ends the session. Between turns
/// the session thread sleeps without the lock, so a child's reader may run
/// a turn itself ([`Relay`]). Every [`TRUST_CHECK`] the key must still be
/// trusted (`trusted`), or the session ends with a line to the client.
fn run(
    relay: &Relay<Bridge>,
    shutdown: &AtomicBool,
    trusted: &dyn Fn() -> Result<(), String>,
    started: Instant,
) {
    let _exit = TakeOnExit(relay);
    let mut socket_ready = true; // the first turn also handles early bytes
    let mut next_check = Instant::now() + TRUST_CHECK;
    let mut dead: Vec<Grave> = Vec::new();
    loop {
        bury(std::mem::take(&mut dead));
        let (fds, timeout) = {
            let (mut guard, panicked) = relay.lock();
            let Some(b) = guard.as_mut() else { break };
            if panicked {
                log::error!(
                    "s{}: a turn panicked on another thread; ending the session",
                    b.id
                );
                break;
            }
            if b.done {
                break;
            }
            if socket_ready && let Err(e) = b.live.poll(0) {
                log::info!("s{}: {e}", b.id);
                b.status = 1;
                break;
            }
            let flow = b.turn(shutdown.load(Ordering::Relaxed), true);
            // Reaped below, without the lock: a reap can take the grace
            // period, and readers must be able to run turns meanwhile.
            dead = std::mem::take(&mut b.graveyard);
            let deadline = match flow {
                Flow::End => break,
                Flow::Wait(d) => d,
            };
            if Instant::now() >= next_check {
                if let Err(why) = trusted() {
                    log::warn!(
                        "s{}: ending the session, its key lost its trust: {why}",
                        b.id
                    );
                    let line =
                        format!("the server no longer trusts this key ({why}); session ended\n");
                    b.live.write_stderr(line.as_bytes());
                    b.status = 1;
                    break;
                }
                next_check = Instant::now() + TRUST_CHECK;
            }
            let deadline = deadline.map_or(next_check, |d| d.min(next_check));
            b.sleep_until = Some(deadline);
            // A child's stdin backlog is full: leave the client's bytes in
            // the socket (flow control holds it back) and watch only for its
            // hang-up until the writer thread wakes us.
            let mut events = if b.paused {
                libc::POLLRDHUP
            } else {
                libc::POLLIN
            };
            if b.write_pending {
                events |= libc::POLLOUT;
            }
            let fds = [(b.live.fd(), events), (b.wake.fd(), libc::POLLIN)];
            (fds, os::poll_timeout(Some(deadline)))
        };
        match os::poll_events(fds, timeout) {
            Ok([sock, woken]) => {
                socket_ready = sock;
                if woken {
                    relay.wake().drain();
                }
            }
            Err(e) => {
                log::error!("poll failed: {e}");
                break;
            }
        }
    }
    bury(dead);
    let Some(mut b) = relay.take() else { return };
    b.finish();
    if let Some(a) = &b.audit {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        a.event(
            "session_end",
            &json!({ "duration_ms": ms, "status": b.status }),
        );
    }
}

impl ReaderTurn for Bridge {
    fn reader_turn(&mut self) -> bool {
        if self.done {
            return true;
        }
        // libssh's log forwarding is per thread.
        thread_local! {
            static LIBSSH_LOGS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        if !LIBSSH_LOGS.get() {
            crate::ssh::sys::forward_logs(self.libssh_verbosity);
            LIBSSH_LOGS.set(true);
        }
        match self.turn(false, false) {
            Flow::End => {
                self.done = true;
                true
            }
            Flow::Wait(d) => {
                self.write_pending
                    || self.paused
                    || !self.graveyard.is_empty()
                    || d.is_some_and(|d| self.sleep_until.is_none_or(|s| d < s))
            }
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

/// The MCP session's state, owned by the connection's thread.
struct Bridge {
    live: Live,
    router: Router,
    /// By config index; None for a server that failed to start.
    children: Vec<Option<Endpoint>>,
    rx: Receiver<(usize, ChildEvent)>,
    wake: Arc<Wake>,
    framer: Framer,
    frames: Vec<Frame>,
    /// Swapped with the inbound buffer so both keep their capacity.
    scratch: Vec<u8>,
    out: Outbox,
    /// What the outbox holds, for the children's reader threads.
    backlog: Arc<Backlog>,
    /// The client closed its input: finish what is in flight, then end.
    eof: bool,
    /// Exit status for the client: 1 after a connection error.
    status: i32,
    /// libssh holds output that waits for socket room (see `flush_pending`).
    write_pending: bool,
    /// A child's stdin backlog is full: the client's bytes stay in the socket.
    paused: bool,
    /// Where this session's records go (`--audit-log`).
    audit: Option<SessionAudit>,
    /// Per config index: how to restart an own child that goes down.
    supervision: Vec<Supervision>,
    /// What a child's reader calls after queueing (the relay's nudge).
    notify: Notify,
    /// Children that went down, for the session thread to reap.
    graveyard: Vec<Grave>,
    /// A turn ended the session (maybe on a reader thread).
    done: bool,
    /// Until when the session thread sleeps, for a reader's turn to tell
    /// whether it moved a deadline earlier.
    sleep_until: Option<Instant>,
    libssh_verbosity: i32,
    id: u64,
}

/// Restarting one own child of a session.
struct Supervision {
    spec: ServerSpec,
    pool: Arc<Pool>,
    tx: crossbeam_channel::Sender<(usize, ChildEvent)>,
    stats: Option<Arc<ScopeStats>>,
    backoff: Backoff,
    /// When the running process started (for the backoff's health rule).
    started: Option<Instant>,
    restart_at: Option<Instant>,
    /// A replaced child's `Closed` is still to come and must be ignored.
    stale_closed: bool,
}

impl Bridge {
    /// Takes a warm spare or starts each server, and attaches it.
    fn start(
        live: Live,
        gw: &Gateway,
        servers: &[ServerSpec],
        access: Access,
        wake: Arc<Wake>,
        notify: Notify,
        id: u64,
    ) -> Bridge {
        let (tx, rx) = crossbeam_channel::unbounded();
        let backlog = Backlog::new(BACKLOG_LIMIT);
        let infos = servers
            .iter()
            .map(|s| ChildInfo {
                name: s.name.clone(),
                timeout: s.request_timeout.unwrap_or(gw.request_timeout),
                prefix: s.name_prefix.clone(),
                tools: s.tools.clone(),
                prompts: s.prompts.clone(),
            })
            .collect();
        let mut router = Router::new(
            infos,
            Options {
                max_total: gw.max_total,
                server_name: "m2m-mcp-server-ssh-server".into(),
                server_version: env!("CARGO_PKG_VERSION").into(),
                audit: gw.audit.is_some(),
            },
            access,
        );
        let mut children = Vec::with_capacity(servers.len());
        for (index, spec) in servers.iter().enumerate() {
            if spec.scope != Scope::Session {
                // Its era, as its mux found it (waited for, bounded, only
                // before the first process told it).
                let link = gw.shared.get(&spec.name).and_then(|s| match s.era() {
                    Ok(era) => {
                        if let ChildEra::Modern(discover) = &era {
                            router.child_modern(index, discover);
                        }
                        Some(Endpoint::Shared(s.attach(
                            id,
                            index,
                            tx.clone(),
                            notify.clone(),
                        )))
                    }
                    Err(e) => {
                        log::error!("s{id}: {e}");
                        None
                    }
                });
                if link.is_none() {
                    router.child_unavailable(index);
                }
                children.push(link);
                continue;
            }
            let started = match gw.pool.take(&spec.name) {
                Some(c) => Ok(c),
                None => ChildProc::spawn(spec, gw.max_line),
            };
            let started = started.map_err(|e| e.to_string()).and_then(|mut c| {
                let era = gw
                    .pool
                    .era(spec, &mut c)
                    .map_err(|e| format!("[{}] {e}", spec.name))?;
                Ok((c, era))
            });
            match started {
                Ok((mut c, era)) => {
                    if let ChildEra::Modern(discover) = &era {
                        router.child_modern(index, discover);
                    }
                    c.attach(Sink {
                        index,
                        tx: tx.clone(),
                        wake: wake.clone(),
                        notify: notify.clone(),
                        backlog: backlog.clone(),
                    });
                    log::debug!("s{id}: started {} (pid {})", spec.name, c.pid());
                    let counted = Counted::new(gw.stats.get(&spec.name));
                    children.push(Some(Endpoint::Own(c, counted)));
                }
                Err(e) => {
                    log::error!("s{id}: {e}; left out");
                    router.child_unavailable(index);
                    children.push(None);
                }
            }
        }
        let now = Instant::now();
        let supervision = servers
            .iter()
            .map(|spec| Supervision {
                spec: spec.clone(),
                pool: gw.pool.clone(),
                tx: tx.clone(),
                stats: gw.stats.get(&spec.name).cloned(),
                backoff: Backoff::new(),
                started: Some(now),
                restart_at: None,
                stale_closed: false,
            })
            .collect();
        Bridge {
            live,
            router,
            children,
            rx,
            supervision,
            notify,
            graveyard: Vec::new(),
            done: false,
            sleep_until: None,
            libssh_verbosity: 1,
            wake,
            framer: Framer::new(gw.max_line),
            frames: Vec::new(),
            scratch: Vec::new(),
            out: Outbox::default(),
            backlog,
            eof: false,
            status: 0,
            write_pending: false,
            paused: false,
            audit: None,
            id,
        }
    }

    /// Handles everything that has arrived: client bytes that libssh's
    /// callbacks collected, child messages queued on `rx`, expired
    /// deadlines; then writes what the client's window allows. Children due
    /// for a restart are started only on the session's own thread
    /// (`own_thread`): a start may probe for seconds, and a turn on another
    /// thread may be nested in a shared server's turn, which would stall
    /// every session of that server meanwhile (the due time is in the
    /// returned deadline, so the session thread wakes for it).
    fn turn(&mut self, shutdown: bool, own_thread: bool) -> Flow {
        // A write that waits for socket room lets libssh read the client too:
        // go round again while that brought something (bounded for fairness).
        for _ in 0..64 {
            let now = Instant::now();
            if own_thread {
                self.restart_due(now);
            }
            self.client_bytes(now);
            self.child_events(now);
            if self.router.next_deadline().is_some_and(|d| d <= now) {
                let actions = self.router.tick(now);
                self.apply(actions);
            }
            if let Err(e) = self.out.flush(&mut self.live) {
                log::info!("s{}: {e}", self.id);
                return Flow::End;
            }
            self.write_pending = self.live.flush_pending();
            self.backlog.set(self.out.pending());
            if self.live.inbound().data.is_empty() && self.rx.is_empty() {
                break;
            }
        }
        self.paused = self.children.iter().flatten().any(|c| c.stdin_full());
        if !self.live.inbound().data.is_empty() || !self.rx.is_empty() {
            return Flow::Wait(Some(Instant::now())); // more to do: come back at once
        }
        let inbound = self.live.inbound();
        if inbound.closed || !self.live.connected() || shutdown {
            return Flow::End;
        }
        let next = self.router.next_deadline();
        if self.eof && self.out.is_empty() && next.is_none() {
            return Flow::End;
        }
        Flow::Wait(match (next, self.next_restart()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Frames what the client sent and routes each line.
    fn client_bytes(&mut self, now: Instant) {
        std::mem::swap(&mut self.scratch, &mut self.live.inbound().data);
        self.framer.push(&self.scratch, &mut self.frames);
        self.scratch.clear();
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::new(); // do not keep a big message's buffer
        }
        self.eof |= self.live.inbound().eof;
        let frames = std::mem::take(&mut self.frames);
        for frame in &frames {
            let actions = match frame {
                Frame::Line(line) => {
                    fault::check(line);
                    self.router.from_client_line(line, now)
                }
                Frame::TooLong => self.router.client_line_too_long(self.framer.max()),
            };
            self.apply(actions);
        }
        self.frames = frames;
        self.frames.clear();
    }

    /// Routes what the children's reader threads queued.
    fn child_events(&mut self, now: Instant) {
        while let Ok((index, event)) = self.rx.try_recv() {
            // The last word of a child replaced while it still ran: not
            // about the process now in its slot.
            if matches!(event, ChildEvent::Closed)
                && let Some(sup) = self.supervision.get_mut(index)
                && std::mem::take(&mut sup.stale_closed)
            {
                continue;
            }
            let name = match self.children.get(index) {
                Some(Some(c)) => c.name(),
                _ => continue,
            };
            let actions = match event {
                ChildEvent::Message(m) => self.router.from_child_incoming(index, m, now),
                ChildEvent::BadLine(l) => {
                    log::warn!(
                        "s{}: [{name}] wrote a non-JSON line to stdout: {}",
                        self.id,
                        truncate(&l, 200)
                    );
                    continue;
                }
                ChildEvent::Closed => {
                    log::warn!(
                        "s{}: server {name} exited; stderr: {}",
                        self.id,
                        self.children[index]
                            .as_ref()
                            .map_or(String::new(), |c| c.stderr_tail())
                    );
                    let actions = self.router.child_closed(index, now);
                    self.apply(actions);
                    self.went_down(index, now, false);
                    continue;
                }
            };
            self.apply(actions);
        }
    }

    /// Own child `index` exited or hung: stop and reap it, and schedule
    /// its restart by the backoff rule (`supervise`). Its requests in
    /// flight have failed already.
    fn went_down(&mut self, index: usize, now: Instant, still_running: bool) {
        if !matches!(self.children.get(index), Some(Some(Endpoint::Own(..)))) {
            return; // a shared server is supervised by its mux
        }
        let Some(Some(Endpoint::Own(c, counted))) = self.children.get_mut(index).map(Option::take)
        else {
            return;
        };
        let sup = &mut self.supervision[index];
        // Its reader still has to report the end: that report is stale.
        sup.stale_closed = still_running;
        let delay = sup.backoff.exited(now, sup.started);
        sup.restart_at = Some(now + delay);
        log::warn!(
            "s{}: server {} (pid {}) will be restarted in {} s{}",
            self.id,
            c.name,
            c.pid(),
            delay.as_secs_f64(),
            if sup.backoff.failed {
                "; it keeps failing"
            } else {
                ""
            }
        );
        // Stopped and reaped by the session thread (`bury`): this turn may
        // run on a reader thread, maybe this very child's.
        self.graveyard.push((c, counted, None));
    }

    /// Stops and reaps the children that went down.
    fn bury(&mut self) {
        bury(std::mem::take(&mut self.graveyard));
    }

    /// Starts again the own children whose restart time has come.
    fn restart_due(&mut self, now: Instant) {
        for index in 0..self.supervision.len() {
            if self.supervision[index].restart_at.is_none_or(|t| t > now) {
                continue;
            }
            let sup = &mut self.supervision[index];
            sup.restart_at = None;
            let spec = &sup.spec;
            let started = match sup.pool.take(&spec.name) {
                Some(c) => Ok(c),
                None => ChildProc::spawn(spec, self.framer.max()),
            };
            // The era was found before; a probe runs only if it was not.
            let started = started
                .map_err(|e| e.to_string())
                .and_then(|mut c| sup.pool.era(spec, &mut c).map(|_| c));
            match started {
                Ok(mut c) => {
                    c.attach(Sink {
                        index,
                        tx: sup.tx.clone(),
                        wake: self.wake.clone(),
                        notify: self.notify.clone(),
                        backlog: self.backlog.clone(),
                    });
                    log::info!(
                        "s{}: server {} restarted (pid {})",
                        self.id,
                        spec.name,
                        c.pid()
                    );
                    sup.started = Some(now);
                    if let Some(st) = &sup.stats {
                        st.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    let counted = Counted::new(sup.stats.as_ref());
                    self.children[index] = Some(Endpoint::Own(c, counted));
                    let actions = self.router.child_restarted(index, now);
                    self.apply(actions);
                }
                Err(e) => {
                    log::error!("s{}: {e}", self.id);
                    let delay = sup.backoff.exited(now, None);
                    sup.restart_at = Some(now + delay);
                }
            }
        }
    }

    /// The next restart of an own child, if one is due.
    fn next_restart(&self) -> Option<Instant> {
        self.supervision.iter().filter_map(|s| s.restart_at).min()
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::ToClient(v) => self.out.push_json(&v),
                Action::ToClientRaw(line) => self.out.push_owned(line),
                Action::ToChild(i, v) => {
                    if let Some(Some(c)) = self.children.get(i) {
                        c.send(v);
                    }
                }
                Action::Audit(r) => {
                    if let Some(a) = &self.audit {
                        a.event("request", &record_fields(&r));
                    }
                }
                Action::ChildHung(i) => {
                    if !matches!(self.children.get(i), Some(Some(Endpoint::Own(..)))) {
                        continue; // a shared server's mux counts its own
                    }
                    log::warn!(
                        "s{}: server {} left three requests in a row unanswered past their timeout; replacing it",
                        self.id,
                        self.children
                            .get(i)
                            .and_then(Option::as_ref)
                            .map_or("?", |c| c.name())
                    );
                    let actions = self.router.child_closed(i, Instant::now());
                    self.apply(actions);
                    self.went_down(i, Instant::now(), true);
                }
                Action::ChildFailed(i, why) => {
                    match self.children.get_mut(i).map(Option::take) {
                        // Stopped on the session thread; logged then (`bury`).
                        Some(Some(Endpoint::Own(c, counted))) => {
                            let line = format!("s{}: server {} left out: {why}", self.id, c.name);
                            self.graveyard.push((c, counted, Some(line)))
                        }
                        Some(Some(shared)) => {
                            log::error!("s{}: server {} left out: {why}", self.id, shared.name());
                            self.children[i] = Some(shared);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The orderly end: tell the client, then stop the children together.
    fn finish(&mut self) {
        self.bury();
        self.backlog.close();
        conn::close_channel(&mut self.live, self.status);
        let (mut own, mut counted) = (Vec::new(), Vec::new());
        for c in std::mem::take(&mut self.children).into_iter().flatten() {
            // A shared link detaches as it drops.
            if let Endpoint::Own(c, n) = c {
                own.push(c);
                counted.push(n);
            }
        }
        child::stop_all(own);
        drop(counted);
    }
}

impl Drop for Bridge {
    /// Runs on every end, a panic's unwinding included: readers waiting for
    /// output room must see the end before the children (dropped after
    /// this, each stopped and reaped by its own Drop) join them.
    fn drop(&mut self) {
        self.backlog.close();
    }
}

/// A request's audit fields, in this order: a struct, not a map, so a
/// record per call costs a few hundred instructions.
#[derive(serde::Serialize)]
struct RequestFields<'a> {
    server: Option<&'a str>,
    method: &'a str,
    duration_ms: f64,
    outcome: &'a str,
    bytes_in: usize,
    bytes_out: usize,
    /// The tool or prompt (null if the request named none); absent for a
    /// read, which has `uri`.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uri: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i64>,
}

fn record_fields(r: &Record) -> RequestFields<'_> {
    let target = Some(r.target.as_deref());
    let read = r.method == "resources/read";
    RequestFields {
        server: r.server.as_deref(),
        method: &r.method,
        duration_ms: r.duration.as_secs_f64() * 1000.0,
        outcome: r.outcome.as_str(),
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        name: if read { None } else { target },
        uri: if read { target } else { None },
        code: match r.outcome {
            Outcome::Error(code) => Some(code),
            _ => None,
        },
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Test-only fault injection (debug builds only): a client line that
/// contains the text of `M2M_TEST_PANIC_ON` makes its session panic, so the
/// end-to-end tests can prove a bug in one session ends only that session.
mod fault {
    #[cfg(debug_assertions)]
    pub fn check(line: &[u8]) {
        static TRIGGER: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
        let trigger = TRIGGER.get_or_init(|| {
            std::env::var_os("M2M_TEST_PANIC_ON")
                .filter(|v| !v.is_empty())
                .map(std::os::unix::ffi::OsStringExt::into_vec)
        });
        if let Some(t) = trigger
            && memchr::memmem::find(line, t).is_some()
        {
            panic!("fault injection: the client sent the M2M_TEST_PANIC_ON text");
        }
    }

    #[cfg(not(debug_assertions))]
    #[inline(always)]
    pub fn check(_line: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn request_fields_name_the_target_by_method_and_the_code_of_an_error() {
        let rec = |method: &str, target: Option<&str>, outcome| Record {
            method: method.into(),
            server: Some("a".into()),
            target: target.map(Into::into),
            duration: Duration::from_micros(1500),
            outcome,
            bytes_in: 10,
            bytes_out: 20,
        };
        let text = |r: &Record| serde_json::to_string(&record_fields(r)).unwrap();
        assert_eq!(
            text(&rec("tools/call", Some("t"), Outcome::Ok)),
            r#"{"server":"a","method":"tools/call","duration_ms":1.5,"outcome":"ok","bytes_in":10,"bytes_out":20,"name":"t"}"#
        );
        let read = text(&rec(
            "resources/read",
            Some("u://x"),
            Outcome::Error(-32602),
        ));
        assert!(read.ends_with(r#""uri":"u://x","code":-32602}"#), "{read}");
        let unnamed = text(&rec("tools/call", None, Outcome::Denied));
        assert!(unnamed.ends_with(r#""name":null}"#), "{unnamed}");
    }
}
