//! The mux: one thread per shared server that starts its processes,
//! finds their era, and keeps the sessions' requests, answers, listens and
//! subscriptions apart (see the parent module). What comes from the
//! sessions, and what goes back to them, is routed in [`routing`].
//!
//! The mux's state sits in a [`Relay`]: a session that queues a line, or a
//! process's reader that queues an answer, runs the mux's turn itself when
//! the mux is idle, so a call reaches its process, and its answer its
//! session, without waking the mux's thread (each such wake-up cost about
//! 15 us here). The mux's thread keeps what may block or must happen on
//! time: starting processes, stopping and reaping the ones that went down
//! (a turn only puts them in the graveyard: a reader must never reap its
//! own process), and the timers.

mod routing;
use routing::{Pins, input_state};

use super::{Cmd, EraCell, Link, Status};
use crate::child::{Backlog, ChildEvent, ChildProc, Sink};
use crate::config::{Protocol, ServerSpec};
use crate::eras::{self, ChildEra, Verdict};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::{self, Incoming};
use crate::mcp::router::SUBSCRIPTION_ID;
use crate::os::{self, Wake};
use crate::relay::{Nested, ReaderTurn, Relay};
use crate::supervise::{BACKOFF_MAX, Backoff, CRASH_LIMIT, CRASH_WINDOW, HUNG_AFTER};
use crossbeam_channel::{Receiver, Sender};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Past its deadline by this much, a call no session cancelled (its session
/// ended first) is failed and counted here: the sessions' routers cancel
/// theirs at the deadline.
const OVERDUE_SLACK: Duration = Duration::from_secs(1);

/// A session's call in flight on a process.
struct Call {
    session: u64,
    id: Value,
    proc_: usize,
    /// The mux's progress token, when the call carried one.
    token: Option<String>,
    /// When the call counts as overdue; progress moves it on.
    deadline: Instant,
}

/// A session's `subscriptions/listen` on a modern process, open until the
/// session cancels it or the process answers it.
struct Listen {
    session: u64,
    id: Value,
    proc_: usize,
    /// The request as sent (under the mux id), sent again after a restart.
    msg: Value,
}

/// A process's request to a client, under the mux id the session sees.
struct Ask {
    proc_: usize,
    id: Value,
    session: u64,
}

enum State {
    /// Waiting for its `server/discover` answer (that request's mux id), since.
    Probing(u64, Instant),
    /// Waiting for its `initialize` answer (that request's mux id), since.
    Starting(u64, Instant),
    Ready {
        since: Instant,
    },
    /// Not running; started again at this time.
    Down(Instant),
    /// Not running and not started again: the server is left out.
    Out,
}

struct Proc {
    child: Option<ChildProc>,
    state: State,
    inflight: usize,
    /// Calls in a row that ran past their timeout.
    overdue: u32,
    /// The previous process's `Closed` is still to come (see `went_down`).
    stale_closed: bool,
}

pub(super) struct Mux {
    spec: ServerSpec,
    timeout: Duration,
    max_line: usize,
    procs: Vec<Proc>,
    events_tx: Sender<(usize, ChildEvent)>,
    events_rx: Receiver<(usize, ChildEvent)>,
    /// The mux thread's wake-up (also its relay's), for the processes'
    /// readers' sinks.
    wake: Arc<Wake>,
    /// The readers' output room: unbounded, since the mux's queue is drained
    /// by whoever runs its turn, not held back by one client.
    backlog: Arc<Backlog>,
    /// What sessions (and the gateway) tell the mux (see [`Mux::new`]'s sender).
    cmds: Receiver<Cmd>,
    /// The relay this state lives in, for the processes' readers to nudge.
    me: Weak<Relay<Mux>>,
    /// Processes that went down, for the mux's thread to stop and reap.
    graveyard: Vec<Grave>,
    /// Until when the mux's thread sleeps (None: until woken), for a turn
    /// on another thread to tell whether a timer moved earlier.
    sleep_until: Option<Instant>,
    /// `Stop` came (or every sender is gone): the mux's thread ends.
    stopping: bool,
    sessions: HashMap<u64, Link>,
    next: u64,
    calls: HashMap<u64, Call>,
    /// Mux progress token -> (session, the session's own token).
    tokens: HashMap<String, (u64, Value)>,
    asks: HashMap<u64, Ask>,
    /// URI -> sessions subscribed to it.
    subs: HashMap<String, HashSet<u64>>,
    /// URI -> the process that holds its subscription.
    holder: HashMap<String, usize>,
    /// Ids of the mux's own requests whose answers are dropped.
    internal: HashSet<u64>,
    /// The first process's `initialize` result, answered to every session.
    init: Option<Value>,
    /// The server's era once known (kept across restarts), and where the
    /// sessions read it.
    era: Option<ChildEra>,
    pub(super) cell: Arc<EraCell>,
    /// A process has served before: one that becomes ready now is back.
    served: bool,
    /// Mux listen id -> the session's listen.
    listens: HashMap<u64, Listen>,
    /// Where each session's `input_required` retries go.
    pins: Pins,
    /// Lines of sessions that arrived before any process was ready.
    waiting: VecDeque<(u64, Value)>,
    backoff: Backoff,
    restarts: u64,
    status: Arc<Mutex<Status>>,
    stderr: Arc<Mutex<String>>,
}

impl Mux {
    pub(super) fn new(
        spec: ServerSpec,
        processes: usize,
        timeout: Duration,
        max_line: usize,
        wake: Arc<Wake>,
        status: Arc<Mutex<Status>>,
        stderr: Arc<Mutex<String>>,
    ) -> (Mux, Sender<Cmd>) {
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (tx, cmds) = crossbeam_channel::unbounded();
        let now = Instant::now();
        let era = (spec.protocol == Protocol::Legacy).then_some(ChildEra::Legacy);
        let cell = Arc::new(EraCell::default());
        if let Some(e) = &era {
            cell.set(Ok(e.clone()));
        }
        let mux = Mux {
            spec,
            timeout,
            max_line,
            procs: (0..processes)
                .map(|_| Proc {
                    child: None,
                    state: State::Down(now),
                    inflight: 0,
                    overdue: 0,
                    stale_closed: false,
                })
                .collect(),
            events_tx,
            events_rx,
            wake,
            backlog: Backlog::new(usize::MAX),
            cmds,
            me: Weak::new(),
            graveyard: Vec::new(),
            sleep_until: None,
            stopping: false,
            sessions: HashMap::new(),
            next: 0,
            calls: HashMap::new(),
            tokens: HashMap::new(),
            asks: HashMap::new(),
            subs: HashMap::new(),
            holder: HashMap::new(),
            internal: HashSet::new(),
            init: None,
            era,
            cell,
            served: false,
            listens: HashMap::new(),
            pins: Pins::default(),
            waiting: VecDeque::new(),
            backoff: Backoff::new(),
            restarts: 0,
            status,
            stderr,
        };
        (mux, tx)
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Puts the state in its relay; `me` lets the processes' readers nudge it.
    pub(super) fn into_relay(mut self) -> Arc<Relay<Mux>> {
        let relay = Relay::new(self.wake.clone());
        self.me = Arc::downgrade(&relay);
        relay.put(self);
        relay
    }

    /// The mux's thread: a turn of its own, then what only it does (timers,
    /// burials, starts), then sleep until woken or the next timer.
    pub(super) fn run(relay: Arc<Relay<Mux>>) {
        let _end = EndOnExit(&relay);
        loop {
            // Its turns hand responses to sessions' turns, as a reader's do.
            let _level = Nested::enter();
            let (mut g, panicked) = relay.lock();
            let Some(m) = g.as_mut() else { return };
            if panicked {
                break; // the server fails (EndOnExit)
            }
            m.drain();
            if m.stopping {
                break;
            }
            m.check_overdue();
            let graves = std::mem::take(&mut m.graveyard);
            if !graves.is_empty() {
                let name = m.spec.name.clone();
                drop(g);
                let buried = bury(&name, graves);
                let (mut g, _) = relay.lock();
                if let Some(m) = g.as_mut() {
                    m.restart_after(buried);
                }
                continue;
            }
            m.start_due();
            let until = m.next_timer();
            m.sleep_until = until;
            drop(g);
            let _ = os::poll_readable([relay.wake().fd()], os::poll_timeout(until));
            relay.wake().drain();
        }
    }

    /// Takes what sessions and processes queued.
    fn drain(&mut self) {
        use crossbeam_channel::TryRecvError;
        while !self.stopping {
            match self.cmds.try_recv() {
                Ok(Cmd::Attach(s, link)) => {
                    self.sessions.insert(s, link);
                }
                Ok(Cmd::Line(s, msg)) => self.session_line(s, msg),
                Ok(Cmd::Detach(s)) => self.detach(s),
                Ok(Cmd::Stop) | Err(TryRecvError::Disconnected) => self.stopping = true,
                Err(TryRecvError::Empty) => break,
            }
        }
        while !self.stopping
            && let Ok((p, e)) = self.events_rx.try_recv()
        {
            self.process_event(p, e);
        }
    }

    /// Stops every process, running or in the graveyard, all at once (one
    /// grace period).
    fn stop_processes(&mut self) {
        let mut children: Vec<ChildProc> = self
            .procs
            .iter_mut()
            .filter_map(|p| p.child.take())
            .collect();
        children.extend(self.graveyard.drain(..).map(|g| g.child));
        crate::child::stop_all(children);
    }

    /// Buried processes that are to start again: their backoff counts from
    /// now, since stopping one may have taken the grace period.
    fn restart_after(&mut self, buried: Vec<(usize, Duration)>) {
        for (p, delay) in buried {
            if matches!(self.procs[p].state, State::Down(_)) && self.procs[p].child.is_none() {
                self.procs[p].state = State::Down(Instant::now() + delay);
            }
        }
    }

    /// The next restart or overdue check.
    fn next_timer(&self) -> Option<Instant> {
        let restart = self.procs.iter().filter_map(|p| match p.state {
            State::Down(t) => Some(t),
            _ => None,
        });
        let overdue = self.calls.values().map(|c| c.deadline + OVERDUE_SLACK);
        let probe = eras::probe_timeout(&self.spec);
        let starting = self.procs.iter().filter_map(|p| match p.state {
            State::Starting(_, since) => Some(since + self.timeout),
            State::Probing(_, since) => Some(since + probe),
            _ => None,
        });
        let restart = restart.chain(starting);
        restart.chain(overdue).min()
    }

    fn publish(&self) {
        let ready = self
            .procs
            .iter()
            .filter(|p| matches!(p.state, State::Ready { .. }))
            .count();
        let out = self.procs.iter().all(|p| matches!(p.state, State::Out));
        let state = if self.backoff.failed || out {
            "failed"
        } else if ready == self.procs.len() {
            "ready"
        } else if self.restarts > 0 {
            "restarting"
        } else {
            "starting"
        };
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let changed = s.state != state || s.processes != ready;
        s.state = state;
        s.processes = ready;
        s.restarts = self.restarts;
        if changed {
            log::info!(
                "[{}] shared: {state}, {ready} of {} process(es) ready, {} restart(s)",
                self.spec.name,
                self.procs.len(),
                self.restarts
            );
        }
    }

    /// Starts the processes whose time has come.
    fn start_due(&mut self) {
        let now = Instant::now();
        for p in 0..self.procs.len() {
            if !matches!(self.procs[p].state, State::Down(t) if t <= now) {
                continue;
            }
            match ChildProc::spawn(&self.spec, self.max_line) {
                Ok(mut c) => {
                    c.attach(Sink {
                        index: p,
                        tx: self.events_tx.clone(),
                        wake: self.wake.clone(),
                        notify: {
                            let (me, wake) = (self.me.clone(), self.wake.clone());
                            Arc::new(move || match me.upgrade() {
                                Some(r) => r.nudge(),
                                None => wake.wake(),
                            })
                        },
                        backlog: self.backlog.clone(),
                    });
                    log::debug!(
                        "[{}] shared process {p} started (pid {})",
                        self.spec.name,
                        c.pid()
                    );
                    self.procs[p].child = Some(c);
                    if self.era == Some(ChildEra::Legacy) {
                        self.initialize(p);
                    } else {
                        // Its era, or (known modern) that it is up.
                        let id = self.fresh();
                        let mut discover = eras::discover_request();
                        discover["id"] = json!(id);
                        discover["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
                            json!({"sampling": {}, "elicitation": {}, "roots": {}});
                        self.send(p, &discover);
                        self.procs[p].state = State::Probing(id, Instant::now());
                    }
                }
                Err(e) => {
                    log::error!("{e}");
                    self.went_down(p, now, false);
                }
            }
        }
        self.publish();
    }

    /// Sends process `p` the mux's `initialize`.
    fn initialize(&mut self, p: usize) {
        let id = self.fresh();
        let init = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
            "protocolVersion": crate::mcp::router::SUPPORTED_VERSIONS[0],
            "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
            "clientInfo": {"name": "m2m-mcp-server-ssh-server", "version": env!("CARGO_PKG_VERSION")},
        }});
        self.send(p, &init);
        self.procs[p].state = State::Starting(id, Instant::now());
    }

    /// Process `p` answered `server/discover` (is_error, the result or
    /// error), or did not within the probe timeout (None).
    fn probed(&mut self, p: usize, answer: Option<(bool, Value)>) {
        let verdict = match answer {
            Some((is_error, v)) => eras::verdict_of(is_error, v),
            None => Verdict::Legacy(format!(
                "no answer to server/discover within {} s",
                eras::probe_timeout(&self.spec).as_secs()
            )),
        };
        let modern_only = self.spec.protocol == Protocol::Modern;
        match (&self.era, verdict) {
            (None, Verdict::Modern(result)) => {
                log::info!("[{}] shared: speaks 2026-07-28", self.spec.name);
                let era = ChildEra::Modern(Arc::new(without_tasks(result)));
                self.era = Some(era.clone());
                self.cell.set(Ok(era));
                self.became_ready(p);
            }
            (Some(ChildEra::Modern(_)), Verdict::Modern(_)) => self.became_ready(p),
            (None, Verdict::Legacy(why)) if !modern_only => {
                log::info!(
                    "[{}] shared: speaks the initialize era ({why})",
                    self.spec.name
                );
                self.era = Some(ChildEra::Legacy);
                self.cell.set(Ok(ChildEra::Legacy));
                self.initialize(p);
            }
            // Started before the verdict: it gets the legacy handshake.
            (Some(ChildEra::Legacy), _) => self.initialize(p),
            (None, Verdict::Legacy(why) | Verdict::Unusable(why)) => {
                let why = if modern_only {
                    format!("configured \"protocol\": \"2026-07-28\" but {why}")
                } else {
                    why
                };
                self.leave_out(why);
            }
            (Some(ChildEra::Modern(_)), Verdict::Legacy(why) | Verdict::Unusable(why)) => {
                log::warn!(
                    "[{}] shared process did not answer server/discover as 2026-07-28 ({why}); replacing it",
                    self.spec.name
                );
                self.went_down(p, Instant::now(), true);
            }
        }
    }

    /// The first process said the server cannot be served, or a bug
    /// panicked in the mux: every process stops for good (until a reload),
    /// and sessions leave it out.
    fn leave_out(&mut self, why: String) {
        log::error!("[{}] shared server left out: {why}", self.spec.name);
        self.cell
            .set(Err(format!("server {} left out: {why}", self.spec.name)));
        for p in 0..self.procs.len() {
            if let Some(child) = self.procs[p].child.take() {
                self.graveyard.push(Grave {
                    p,
                    child,
                    restart_in: None,
                });
            }
        }
        for p in &mut self.procs {
            p.state = State::Out;
            p.stale_closed = false;
        }
        for (s, msg) in std::mem::take(&mut self.waiting) {
            if let Some(id) = msg.get("id").cloned() {
                self.unavailable(s, id);
            }
        }
        self.publish();
    }

    /// Process `p` is gone (or failed to start or to initialize): schedule
    /// its restart by the backoff rules.
    fn went_down(&mut self, p: usize, now: Instant, still_running: bool) {
        let healthy_since = match self.procs[p].state {
            State::Ready { since } => Some(since),
            _ => None,
        };
        let was_failed = self.backoff.failed;
        let delay = self.backoff.exited(now, healthy_since);
        if self.backoff.failed && !was_failed {
            log::error!(
                "[{}] exited {CRASH_LIMIT} times within {} s: marked failed, retried every {} s",
                self.spec.name,
                CRASH_WINDOW.as_secs(),
                BACKOFF_MAX.as_secs()
            );
        }
        self.restarts += 1;
        self.procs[p].inflight = 0;
        self.procs[p].overdue = 0;
        // A process stopped while it still ran reports its end once more:
        // that report must not count against its replacement.
        self.procs[p].stale_closed = still_running && self.procs[p].child.is_some();
        if let Some(child) = self.procs[p].child.take() {
            *self.stderr.lock().unwrap_or_else(|p| p.into_inner()) = child.stderr_tail();
            self.graveyard.push(Grave {
                p,
                child,
                restart_in: Some(delay),
            });
        }
        // Counted again once it is stopped (`restart_after`).
        self.procs[p].state = State::Down(Instant::now() + delay);
        // Nothing left to serve what waits: it fails now, not at its timeout.
        if !self.any_coming() {
            for (s, msg) in std::mem::take(&mut self.waiting) {
                if let Some(id) = msg.get("id").cloned() {
                    self.unavailable(s, id);
                }
            }
        }
        // Its calls fail now, not at their timeout.
        let lost = self.calls_where(|c| c.proc_ == p);
        for id in lost {
            if let Some(c) = self.end_call(id) {
                let err = jsonrpc::error(
                    c.id,
                    jsonrpc::SERVER_UNAVAILABLE,
                    format!("server {} exited; it is being restarted", self.spec.name),
                );
                self.to_session(c.session, err);
            }
        }
        self.asks.retain(|_, a| a.proc_ != p);
        self.pins.forget(|_, q| q == p); // its states died with it
        self.publish();
    }

    fn to_session(&self, session: u64, msg: Value) {
        if let Some(l) = self.sessions.get(&session) {
            l.send(ChildEvent::Message(Incoming::Other(msg)));
        }
    }

    fn broadcast(&self, msg: &Value) {
        for l in self.sessions.values() {
            l.send(ChildEvent::Message(Incoming::Other(msg.clone())));
        }
    }

    fn send(&mut self, p: usize, msg: &Value) {
        if let Some(c) = &self.procs[p].child {
            c.send(jsonrpc::to_line(msg));
        }
    }

    /// Whether a process is ready or on its way (started, not answered yet).
    fn any_coming(&self) -> bool {
        self.procs.iter().any(|p| {
            matches!(
                p.state,
                State::Ready { .. } | State::Starting(..) | State::Probing(..)
            )
        })
    }

    fn is_ready(&self, p: usize) -> bool {
        matches!(self.procs[p].state, State::Ready { .. })
    }

    /// Sends one of the mux's own requests (its answer is dropped).
    fn internal_request(&mut self, p: usize, method: &str, params: Value) {
        let id = self.fresh();
        self.internal.insert(id);
        self.send(
            p,
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        );
    }

    fn process_event(&mut self, p: usize, e: ChildEvent) {
        match e {
            ChildEvent::Message(Incoming::Response {
                id,
                is_error,
                payload,
            }) => {
                let Some(g) = id.as_u64() else { return };
                if self.listens.get(&g).is_some_and(|l| l.proc_ == p) {
                    // A listen the process ended: its final answer.
                    if let Some(l) = self.listens.remove(&g)
                        && let Some(link) = self.sessions.get(&l.session)
                    {
                        link.send(ChildEvent::Message(Incoming::Response {
                            id: l.id,
                            is_error,
                            payload,
                        }));
                    }
                } else if let Some(c) = self.end_call(g) {
                    self.procs[p].overdue = 0;
                    if !is_error && let Some(st) = input_state(payload.get()) {
                        self.pins.keep(c.session, &st, p, Instant::now());
                    }
                    if let Some(l) = self.sessions.get(&c.session) {
                        l.send(ChildEvent::Message(Incoming::Response {
                            id: c.id,
                            is_error,
                            payload,
                        }));
                    }
                } else if matches!(self.procs[p].state, State::Starting(i, _) if i == g) {
                    let v = serde_json::from_str::<Value>(payload.get()).unwrap_or(Value::Null);
                    self.initialized(p, is_error, v);
                } else if matches!(self.procs[p].state, State::Probing(i, _) if i == g) {
                    let v = serde_json::from_str::<Value>(payload.get()).unwrap_or(Value::Null);
                    self.probed(p, Some((is_error, v)));
                } else {
                    self.internal.remove(&g);
                }
            }
            ChildEvent::Message(Incoming::Other(msg)) => self.process_message(p, msg),
            ChildEvent::BadLine(l) => {
                log::warn!(
                    "[{}] wrote a non-JSON line to stdout: {l:.200}",
                    self.spec.name
                )
            }
            ChildEvent::Closed => {
                if std::mem::take(&mut self.procs[p].stale_closed) {
                    return;
                }
                if self.procs[p].child.is_some() {
                    self.went_down(p, Instant::now(), false);
                }
            }
        }
    }

    fn initialized(&mut self, p: usize, is_error: bool, result: Value) {
        if is_error {
            log::error!(
                "[{}] shared process refused initialize: {result}",
                self.spec.name
            );
            return self.went_down(p, Instant::now(), true);
        }
        self.send(
            p,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        );
        // No tasks: one process serves every session, and `tasks/list`
        // would show each session the others' tasks.
        let mut result = result;
        if let Some(c) = result
            .get_mut("capabilities")
            .and_then(Value::as_object_mut)
        {
            c.remove("tasks");
        }
        self.init.get_or_insert(result);
        self.became_ready(p);
    }

    /// Process `p` serves (initialized, or a modern one that answered
    /// `server/discover`): it gets back what it held, sessions hear that
    /// lists may have changed if it is back, and what waited goes out.
    fn became_ready(&mut self, p: usize) {
        let back = std::mem::replace(&mut self.served, true);
        self.procs[p].state = State::Ready {
            since: Instant::now(),
        };
        self.publish();
        // A restarted process gets back the subscriptions it held.
        let held: Vec<String> = self
            .holder
            .iter()
            .filter(|(_, h)| **h == p)
            .map(|(uri, _)| uri.clone())
            .collect();
        for uri in held {
            self.internal_request(p, "resources/subscribe", json!({ "uri": uri }));
        }
        let mut listens: Vec<(u64, Value)> = self
            .listens
            .iter()
            .filter(|(_, l)| l.proc_ == p)
            .map(|(g, l)| (*g, l.msg.clone()))
            .collect();
        listens.sort_unstable_by_key(|(g, _)| *g);
        for (_, msg) in listens {
            self.send(p, &msg);
        }
        if back {
            // Its lists may have changed while it was away.
            for kind in ["tools", "prompts", "resources"] {
                self.broadcast(&json!({"jsonrpc": "2.0", "method": format!("notifications/{kind}/list_changed")}));
            }
        }
        for (s, msg) in std::mem::take(&mut self.waiting) {
            self.session_line(s, msg);
        }
    }

    /// A call ran past its timeout without an answer: after three in a row
    /// the process counts as hung.
    fn note_overdue(&mut self, p: usize) {
        self.procs[p].overdue += 1;
        if self.procs[p].overdue >= HUNG_AFTER {
            log::warn!(
                "[{}] shared process left {HUNG_AFTER} calls in a row unanswered past {} s: replacing it",
                self.spec.name,
                self.timeout.as_secs_f64()
            );
            self.went_down(p, Instant::now(), true);
        }
    }

    /// Calls past their timeout that no session cancelled (a session that
    /// ended first): counted here, once each.
    fn check_overdue(&mut self) {
        let now = Instant::now();
        // A process that does not answer `server/discover` in time is
        // legacy, or failed when it must be modern.
        let probe = eras::probe_timeout(&self.spec);
        for p in 0..self.procs.len() {
            if matches!(self.procs[p].state, State::Probing(_, since) if now >= since + probe) {
                self.probed(p, None);
            }
        }
        // A process that never answers `initialize` is replaced too.
        for p in 0..self.procs.len() {
            if matches!(self.procs[p].state, State::Starting(_, since) if now >= since + self.timeout)
            {
                log::warn!(
                    "[{}] shared process did not answer initialize; replacing it",
                    self.spec.name
                );
                self.went_down(p, now, true);
            }
        }
        let late: Vec<(u64, usize)> = self
            .calls
            .iter()
            .filter(|(_, c)| now >= c.deadline + OVERDUE_SLACK)
            .map(|(g, c)| (*g, c.proc_))
            .collect();
        for (g, p) in late {
            if let Some(c) = self.end_call(g) {
                let why = format!("request to server {} timed out", self.spec.name);
                self.to_session(
                    c.session,
                    jsonrpc::error(c.id, jsonrpc::REQUEST_TIMEOUT, why),
                );
                self.note_overdue(p);
            }
        }
    }
}

/// Ends the mux on its own thread however [`Mux::run`] leaves it, a panic
/// included: the processes are stopped and reaped here, never on a reader
/// that happens to drop the last reference to the relay; after a panic the
/// server fails.
struct EndOnExit<'a>(&'a Relay<Mux>);

impl Drop for EndOnExit<'_> {
    fn drop(&mut self) {
        let (mut g, poisoned) = self.0.lock();
        let Some(mut m) = g.take() else { return };
        drop(g);
        if poisoned || std::thread::panicking() {
            // The state may be half-updated: out until a reload replaces it.
            m.leave_out("a bug panicked in its mux".to_owned());
        }
        // The attached sessions fail their calls in flight now, and send it
        // nothing more (as for a process that exited: -32002).
        for link in m.sessions.values() {
            link.send(ChildEvent::Closed);
        }
        m.stop_processes();
    }
}

/// A process that went down, to be stopped and reaped on the mux's thread.
struct Grave {
    p: usize,
    child: ChildProc,
    /// Its backoff, or None when the server is left out.
    restart_in: Option<Duration>,
}

/// Stops and reaps the processes of the graveyard (without the mux's lock:
/// a stop may take the grace period). Returns those to start again.
fn bury(name: &str, graves: Vec<Grave>) -> Vec<(usize, Duration)> {
    let mut again = Vec::new();
    let mut out = Vec::new();
    for g in graves {
        let Some(delay) = g.restart_in else {
            out.push(g.child);
            continue;
        };
        let (tail, pid) = (g.child.stderr_tail(), g.child.pid());
        let (how, _) = crate::child::stop_one(g.child);
        log::warn!(
            "[{name}] shared process pid {pid} ended ({how}); restart in {} s; stderr: {tail}",
            delay.as_secs_f64()
        );
        again.push((g.p, delay));
    }
    crate::child::stop_all(out);
    again
}

impl ReaderTurn for Mux {
    /// A turn on a session's or a reader's thread: routes what was queued;
    /// the mux's thread is needed to stop, to bury, or for a timer earlier
    /// than it sleeps to.
    fn reader_turn(&mut self) -> bool {
        self.drain();
        let timer_moved = match (self.next_timer(), self.sleep_until) {
            (Some(t), Some(until)) => t < until,
            (Some(_), None) => true,
            (None, _) => false,
        };
        self.stopping || !self.graveyard.is_empty() || timer_moved
    }
}

/// A modern server's discover result as sessions see it: without the
/// tasks extension, since shared servers offer no tasks (one process, every
/// session's tasks).
fn without_tasks(mut result: Value) -> Value {
    if let Some(c) = result
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    {
        c.remove("tasks");
        if let Some(x) = c.get_mut("extensions").and_then(Value::as_object_mut) {
            x.remove("io.modelcontextprotocol/tasks");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_modern_server_offers_no_tasks() {
        let r = without_tasks(
            json!({"supportedVersions": ["2026-07-28"], "capabilities": {
            "tools": {"listChanged": true}, "tasks": {"list": {}},
            "extensions": {"io.modelcontextprotocol/tasks": {}, "x/other": {}}}}),
        );
        assert_eq!(
            r["capabilities"],
            json!({"tools": {"listChanged": true}, "extensions": {"x/other": {}}})
        );
        assert_eq!(
            without_tasks(json!({"supportedVersions": []})),
            json!({"supportedVersions": []})
        );
    }
}
