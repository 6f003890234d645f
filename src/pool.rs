//! Warm children: spare, started-but-not-initialized processes per server,
//! handed to new sessions so they do not wait for Python or Node to start.
//! A filler thread replaces what was taken, and replaces spares that died
//! (checked when taken and every few seconds); a dead spare is never handed out.
//! The filler also finds each server's era on its first spare (`eras`), so
//! no session waits for a probe.

use crate::child::{self, ChildProc};
use crate::config::ServerSpec;
use crate::eras::{ChildEra, Eras};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const CHECK_EVERY: Duration = Duration::from_secs(10);

enum Cmd {
    Refill(usize),
    Stop,
}

/// The spares of every configured server.
pub struct Pool {
    specs: Vec<ServerSpec>,
    targets: Vec<usize>,
    spares: Mutex<Vec<Vec<ChildProc>>>,
    tx: Sender<Cmd>,
    filler: Mutex<Option<JoinHandle<()>>>,
    max_line: usize,
    eras: Eras,
}

impl Pool {
    /// Starts the filler thread, which fills every server's spares at once.
    pub fn start(specs: Vec<ServerSpec>, targets: Vec<usize>, max_line: usize) -> Arc<Pool> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let specs_len = specs.len();
        let pool = Arc::new(Pool {
            spares: Mutex::new(specs.iter().map(|_| Vec::new()).collect()),
            specs,
            targets,
            tx,
            filler: Mutex::new(None),
            max_line,
            eras: Eras::new(specs_len),
        });
        if pool.targets.iter().any(|&t| t > 0) {
            let p = pool.clone();
            let h = std::thread::Builder::new()
                .name("pool".into())
                .stack_size(256 * 1024)
                .spawn(move || p.fill_loop(rx))
                .ok();
            *pool.filler.lock().unwrap_or_else(|e| e.into_inner()) = h;
            for i in 0..pool.specs.len() {
                let _ = pool.tx.send(Cmd::Refill(i));
            }
        }
        pool
    }

    /// How many spares of `name` are waiting.
    pub fn spares(&self, name: &str) -> usize {
        let Some(i) = self.specs.iter().position(|s| s.name == name) else {
            return 0;
        };
        self.spares.lock().unwrap_or_else(|e| e.into_inner())[i].len()
    }

    /// The era of server `name` for its new process `child`: known, or
    /// probed on `child` now (a session that found no spare).
    pub fn era(&self, spec: &ServerSpec, child: &mut ChildProc) -> Result<ChildEra, String> {
        match self.specs.iter().position(|s| s.name == spec.name) {
            Some(i) => self.eras.settle(i, spec, child),
            // A server the pool does not know (cannot happen): as configured.
            None => Eras::new(1).settle(0, spec, child),
        }
    }

    /// A live spare of the server named `name`, if one is ready.
    pub fn take(&self, name: &str) -> Option<ChildProc> {
        let i = self.specs.iter().position(|s| s.name == name)?;
        if self.targets[i] == 0 {
            return None;
        }
        let mut dead = Vec::new();
        let found = {
            let mut sp = self.spares.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some(mut c) = sp[i].pop() {
                if c.alive() {
                    found = Some(c);
                    break;
                }
                dead.push(c);
            }
            found
        };
        if !dead.is_empty() {
            log::warn!("[{name}] a warm spare had exited; replacing it");
            child::stop_all(dead);
        }
        let _ = self.tx.send(Cmd::Refill(i));
        found
    }

    fn fill_loop(&self, rx: Receiver<Cmd>) {
        loop {
            match rx.recv_timeout(CHECK_EVERY) {
                Ok(Cmd::Refill(i)) => self.fill(i),
                Ok(Cmd::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    for i in 0..self.specs.len() {
                        self.drop_dead(i);
                        self.fill(i);
                    }
                }
            }
        }
    }

    fn drop_dead(&self, i: usize) {
        let mut dead = Vec::new();
        {
            let mut sp = self.spares.lock().unwrap_or_else(|e| e.into_inner());
            let mut live = Vec::new();
            for mut c in sp[i].drain(..) {
                if c.alive() {
                    live.push(c);
                } else {
                    dead.push(c);
                }
            }
            sp[i] = live;
        }
        if !dead.is_empty() {
            log::warn!(
                "[{}] {} warm spare(s) exited; replacing",
                self.specs[i].name,
                dead.len()
            );
            child::stop_all(dead);
        }
    }

    fn fill(&self, i: usize) {
        loop {
            let have = self.spares.lock().unwrap_or_else(|e| e.into_inner())[i].len();
            if have >= self.targets[i] {
                return;
            }
            match ChildProc::spawn(&self.specs[i], self.max_line) {
                Ok(mut c) => {
                    if self.eras.needs_probe(i, &self.specs[i])
                        && let Err(e) = self.eras.settle(i, &self.specs[i], &mut c)
                    {
                        log::error!("[{}] {e}", self.specs[i].name);
                        child::stop_all(vec![c]);
                        return;
                    }
                    self.spares.lock().unwrap_or_else(|e| e.into_inner())[i].push(c)
                }
                Err(e) => {
                    // Tried again on the next take or check, not in a hot loop.
                    log::warn!("[{}] cannot start a warm spare: {e}", self.specs[i].name);
                    return;
                }
            }
        }
    }

    /// Stops the filler and every spare (server shutdown, or a reload).
    pub fn shutdown(&self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(h) = self.filler.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        // Each server's list is emptied, not removed: sessions that still
        // hold this pool (one started just before a reload, a restart in an
        // open session) may ask it for a spare and must get None.
        let all: Vec<ChildProc> = self
            .spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .flat_map(|v| v.drain(..))
            .collect();
        child::stop_all(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_that_was_shut_down_hands_out_nothing_and_does_not_panic() {
        let spec = ServerSpec::new("a", "sleep", &["30"]);
        let pool = Pool::start(vec![spec], vec![1], 1024);
        pool.shutdown();
        assert!(pool.take("a").is_none());
        assert_eq!(pool.spares("a"), 0);
        assert!(pool.take("missing").is_none());
    }
}
