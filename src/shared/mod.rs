//! `"scope": "shared"` servers: `processes` processes started once,
//! initialized once, and serving every session, so fifty sessions of a
//! Python server cost one or two interpreters instead of fifty.
//!
//! To a session a shared server looks like a child of its own: its router
//! sends it lines and gets lines back on its event queue. In between sits
//! the mux, one per shared server, which keeps sessions apart (its turns
//! run on the threads that feed it when it is idle, its own thread keeps
//! the processes and the timers: see `mux.rs`):
//! - request ids and progress tokens are rewritten to the mux's own, so no
//!   session can see, answer or cancel another's request;
//! - `initialize` is answered from the one initialization the mux made;
//!   `logging/setLevel` is answered locally (the server's log messages go
//!   to the gateway's log, never to a client);
//! - `resources/subscribe` is counted per URI across sessions, and
//!   `notifications/resources/updated` goes only to the sessions that
//!   subscribed; list-changed notifications go to every session;
//! - a request from the server to a client (sampling, elicitation, roots)
//!   goes to the one session with a call in flight on that process, else
//!   the server gets an error;
//! - a session that ends has its calls cancelled and its subscriptions
//!   dropped.
//!
//! Eras: a `"legacy"` server gets `initialize` first. Otherwise each
//! process's first line is `server/discover`; the first process's answer
//! decides the server's era for as long as the mux lives (restarts keep
//! it): a result listing 2026-07-28 makes it modern, anything else legacy
//! (`initialize` follows on the same process), or, for `"2026-07-28"`, left
//! out. Sessions read the verdict at attach ([`SharedServer::era`]). A
//! modern process gets no `initialize`; the sessions' routers put their
//! client's `_meta` on each request. Its `subscriptions/listen` requests are
//! no calls (no deadline): the mux keeps each under its own id, routes the
//! process's notifications tagged with that id to the session under the
//! session's id, passes the session's cancel, cancels a leaving session's
//! listens and sends a restarted process the listens it held. The
//! initialize-era paths above (cached `initialize`, `resources/subscribe`
//! counting, requests to clients) are the legacy server's.
//!
//! Supervision: a process that exits is restarted with a backoff of 1 s
//! doubling to 60 s (back to 1 s after a minute of health); after 5 exits
//! in 60 s the server is marked failed and retried only every 60 s. Calls
//! in flight on it fail at once with -32002 naming the server; when it is
//! back, every session gets the list-changed notifications. A process that
//! lets three calls in a row run past their timeout is killed and
//! restarted the same way.

use crate::child::ChildEvent;
use crate::config::ServerSpec;
use crate::eras::{self, ChildEra};
use crate::error::Error;
use crate::os::Wake;
use crate::relay::{Notify, Relay};
use crossbeam_channel::Sender;
use serde_json::Value;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

mod mux;
use mux::Mux;

/// A shared server's era once its first process told it (None: not yet;
/// Err: left out, why), for the sessions to read.
#[derive(Default)]
struct EraCell {
    verdict: Mutex<Option<Result<ChildEra, String>>>,
    told: Condvar,
}

impl EraCell {
    fn set(&self, v: Result<ChildEra, String>) {
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        self.told.notify_all();
    }
}

/// What a session (or the gateway) tells a mux.
enum Cmd {
    Attach(u64, Link),
    Line(u64, Value),
    Detach(u64),
    Stop,
}

/// Where a session's messages from a shared server go: its own event
/// queue, exactly as from a child of its own, and its nudge (which runs the
/// session's turn on the mux's caller when the session is idle).
struct Link {
    index: usize,
    tx: Sender<(usize, ChildEvent)>,
    notify: Notify,
}

impl Link {
    fn send(&self, e: ChildEvent) {
        if self.tx.send((self.index, e)).is_ok() {
            // A bug in the session's turn, run here, ends that session (its
            // relay is poisoned and its thread woken), not the shared server.
            let _ = catch_unwind(AssertUnwindSafe(|| (self.notify)()));
        }
    }
}

/// A shared server's state, for `/health` and the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub name: String,
    /// starting, ready, restarting or failed.
    pub state: &'static str,
    pub processes: usize,
    pub restarts: u64,
}

/// A running shared server; dropping it stops its processes.
pub struct SharedServer {
    name: String,
    tx: Sender<Cmd>,
    /// The mux's state: whoever queues a command runs its turn if it is idle.
    mux: Arc<Relay<Mux>>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<Status>>,
    stderr: Arc<Mutex<String>>,
    era: Arc<EraCell>,
    probe_timeout: Duration,
}

impl SharedServer {
    /// Starts the mux and its processes.
    pub fn start(
        spec: ServerSpec,
        processes: usize,
        timeout: Duration,
        max_line: usize,
    ) -> Result<SharedServer, Error> {
        let wake = Arc::new(Wake::new().map_err(|e| Error::io("cannot create an eventfd", e))?);
        let status = Arc::new(Mutex::new(Status {
            name: spec.name.clone(),
            state: "starting",
            processes: 0,
            restarts: 0,
        }));
        let stderr = Arc::new(Mutex::new(String::new()));
        let name = spec.name.clone();
        let probe_timeout = eras::probe_timeout(&spec);
        let (mux, tx) = Mux::new(
            spec,
            processes,
            timeout,
            max_line,
            wake,
            status.clone(),
            stderr.clone(),
        );
        let era = mux.cell.clone();
        let mux = mux.into_relay();
        let thread = std::thread::Builder::new()
            .name(format!("shared:{name}"))
            .stack_size(256 * 1024)
            .spawn({
                let mux = mux.clone();
                move || Mux::run(mux)
            })
            .map_err(|e| Error::io(format!("cannot start a thread for server {name}"), e))?;
        Ok(SharedServer {
            name,
            tx,
            mux,
            thread: Some(thread),
            status,
            stderr,
            era,
            probe_timeout,
        })
    }

    /// Its first process said it cannot be served, or a bug stopped its
    /// mux (kept until the config changes it: a reload does not reuse it).
    pub fn left_out(&self) -> bool {
        let v = self.era.verdict.lock().unwrap_or_else(|p| p.into_inner());
        matches!(*v, Some(Err(_))) || self.mux.poisoned()
    }

    /// The server's era, as its first process told it: waits for that at
    /// most the probe timeout (the processes start with the gateway, so
    /// normally it is there). Err: the server is left out, or no process
    /// has answered yet; the message says which.
    pub fn era(&self) -> Result<ChildEra, String> {
        let cell = &self.era;
        let guard = cell.verdict.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cell
            .told
            .wait_timeout_while(guard, self.probe_timeout, |v| v.is_none())
            .unwrap_or_else(|p| p.into_inner());
        guard.clone().unwrap_or_else(|| {
            Err(format!(
                "server {} left out: no process of it told its era within {} s",
                self.name,
                self.probe_timeout.as_secs()
            ))
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last lines its processes wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Tells the mux `cmd` (its turn runs here if the mux is idle).
    fn tell(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            // A bug in the mux's turn, run here, ends the shared server (its
            // thread is woken and finds the relay poisoned), not the session.
            let _ = catch_unwind(AssertUnwindSafe(|| self.mux.nudge()));
        }
    }

    /// Connects session `session`, whose events for this server carry
    /// `index` and are followed by `notify`; the link detaches when dropped.
    pub fn attach(
        self: &Arc<Self>,
        session: u64,
        index: usize,
        tx: Sender<(usize, ChildEvent)>,
        notify: Notify,
    ) -> SharedLink {
        self.tell(Cmd::Attach(session, Link { index, tx, notify }));
        SharedLink {
            server: self.clone(),
            session,
        }
    }
}

impl Drop for SharedServer {
    fn drop(&mut self) {
        self.tell(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One session's end of a shared server.
pub struct SharedLink {
    server: Arc<SharedServer>,
    session: u64,
}

impl SharedLink {
    pub fn send(&self, msg: Value) {
        self.server.tell(Cmd::Line(self.session, msg));
    }

    pub fn server(&self) -> &SharedServer {
        &self.server
    }
}

impl Drop for SharedLink {
    fn drop(&mut self) {
        self.server.tell(Cmd::Detach(self.session));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Protocol, Scope};
    use crate::mcp::jsonrpc::Incoming;
    use serde_json::json;

    /// A shared server that never answers (`sleep`), legacy so that it is
    /// not probed: the mux answers `logging/setLevel` itself.
    fn silent_server() -> Arc<SharedServer> {
        let mut spec = ServerSpec::new("s", "sleep", &["1000"]);
        spec.scope = Scope::Shared { processes: 1 };
        spec.protocol = Protocol::Legacy;
        Arc::new(SharedServer::start(spec, 1, Duration::from_secs(30), 1 << 20).unwrap())
    }

    fn set_level(id: u64) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "logging/setLevel", "params": {"level": "info"}})
    }

    /// The id of the next response on `rx` (bounded wait).
    fn answered(rx: &crossbeam_channel::Receiver<(usize, ChildEvent)>) -> Option<Value> {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((_, ChildEvent::Message(Incoming::Response { id, .. }))) => Some(id),
            Ok((_, ChildEvent::Message(Incoming::Other(m)))) => m.get("id").cloned(),
            _ => None,
        }
    }

    #[test]
    fn a_session_whose_turn_panics_leaves_the_shared_server_serving_the_others() {
        let server = silent_server();
        let (tx, rx) = crossbeam_channel::unbounded();
        let buggy: Notify = Arc::new(|| panic!("a bug in a session's turn"));
        let a = server.attach(1, 0, tx, buggy);
        // Answered by the mux, in its turn run here, which hands it to the
        // session: the session's turn panics inside the mux's.
        a.send(set_level(7));
        assert_eq!(answered(&rx), Some(json!(7)), "queued before the panic");
        assert!(!server.left_out());
        assert_ne!(server.status().state, "failed");
        let (tx, rx) = crossbeam_channel::unbounded();
        let b = server.attach(2, 0, tx, Arc::new(|| {}));
        b.send(set_level(8));
        assert_eq!(answered(&rx), Some(json!(8)), "the mux still serves");
    }

    #[test]
    fn a_bug_in_the_mux_fails_the_server_and_its_sessions_hear_it_closed() {
        let server = silent_server();
        let (tx, rx) = crossbeam_channel::unbounded();
        let a = server.attach(1, 0, tx, Arc::new(|| {}));
        // The mux's turn runs here and panics: the session goes on, the
        // mux's thread finds the state poisoned and ends the server.
        a.send(json!({"jsonrpc": "2.0", "id": 1, "method": "test/panic"}));
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((0, ChildEvent::Closed)) => {}
            other => panic!("the session was not told: {other:?}"),
        }
        assert!(server.left_out(), "a reload replaces it");
        assert_eq!(server.status().state, "failed");
        assert!(server.era().is_err(), "new sessions leave it out");
    }
}
