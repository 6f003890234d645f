//! The accept loop: accept on the main thread, one named OS thread per
//! connection, caps on concurrent and on not yet authenticated connections
//! (in all and per source, with penalties for sources that keep failing to
//! log in), and a clean stop on SIGINT/SIGTERM (every session ends, every
//! thread joins). A panic in a connection's thread ends that connection only.
//!
//! A connection from a `--proxy-protocol-from` sender reads its PROXY header
//! on its own thread (a slow sender holds up no other connection), and only
//! then takes the place of the client the header names among its source's
//! connections logging in: the sender, the balancer, is every client's
//! address and is not counted as a source itself.

use super::conn::Startup;
use super::persource::{self, PerSource, Policy, Refused};
use super::proxy;
use super::sys::{Accepted, Bind, Session};
use crate::error::Error;
use crate::gateway::Conn;
use crate::keys::pattern::AddrPatterns;
use crate::os::{self, Wake};
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Stack for connection threads: libssh handshakes and the router fit well
/// within it (DESIGN.md: 32 KiB passed every handshake tested).
const SESSION_STACK: usize = 512 * 1024;

/// How long a failed accept leaves the listener out of the poll.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Connection caps.
pub struct Limits {
    pub max_sessions: usize,
    /// Most connections not yet authenticated (the rest of `max_sessions`
    /// stays free for clients that log in).
    pub max_startups: usize,
    /// The share of those one source may take, and its penalties.
    pub per_source: Policy,
    /// `--proxy-protocol-from`, if given.
    pub proxy: Option<Proxied>,
}

/// Who must start each connection with a PROXY header, and the time it may
/// take (the login deadline's length; key exchange gets its own after it).
pub struct Proxied {
    pub senders: AddrPatterns,
    pub grace: Duration,
}

/// What runs a connection, on its own thread.
pub type Handler = Arc<dyn Fn(Session, Conn) + Send + Sync>;

struct Running {
    wake: Arc<Wake>,
    thread: JoinHandle<()>,
}

/// Serves until `stop` is woken, then sets `shutdown`, wakes every session
/// and returns once all have ended. `on_hangup` runs on this thread each
/// time `hangup` is woken (SIGHUP).
pub fn serve(
    bind: Bind,
    limits: Limits,
    stop: &Wake,
    (hangup, on_hangup): (&Wake, &dyn Fn()),
    shutdown: &AtomicBool,
    handler: Handler,
) -> Result<(), Error> {
    let active = Arc::new(AtomicUsize::new(0));
    let startups = Arc::new(AtomicUsize::new(0));
    let sources = Arc::new(Mutex::new(PerSource::new(
        limits.per_source,
        persource::MAX_SOURCES,
    )));
    let proxied = limits.proxy.map(Arc::new);
    let is_sender = |ip| proxied.as_ref().is_some_and(|p| p.senders.matches(ip));
    let mut conns: HashMap<u64, Running> = HashMap::new();
    // Each connection thread sends its id here as its last act and wakes
    // `reap`, so the loop joins it at once: no finished thread, stack or
    // wake fd lingers until the next connection.
    let reap = Arc::new(Wake::new().map_err(|e| Error::io("cannot create an eventfd", e))?);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<u64>();
    let mut next_id: u64 = 1;
    // After a failed accept (say, out of fds) the connection still waits and
    // the listener stays readable: leave it out of the poll for a moment
    // instead of spinning; a session that ends (reap) frees fds sooner.
    let mut accept_pause: Option<Instant> = None;
    loop {
        let listen_fd = if accept_pause.is_some() {
            -1
        } else {
            bind.fd()
        };
        let ready = os::poll_readable(
            [listen_fd, stop.fd(), reap.fd(), hangup.fd()],
            os::poll_timeout(accept_pause),
        )
        .map_err(|e| Error::io("poll on the listener", e))?;
        if ready[1] {
            break;
        }
        if ready[3] {
            hangup.drain();
            on_hangup();
        }
        if accept_pause.is_some_and(|t| t <= Instant::now()) {
            accept_pause = None;
        }
        if ready[2] {
            reap.drain();
            for id in done_rx.try_iter() {
                if let Some(c) = conns.remove(&id) {
                    let _ = c.thread.join();
                }
            }
            if conns.is_empty() {
                os::give_back_memory();
            }
            accept_pause = None; // a session ended: its fds are free
        }
        if !ready[0] {
            continue;
        }
        let Accepted {
            session,
            peer,
            stream,
        } = match bind.accept(is_sender) {
            Ok(Some(s)) => s,
            Ok(None) => continue, // nobody waiting after all
            Err(e) => {
                log::warn!("{e}; pausing new connections for {ACCEPT_PAUSE:?}");
                accept_pause = Some(Instant::now() + ACCEPT_PAUSE);
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        if active.load(Ordering::Relaxed) >= limits.max_sessions {
            log::warn!(
                "s{id}: refused: {} connections already open (from {})",
                limits.max_sessions,
                peer.ip()
            );
            continue;
        }
        // Unauthenticated connections get only part of the slots, so clients
        // that stall before logging in cannot lock out those that log in.
        if startups.load(Ordering::Relaxed) >= limits.max_startups {
            log::warn!(
                "s{id}: refused: {} connections still logging in (from {})",
                limits.max_startups,
                peer.ip()
            );
            continue;
        }
        // A PROXY sender's connection is counted by its header's client,
        // on the connection's thread (`through_proxy`).
        let (startup, front) = match (stream, &proxied) {
            (Some(stream), Some(p)) => {
                let front = (stream, p.clone(), sources.clone());
                (Startup::take_unsourced(id, &startups), Some(front))
            }
            _ => {
                // The lock is released before a refusal is logged, and before
                // a startup dropped below takes it again.
                let started = persource::lock(&sources).try_start(peer.ip(), Instant::now());
                let slot = match started {
                    Ok(slot) => slot,
                    Err(why) => {
                        refused_from_source(id, peer.ip(), &limits.per_source, why);
                        continue;
                    }
                };
                (Startup::take(id, &startups, &sources, slot), None)
            }
        };
        let wake = match Wake::new() {
            Ok(w) => Arc::new(w),
            Err(e) => {
                log::error!("s{id}: cannot create a wake fd: {e}");
                continue;
            }
        };
        let conn = Conn {
            id,
            peer,
            wake: wake.clone(),
            startup,
        };
        active.fetch_add(1, Ordering::Relaxed);
        let (handler, active2) = (handler.clone(), active.clone());
        let (done, r) = (done_tx.clone(), reap.clone());
        let policy = limits.per_source;
        let spawned = std::thread::Builder::new()
            .name(format!("s{id}"))
            .stack_size(SESSION_STACK)
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| {
                    let mut conn = conn;
                    if let Some((stream, p, sources)) = front {
                        if !through_proxy(stream, &mut conn, &p, &sources, &policy) {
                            return;
                        }
                    }
                    handler(session, conn)
                });
                if let Err(p) = std::panic::catch_unwind(run) {
                    log::error!("s{id}: session ended by a bug: {}", panic_text(&p));
                }
                let open = active2.fetch_sub(1, Ordering::Relaxed) - 1;
                log::debug!("s{id}: connection closed; {open} open");
                let _ = done.send(id);
                r.wake();
            });
        match spawned {
            Ok(thread) => {
                conns.insert(id, Running { wake, thread });
            }
            Err(e) => {
                active.fetch_sub(1, Ordering::Relaxed);
                log::error!("s{id}: cannot start a thread: {e}");
            }
        }
    }
    log::info!(
        "shutting down: ending {} session(s)",
        active.load(Ordering::Relaxed)
    );
    shutdown.store(true, Ordering::Relaxed);
    drop(bind);
    for c in conns.values() {
        c.wake.wake();
    }
    for (_, c) in conns.drain() {
        let _ = c.thread.join();
    }
    Ok(())
}

/// Reads the PROXY header of a connection from a listed sender and makes
/// the client it names the connection's peer, with that source's place
/// among the connections logging in. False (after logging why) if the
/// connection must end: a missing, bad, truncated or late header, a source
/// over its limits, or the server shutting down.
fn through_proxy(
    mut stream: TcpStream,
    conn: &mut Conn,
    proxied: &Proxied,
    sources: &Arc<Mutex<PerSource>>,
    policy: &Policy,
) -> bool {
    let (id, sender) = (conn.id, conn.peer.ip());
    let deadline = Instant::now() + proxied.grace;
    let header = match proxy::read_header(&mut stream, deadline, conn.wake.fd()) {
        None => return false,
        Some(Ok(h)) => h,
        Some(Err(why)) => {
            log::warn!("s{id}: refused: {sender} is a --proxy-protocol-from sender, but {why}");
            return false;
        }
    };
    drop(stream);
    match header.source {
        Some(client) => {
            log::debug!("s{id}: {sender} relays {client} (PROXY {})", header.version);
            conn.peer = client;
        }
        None => log::debug!(
            "s{id}: {sender} sent a PROXY {} header without a client: serving it as itself",
            header.version
        ),
    }
    let ip = conn.peer.ip();
    let started = persource::lock(sources).try_start(ip, Instant::now());
    match started {
        Ok(slot) => {
            conn.startup.set_source(sources, slot);
            true
        }
        Err(why) => {
            refused_from_source(id, ip, policy, why);
            false
        }
    }
}

/// Logs a refusal by the per-source limits: the first while a source is at
/// its share (the rest until it has none logging in at debug level); those
/// of a penalized source at debug level (the penalty was logged as it began).
fn refused_from_source(id: u64, ip: std::net::IpAddr, policy: &Policy, why: Refused) {
    let source = persource::Source::of(ip);
    match why {
        Refused::Busy { first: true } => log::warn!(
            "s{id}: refused: {} connections from {source} still logging in; more from it \
             are refused quietly until none is",
            policy.max_startups
        ),
        Refused::Busy { first: false } => log::debug!(
            "s{id}: refused: {} connections from {source} still logging in",
            policy.max_startups
        ),
        Refused::Penalized { left } => log::debug!(
            "s{id}: refused: {source} is penalized for {:.1} s more",
            left.as_secs_f64()
        ),
    }
}

/// A panic's message, for the log.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
