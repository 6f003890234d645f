//! The one shortcut past a thread hop: a thread that has just queued work
//! for an owner (a session, a shared server's mux) may run the owner's
//! turn itself when the owner's thread is idle, so the work is done
//! without waking another thread.
//!
//! Why: with one thread per session and one reader per child, every
//! response otherwise costs a wake-up of the session thread. Measured with
//! `scripts/ab.sh` (echo child, 16 sessions on two CPUs), that hop cost
//! about a third of the calls per second and 20 us of p50 latency; a shared
//! server's mux, with three such hops per call, added about 50 us. The
//! state stays in one place and one owner at a time: whoever holds the
//! lock. The owner's thread takes it for each of its turns and sleeps
//! without it; any other thread only ever `try_lock`s, so it never waits
//! for the owner, and if the owner is busy it wakes the owner's thread,
//! which drains the queue on its next turn. Nothing is lost between the
//! two: the producer queues before it tries, and the owner's thread drains
//! its wake-up before it takes the lock and its queues after. Turns nest
//! (a mux turn run by a session hands a response to another session) but
//! never wait: a lock held further up the same thread is just busy.

use crate::os::Wake;
use std::cell::Cell;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

/// What a producer calls after queueing work for an owner: usually a
/// [`Relay::nudge`], else the owner's wake-up.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// What a turn run by another thread reports.
pub trait ReaderTurn {
    /// Handles what was queued and writes what it can. True when the
    /// owner's thread must act (for a session: it ended, a deadline moved
    /// earlier than it sleeps to, output waits for socket room).
    fn reader_turn(&mut self) -> bool;
}

/// An owner's state, shared by its thread and the threads that feed it.
pub struct Relay<T> {
    cell: Mutex<Option<T>>,
    wake: Arc<Wake>,
}

impl<T: ReaderTurn> Relay<T> {
    /// `wake` is the owner thread's wake-up.
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

    /// The owner thread's access, and whether a turn panicked on some
    /// thread while holding it (the state may be half-updated: the caller
    /// should end what it owns).
    pub fn lock(&self) -> (MutexGuard<'_, Option<T>>, bool) {
        match self.cell.lock() {
            Ok(g) => (g, false),
            Err(p) => (p.into_inner(), true),
        }
    }

    /// A turn panicked while holding the state (seen before the owner's
    /// thread has acted on it).
    pub fn poisoned(&self) -> bool {
        self.cell.is_poisoned()
    }

    /// The owner thread's wake-up.
    pub fn wake(&self) -> &Wake {
        &self.wake
    }

    /// Called after queueing work: run the turn here if the owner is idle,
    /// else (or if the turn says so) wake the owner's thread.
    pub fn nudge(&self) {
        // No turn deeper than MAX_NESTED, nor on a thread that already
        // unwinds (a lock taken there is not poisoned by a second panic):
        // the owner's thread runs it.
        let Some(_depth) = Nested::enter().filter(|_| !std::thread::panicking()) else {
            self.wake.wake();
            return;
        };
        // A turn that panics here poisons the lock: the owner's thread is
        // woken on the way out, so it finds that at once.
        let _wake_if_unwinding = WakeOnUnwind(&self.wake);
        let must_wake = match self.cell.try_lock() {
            Ok(mut g) => g.as_mut().is_none_or(ReaderTurn::reader_turn),
            Err(TryLockError::WouldBlock) | Err(TryLockError::Poisoned(_)) => true,
        };
        if must_wake {
            self.wake.wake();
        }
    }
}

/// Turns nested on one thread, at most: a reader's (or the mux thread's
/// own, see [`Nested::enter`]) mux turn hands a response to its session's
/// turn (two), and deeper than that (that session's turn telling another
/// shared server) the owner's thread is woken instead, so stack use stays
/// bounded on the 256 KiB stacks of readers and muxes. A session thread's
/// own turn is not counted: its stack is twice that.
const MAX_NESTED: u8 = 2;

thread_local! {
    static NESTED: Cell<u8> = const { Cell::new(0) };
}

/// One level of [`NESTED`], left on drop (unwinding included).
pub struct Nested(());

impl Nested {
    /// Counts a turn as one level; None when the thread is at the limit.
    /// [`Relay::nudge`] counts the turns it runs; an owner thread whose
    /// turns hand work to other relays (a mux's) counts its own with this.
    pub fn enter() -> Option<Nested> {
        let n = NESTED.get();
        (n < MAX_NESTED).then(|| {
            NESTED.set(n + 1);
            Nested(())
        })
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        NESTED.set(NESTED.get() - 1);
    }
}

/// Wakes the owner's thread if dropped while the thread unwinds.
struct WakeOnUnwind<'a>(&'a Wake);

impl Drop for WakeOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.wake();
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
        panics: bool,
    }

    impl ReaderTurn for Probe {
        fn reader_turn(&mut self) -> bool {
            self.turns += 1;
            assert!(!self.panics, "a bug in a turn");
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
            panics: false,
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
            panics: false,
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

    #[test]
    fn a_turn_that_panics_on_another_thread_still_wakes_the_owner() {
        let (r, wake) = relay();
        r.lock().0.as_mut().unwrap().panics = true;
        let r2 = r.clone();
        assert!(std::thread::spawn(move || r2.nudge()).join().is_err());
        assert!(woken(&wake), "woken on the way out");
        assert!(r.lock().1, "and finds the lock poisoned");
    }

    /// Nudges its other relay from inside its own turn.
    struct Chain {
        next: Option<Arc<Relay<Chain>>>,
        turns: usize,
    }

    impl ReaderTurn for Chain {
        fn reader_turn(&mut self) -> bool {
            self.turns += 1;
            if let Some(n) = &self.next {
                n.nudge();
            }
            false
        }
    }

    #[test]
    fn turns_nest_two_deep_on_one_thread_and_deeper_ones_wake_their_owner() {
        let wakes: Vec<Arc<Wake>> = (0..3).map(|_| Arc::new(Wake::new().unwrap())).collect();
        let c = Relay::new(wakes[2].clone());
        c.put(Chain {
            next: None,
            turns: 0,
        });
        let b = Relay::new(wakes[1].clone());
        b.put(Chain {
            next: Some(c.clone()),
            turns: 0,
        });
        let a = Relay::new(wakes[0].clone());
        a.put(Chain {
            next: Some(b.clone()),
            turns: 0,
        });
        a.nudge();
        let turns = |r: &Relay<Chain>| r.lock().0.as_ref().unwrap().turns;
        assert_eq!((turns(&a), turns(&b), turns(&c)), (1, 1, 0));
        assert!(!woken(&wakes[0]) && !woken(&wakes[1]));
        assert!(woken(&wakes[2]), "the third is left to its owner");
        a.nudge();
        assert_eq!(
            (turns(&a), turns(&b), turns(&c)),
            (2, 2, 0),
            "the depth was given back"
        );
    }

    #[test]
    fn an_unwinding_thread_runs_no_turn_and_wakes_the_owner() {
        let (r, wake) = relay();
        /// Nudges while its thread unwinds (a session's drop telling a mux).
        struct NudgeOnDrop(Arc<Relay<Probe>>);
        impl Drop for NudgeOnDrop {
            fn drop(&mut self) {
                self.0.nudge();
            }
        }
        let r2 = r.clone();
        let _ = std::thread::spawn(move || {
            let _d = NudgeOnDrop(r2);
            panic!("a bug in the session");
        })
        .join();
        assert!(woken(&wake));
        let (g, poisoned) = r.lock();
        assert_eq!((g.as_ref().unwrap().turns, poisoned), (0, false));
    }
}
