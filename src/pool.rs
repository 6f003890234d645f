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
    /// Dropped at shutdown: disconnects `stop_rx`, which ends a probe.
    stop_tx: Mutex<Option<Sender<()>>>,
    stop_rx: Receiver<()>,
}

impl Pool {
    /// Starts the filler thread, which fills every server's spares at once.
    pub fn start(specs: Vec<ServerSpec>, targets: Vec<usize>, max_line: usize) -> Arc<Pool> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let specs_len = specs.len();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let pool = Arc::new(Pool {
            spares: Mutex::new(specs.iter().map(|_| Vec::new()).collect()),
            specs,
            targets,
            tx,
            filler: Mutex::new(None),
            max_line,
            eras: Eras::new(specs_len),
            stop_tx: Mutex::new(Some(stop_tx)),
            stop_rx,
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
            Some(i) => self.eras.settle(i, spec, child, &self.stop_rx),
            // A server the pool does not know (cannot happen): as configured.
            None => Eras::new(1).settle(0, spec, child, &self.stop_rx),
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

    /// Whether [`Pool::shutdown`] has begun.
    fn stopping(&self) -> bool {
        matches!(
            self.stop_rx.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        )
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
            if have >= self.targets[i] || self.eras.failed(i).is_some() || self.stopping() {
                return; // a failed probe was logged once
            }
            match ChildProc::spawn(&self.specs[i], self.max_line) {
                Ok(mut c) => {
                    if self.eras.needs_probe(i, &self.specs[i])
                        && let Err(e) = self.eras.settle(i, &self.specs[i], &mut c, &self.stop_rx)
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
        drop(
            self.stop_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
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

    /// A server configured `"2026-07-28"` run through `sh -c script`,
    /// with `{log}` replaced by a fresh file each start appends to.
    fn modern_sh(name: &str, script: &str) -> (ServerSpec, std::path::PathBuf) {
        let log = std::env::temp_dir().join(format!("m2m-pool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let script = script.replace("{log}", &log.display().to_string());
        let mut spec = ServerSpec::new(name, "sh", &["-c", &script]);
        spec.protocol = crate::config::Protocol::Modern;
        (spec, log)
    }

    fn starts(log: &std::path::Path) -> usize {
        std::fs::read_to_string(log).map_or(0, |s| s.lines().count())
    }

    #[test]
    fn a_server_that_fails_its_era_probe_is_probed_once() {
        // Answers the probe as a legacy server would, at once.
        let (spec, log) = modern_sh(
            "legacy",
            r#"echo start >> {log}; echo '{"jsonrpc":"2.0","id":"m2m-era-probe","error":{"code":-32601,"message":"no"}}'; exec sleep 30"#,
        );
        // A legacy server (no probe) whose starts mark the filler's progress.
        let (mut marker, marks) = modern_sh("marker", "echo start >> {log}; exec sleep 30");
        marker.protocol = crate::config::Protocol::Legacy;
        let pool = Pool::start(vec![spec, marker], vec![1, 1], 1 << 16);
        let bounded = |what: &dyn Fn() -> bool| {
            for _ in 0..400 {
                if what() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            panic!("not within 10 s");
        };
        bounded(&|| pool.eras.failed(0).is_some() && starts(&marks) == 1);
        for _ in 0..3 {
            assert!(pool.take("legacy").is_none()); // each asks for a refill
        }
        let taken: Vec<ChildProc> = pool.take("marker").into_iter().collect();
        assert_eq!(taken.len(), 1);
        child::stop_all(taken);
        // Refills run in order: once the marker's is done, so are the others.
        bounded(&|| starts(&marks) == 2);
        assert_eq!(starts(&log), 1, "spawned and probed once");
        pool.shutdown();
        let _ = std::fs::remove_file(&marks);
        assert!(pool.eras.failed(0).unwrap().contains("2026-07-28"));
        let _ = std::fs::remove_file(&log);
    }

    #[test]
    fn shutdown_does_not_wait_for_a_probe_of_a_silent_server() {
        let (spec, log) = modern_sh("silent", "echo start >> {log}; exec sleep 60");
        let pool = Pool::start(vec![spec], vec![1], 1 << 16);
        // Bounded wait until the probe runs (the process has started).
        for _ in 0..200 {
            if starts(&log) > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert_eq!(starts(&log), 1);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let p = pool.clone();
        let h = std::thread::spawn(move || {
            p.shutdown();
            let _ = tx.send(());
        });
        // The probe would wait 30 s; shutdown must not.
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "shutdown waited for the probe"
        );
        let _ = h.join();
        assert!(
            pool.eras.failed(0).is_none(),
            "an interrupted probe is no verdict"
        );
        let _ = std::fs::remove_file(&log);
    }
}
