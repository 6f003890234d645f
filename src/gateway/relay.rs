//! The one shortcut in the session loop: a child's reader thread that has
//! just queued output may run the session's turn itself when the session
//! thread is idle, so a response goes out without waking another thread.
//!
//! Why: with one thread per session and one reader per child, every
//! response otherwise costs a wake-up of the session thread. Measured with
//! `scripts/ab.sh` (echo child, 16 sessions on two CPUs), that hop cost
//! about a third of the calls per second and 20 us of p50 latency. The
//! session state stays in one place and one owner at a time: whoever holds
//! the lock. The session thread takes it for each of its turns and sleeps
//! without it; a reader only ever `try_lock`s, so it never waits for the
//! session, and if the session is busy it wakes the session thread, which
//! drains the queue on its next turn. Nothing is lost between the two:
//! the reader queues before it tries, and the session thread drains after
//! it takes the lock.

use crate::os::Wake;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

/// What a reader's turn reports.
pub trait ReaderTurn {
    /// Handles what the readers queued and writes what it can. True when
    /// the session thread must act (the session ended, a deadline moved
    /// earlier than it sleeps to, output waits for socket room).
    fn reader_turn(&mut self) -> bool;
}

/// A session's state, shared by its thread and its children's readers.
pub struct Relay<T> {
    cell: Mutex<Option<T>>,
    wake: Arc<Wake>,
}

impl<T: ReaderTurn> Relay<T> {
    /// `wake` is the session thread's wake-up.
    pub fn new(wake: Arc<Wake>) -> Arc<Relay<T>> {
        Arc::new(Relay {
            cell: Mutex::new(None),
            wake,
        })
    }

    /// Hands the state in; readers may run turns from here on.
    pub fn put(&self, state: T) {
        *self.lock().0 = Some(state);
    }

    /// Takes the state out: no reader turn runs after this returns.
    pub fn take(&self) -> Option<T> {
        self.lock().0.take()
    }

    /// The session thread's access, and whether a turn panicked on some
    /// thread while holding it (the state may be half-updated: the caller
    /// should end the session).
    pub fn lock(&self) -> (MutexGuard<'_, Option<T>>, bool) {
        match self.cell.lock() {
            Ok(g) => (g, false),
            Err(p) => (p.into_inner(), true),
        }
    }

    /// The session thread's wake-up.
    pub fn wake(&self) -> &Wake {
        &self.wake
    }

    /// Called by a reader after it queued output: run the turn here if the
    /// session is idle, else (or if the turn says so) wake the session thread.
    pub fn nudge(&self) {
        let must_wake = match self.cell.try_lock() {
            Ok(mut g) => g.as_mut().is_none_or(ReaderTurn::reader_turn),
            Err(TryLockError::WouldBlock) | Err(TryLockError::Poisoned(_)) => true,
        };
        if must_wake {
            self.wake.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::poll_readable;

    /// Counts reader turns; asks for the session thread when told to.
    struct Probe {
        turns: usize,
        want_session: bool,
    }

    impl ReaderTurn for Probe {
        fn reader_turn(&mut self) -> bool {
            self.turns += 1;
            self.want_session
        }
    }

    fn woken(w: &Wake) -> bool {
        let r = poll_readable([w.fd()], 0).unwrap()[0];
        w.drain();
        r
    }

    fn relay() -> (Arc<Relay<Probe>>, Arc<Wake>) {
        let wake = Arc::new(Wake::new().unwrap());
        let r = Relay::new(wake.clone());
        r.put(Probe {
            turns: 0,
            want_session: false,
        });
        (r, wake)
    }

    #[test]
    fn an_idle_session_is_served_on_the_readers_thread_without_a_wake_up() {
        let (r, wake) = relay();
        r.nudge();
        assert_eq!(r.lock().0.as_ref().unwrap().turns, 1);
        assert!(!woken(&wake));
        r.lock().0.as_mut().unwrap().want_session = true;
        r.nudge();
        assert!(woken(&wake), "the turn asked for the session thread");
    }

    #[test]
    fn a_busy_session_is_woken_instead_and_the_reader_never_waits() {
        let (r, wake) = relay();
        let guard = r.lock();
        std::thread::scope(|s| {
            s.spawn(|| r.nudge()).join().unwrap();
        });
        drop(guard);
        assert!(woken(&wake));
        assert_eq!(r.lock().0.as_ref().unwrap().turns, 0, "no turn while held");
    }

    #[test]
    fn after_take_no_turn_runs_and_a_panicked_turn_is_reported() {
        let (r, wake) = relay();
        assert!(r.take().is_some());
        r.nudge();
        assert!(
            woken(&wake),
            "nobody to run the turn: the session thread decides"
        );
        r.put(Probe {
            turns: 0,
            want_session: false,
        });
        let r2 = r.clone();
        let _ = std::thread::spawn(move || {
            let _g = r2.lock();
            panic!("a bug in a turn");
        })
        .join();
        assert!(r.lock().1, "the session thread learns of the panic");
        r.nudge();
        assert!(woken(&wake));
    }
}
