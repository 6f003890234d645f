//! The accept loop: bind with modern algorithms, accept on the main thread,
//! one named OS thread per connection, caps on concurrent and on not yet
//! authenticated connections, and
//! a clean stop on SIGINT/SIGTERM (every session ends, every thread joins).

use super::session::{self, Shared};
use super::sys::{Bind, BindConfig, Key};
use super::wake::{Wake, poll_readable};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// Stack for connection threads: libssh handshakes and the router fit well
/// within it (DESIGN.md: 32 KiB passed every handshake tested).
const SESSION_STACK: usize = 512 * 1024;

/// Returns freed heap to the system once no session is left, so a burst of
/// sessions does not keep the server's resident size up (small boards).
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long a failed accept leaves the listener out of the poll.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

struct Conn {
    wake: Arc<Wake>,
    thread: JoinHandle<()>,
}

/// Listens and serves until `stop` is woken. Returns after every session ended.
pub fn serve(
    addr: &str,
    port: u16,
    host_key: Key,
    shared: Arc<Shared>,
    max_sessions: usize,
    max_startups: usize,
    stop: &Wake,
) -> Result<(), String> {
    let bind = Bind::listen(BindConfig {
        addr,
        port,
        host_key,
    })
    .map_err(|e| e.to_string())?;
    log::info!("SSH server listening on {addr}:{port}");
    let active = Arc::new(AtomicUsize::new(0));
    let startups = Arc::new(AtomicUsize::new(0));
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    // Each session thread sends its id here as its last act and wakes `reap`,
    // so the accept loop joins it at once: no finished thread, stack or wake
    // fd lingers until the next connection.
    let reap = Arc::new(Wake::new().map_err(|e| e.to_string())?);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<u64>();
    let mut next_id: u64 = 1;
    // After a failed accept (say, out of fds) the connection still waits and
    // the listener stays readable: leave it out of the poll for a moment
    // instead of spinning; a session that ends (reap) frees fds sooner.
    let mut accept_pause: Option<std::time::Instant> = None;
    loop {
        let left = accept_pause.and_then(|t| t.checked_duration_since(std::time::Instant::now()));
        // poll skips a negative fd.
        let (listen_fd, timeout) = match left {
            Some(left) => (-1, left.as_millis() as i32 + 1),
            None => (bind.fd(), -1),
        };
        let ready =
            poll_readable([listen_fd, stop.fd(), reap.fd()], timeout).map_err(|e| e.to_string())?;
        if ready[1] {
            break;
        }
        if ready[2] {
            reap.drain();
            for id in done_rx.try_iter() {
                if let Some(c) = conns.remove(&id) {
                    let _ = c.thread.join();
                }
            }
            if conns.is_empty() {
                give_back_memory();
            }
            accept_pause = None; // a session ended: its fds are free
        }
        if !ready[0] {
            continue;
        }
        let session = match bind.accept() {
            Ok(Some(s)) => s,
            Ok(None) => continue, // nobody waiting after all
            Err(e) => {
                log::warn!("{e}; pausing new connections for {ACCEPT_PAUSE:?}");
                accept_pause = Some(std::time::Instant::now() + ACCEPT_PAUSE);
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        if active.load(Ordering::Relaxed) >= max_sessions {
            log::warn!("s{id}: refused: {max_sessions} connections already open");
            drop(session);
            continue;
        }
        // Unauthenticated connections get only part of the slots, so clients
        // that stall before logging in cannot lock out those that log in.
        if startups.load(Ordering::Relaxed) >= max_startups {
            log::warn!("s{id}: refused: {max_startups} connections still logging in");
            drop(session);
            continue;
        }
        let wake = match Wake::new() {
            Ok(w) => Arc::new(w),
            Err(e) => {
                log::error!("s{id}: cannot create a wake fd: {e}");
                continue;
            }
        };
        active.fetch_add(1, Ordering::Relaxed);
        let startup = session::Startup::take(&startups);
        let (sh, act, w) = (shared.clone(), active.clone(), wake.clone());
        let (done, r) = (done_tx.clone(), reap.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("s{id}"))
            .stack_size(SESSION_STACK)
            .spawn(move || {
                session::run(session, &sh, w, id, startup);
                let open = act.fetch_sub(1, Ordering::Relaxed) - 1;
                log::debug!("s{id}: connection closed; {open} open");
                let _ = done.send(id);
                r.wake();
            });
        match spawned {
            Ok(thread) => {
                conns.insert(id, Conn { wake, thread });
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
    shared.shutdown.store(true, Ordering::Relaxed);
    drop(bind);
    for c in conns.values() {
        c.wake.wake();
    }
    for (_, c) in conns.drain() {
        let _ = c.thread.join();
    }
    Ok(())
}
