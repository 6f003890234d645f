//! When to restart a server process that went down: the one backoff rule
//! for shared processes and for a session's own children.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Healthy this long after a restart: the backoff starts over.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// This many exits within [`CRASH_WINDOW`] mark the server failed.
pub const CRASH_LIMIT: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// Calls in a row left unanswered past their timeout after which a child
/// (or a shared process) counts as hung and is replaced.
pub const HUNG_AFTER: u32 = 3;

/// When to start a process again after it went down: 1 s doubling to 60 s,
/// back to 1 s after a minute of health; 5 exits within 60 s mark the
/// server failed, retried every 60 s until it holds.
#[derive(Debug)]
pub struct Backoff {
    exits: VecDeque<Instant>,
    next: Duration,
    pub failed: bool,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            exits: VecDeque::new(),
            next: BACKOFF_FIRST,
            failed: false,
        }
    }

    /// A process went down at `now`, after running healthy since
    /// `healthy_since` (if it ever got ready): the delay before its restart.
    pub fn exited(&mut self, now: Instant, healthy_since: Option<Instant>) -> Duration {
        if healthy_since.is_some_and(|t| now.duration_since(t) >= HEALTHY_AFTER) {
            self.next = BACKOFF_FIRST;
            self.exits.clear();
        }
        self.exits.push_back(now);
        while self
            .exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.exits.pop_front();
        }
        self.failed = self.exits.len() >= CRASH_LIMIT;
        let delay = if self.failed { BACKOFF_MAX } else { self.next };
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_to_a_minute_and_five_quick_exits_mark_the_server_failed() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        let s = |n: u64| Duration::from_secs(n);
        assert_eq!(b.exited(t0, None), s(1));
        assert_eq!(b.exited(t0 + s(2), None), s(2));
        assert_eq!(b.exited(t0 + s(5), None), s(4));
        assert_eq!(b.exited(t0 + s(10), None), s(8));
        assert!(!b.failed);
        assert_eq!(
            b.exited(t0 + s(19), None),
            s(60),
            "the fifth exit within 60 s"
        );
        assert!(b.failed);
        // Healthy for a minute after a restart: the count starts over.
        let later = t0 + s(200);
        assert_eq!(b.exited(later, Some(later - s(61))), s(1));
        assert!(!b.failed);
        // Doubling stops at a minute.
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..9)
            .map(|i| b.exited(t0 + s(100 * i), None).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
