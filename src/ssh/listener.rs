//! The accept loop: bind with modern algorithms, accept on the main thread,
//! one named OS thread per connection, a cap on concurrent connections, and
//! a clean stop on SIGINT/SIGTERM (every session ends, every thread joins).

use super::session::{self, Shared};
use super::sys::{Bind, BindConfig, Key};
use super::wake::{Wake, poll_readable};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Stack for connection threads: libssh handshakes and the router fit well
/// within it (DESIGN.md: 32 KiB passed every handshake tested).
const SESSION_STACK: usize = 512 * 1024;

struct Conn {
    wake: Arc<Wake>,
    thread: JoinHandle<()>,
}

/// Listens and serves until `stop` is woken. Returns after every session ended.
pub fn serve(
    addr: &str,
    port: u16,
    host_key: &Key,
    shared: Arc<Shared>,
    max_sessions: usize,
    stop: &Wake,
) -> Result<(), String> {
    let bind = Bind::listen(&BindConfig {
        addr,
        port,
        host_key,
    })
    .map_err(|e| e.to_string())?;
    log::info!("SSH server listening on {addr}:{port}");
    let active = Arc::new(AtomicUsize::new(0));
    let conns: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
    let next_id = AtomicU64::new(1);
    loop {
        let ready = poll_readable(&[bind.fd(), stop.fd()], -1).map_err(|e| e.to_string())?;
        if ready[1] {
            break;
        }
        if !ready[0] {
            continue;
        }
        let session = match bind.accept() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept failed: {e}");
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if active.load(Ordering::Relaxed) >= max_sessions {
            log::warn!("s{id}: refused: {max_sessions} connections already open");
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
        let (sh, act, w) = (shared.clone(), active.clone(), wake.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("s{id}"))
            .stack_size(SESSION_STACK)
            .spawn(move || {
                session::run(session, &sh, w, id);
                act.fetch_sub(1, Ordering::Relaxed);
            });
        let mut list = conns.lock().unwrap_or_else(|p| p.into_inner());
        // Join finished threads so the list stays as long as the live sessions.
        let (done, live): (Vec<Conn>, Vec<Conn>) =
            list.drain(..).partition(|c| c.thread.is_finished());
        *list = live;
        for c in done {
            let _ = c.thread.join();
        }
        match spawned {
            Ok(thread) => list.push(Conn { wake, thread }),
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
    let list = std::mem::take(&mut *conns.lock().unwrap_or_else(|p| p.into_inner()));
    for c in &list {
        c.wake.wake();
    }
    for c in list {
        let _ = c.thread.join();
    }
    Ok(())
}
