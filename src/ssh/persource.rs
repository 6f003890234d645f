//! Per-source limits, in the spirit of OpenSSH 9.8's `PerSourceMaxStartups`
//! and `PerSourcePenalties`: how many connections one source may have in key
//! exchange or authentication at once, and how long a source that keeps
//! failing to log in is refused. Bookkeeping only (the caller passes the
//! time): the listener asks [`PerSource::try_start`] before it starts a
//! connection, and the connection reports how its login ended with
//! [`PerSource::end`].
//!
//! A source is an IPv4 address (/32) or an IPv6 /64, the block one
//! subscriber usually gets; an IPv4-mapped IPv6 address counts as IPv4.
//!
//! Penalties. A login fails when the connection ends without logging in
//! after it was refused authentication, or when it reaches the login
//! deadline; hanging up without trying (a port scan, `ssh-keyscan`) is no
//! failure. A source's [`FREE_FAILURES`]th failed login gets it refused for
//! `penalty`; once that is over, each further failed login gets it refused
//! again, for twice the previous penalty, up to `penalty_max`. Failures of
//! connections that were already running when a penalty began only count
//! towards the next. A source that has neither failed nor been penalized for
//! `penalty_max` is forgotten: it starts afresh. Logging in does not wipe a
//! source's record (many users can share one address).
//!
//! Memory: one entry per source that has connections logging in or a
//! record of failures, [`MAX_SOURCES`] at most. When the table is full,
//! forgettable entries go first, then the idle entry with the least at
//! stake (an unpenalized one before a penalized one, then the one that
//! would be forgotten soonest). If every entry has a connection logging in,
//! the new source is let through uncounted: the global `--max-startups`
//! still bounds it.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Failed logins a source may have before its first penalty.
pub const FREE_FAILURES: u32 = 10;

/// Most sources remembered at once (as the key API's rate limiter).
pub const MAX_SOURCES: usize = 10_000;

/// `--per-source-penalty` unless given.
pub const DEFAULT_PENALTY: &str = "30:600";

/// The longest penalty the flag accepts, in seconds (a day).
const LONGEST: u64 = 86_400;

/// The longest penalty when the flag gives none, in seconds (OpenSSH's).
const DEFAULT_MAX: u64 = 600;

/// Where connections come from, for these limits: an IPv4 address or an
/// IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => Source(IpAddr::V6(Ipv6Addr::from(
                    u128::from(v6) & !u128::from(u64::MAX),
                ))),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}"),
            IpAddr::V6(ip) => write!(f, "{ip}/64"),
        }
    }
}

/// The per-source settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Most connections of one source in key exchange or authentication.
    pub max_startups: usize,
    /// The first penalty; zero turns penalties off.
    pub penalty: Duration,
    /// The longest penalty, and how long a source must stay out of trouble
    /// to be forgotten (at least `penalty`).
    pub penalty_max: Duration,
}

impl Policy {
    /// The default `--per-source-max-startups` for a `--max-startups` of
    /// `global`: half of it, rounded up, and at least 2, so a client that
    /// opens two connections at once is never refused for it.
    pub fn default_max_startups(global: usize) -> usize {
        global.div_ceil(2).max(2)
    }

    /// Parses `--per-source-penalty SECS[:MAX]` into the first and the
    /// longest penalty. SECS 0 turns penalties off; MAX defaults to 600 s
    /// (or SECS, if longer). Both at most a day, MAX at least SECS.
    pub fn parse_penalty(s: &str) -> Result<(Duration, Duration), String> {
        let bad = || format!("--per-source-penalty takes SECS[:MAX] (seconds), not {s:?}");
        let secs = |t: &str| t.parse::<u64>().ok().filter(|&n| n <= LONGEST);
        let (first, max) = match s.split_once(':') {
            None => {
                let first = secs(s).ok_or_else(bad)?;
                (first, first.max(DEFAULT_MAX))
            }
            Some((a, b)) => (secs(a).ok_or_else(bad)?, secs(b).ok_or_else(bad)?),
        };
        if max < first {
            return Err(format!(
                "--per-source-penalty: MAX ({max}) must be at least SECS ({first})"
            ));
        }
        Ok((Duration::from_secs(first), Duration::from_secs(max)))
    }
}

/// How a connection's login ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Authenticated: no longer logging in.
    LoggedIn,
    /// Gave up (or ran out of attempts) after it was refused authentication.
    Refused,
    /// Not logged in by the login deadline.
    Stalled,
    /// Went away without trying to authenticate.
    HungUp,
}

impl Ending {
    fn failed(self) -> bool {
        matches!(self, Ending::Refused | Ending::Stalled)
    }
}

/// Why a connection may not start.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its source is penalized for `left` more.
    Penalized { left: Duration },
    /// Its source has `max_startups` connections logging in already;
    /// `first` for the first refusal since it had none (the one to log).
    Busy { first: bool },
}

/// A penalty that has just begun.
#[derive(Debug, PartialEq, Eq)]
pub struct Penalty {
    pub source: Source,
    pub length: Duration,
    /// The source's failed logins on record, this one included.
    pub failures: u32,
}

/// A connection's place among its source's connections logging in, given
/// back with [`PerSource::end`].
#[derive(Debug)]
#[must_use]
pub struct Slot {
    source: Source,
    counted: bool,
}

/// What is known of one source.
#[derive(Debug, Default)]
struct Entry {
    startups: usize,
    /// A refusal for being busy was reported since it last had none.
    told_busy: bool,
    record: Option<Record>,
}

/// A source's failed logins and penalties.
#[derive(Debug)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// Length of its last penalty (zero: none yet).
    last_penalty: Duration,
    /// Refused until then.
    until: Option<Instant>,
}

impl Record {
    fn left(&self, now: Instant) -> Option<Duration> {
        let left = self.until?.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// When it may be forgotten: `calm` after its last failure or the end
    /// of its penalty, whichever is later.
    fn forget_at(&self, calm: Duration) -> Instant {
        let last = self
            .until
            .map_or(self.last_failure, |u| u.max(self.last_failure));
        last.checked_add(calm).unwrap_or(last)
    }
}

impl Entry {
    /// Drops a record that has been calm for long enough.
    fn forget_old(&mut self, now: Instant, calm: Duration) {
        if self
            .record
            .as_ref()
            .is_some_and(|r| now >= r.forget_at(calm))
        {
            self.record = None;
        }
    }

    fn idle_and_clean(&self) -> bool {
        self.startups == 0 && self.record.is_none()
    }
}

/// The per-source table; see the module's documentation for the rules.
#[derive(Debug)]
pub struct PerSource {
    policy: Policy,
    capacity: usize,
    table: HashMap<Source, Entry>,
}

/// Locks a shared table; a panic elsewhere while it was held cannot have
/// left it inconsistent in a way that matters more than refusing service.
pub fn lock(shared: &Mutex<PerSource>) -> MutexGuard<'_, PerSource> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PerSource {
    /// A table of at most `capacity` sources ([`MAX_SOURCES`] in the server).
    pub fn new(policy: Policy, capacity: usize) -> PerSource {
        PerSource {
            policy,
            capacity: capacity.max(1),
            table: HashMap::new(),
        }
    }

    /// A place for a new connection from `ip`, or why not.
    pub fn try_start(&mut self, ip: IpAddr, now: Instant) -> Result<Slot, Refused> {
        let source = Source::of(ip);
        let calm = self.calm();
        if !self.table.contains_key(&source) && !self.make_room(now) {
            return Ok(Slot {
                source,
                counted: false,
            });
        }
        let e = self.table.entry(source).or_default();
        e.forget_old(now, calm);
        if let Some(left) = e.record.as_ref().and_then(|r| r.left(now)) {
            return Err(Refused::Penalized { left });
        }
        if e.startups >= self.policy.max_startups {
            let first = !e.told_busy;
            e.told_busy = true;
            return Err(Refused::Busy { first });
        }
        e.startups += 1;
        Ok(Slot {
            source,
            counted: true,
        })
    }

    /// Gives `slot` back: the connection logged in or ended as `ending`
    /// says. Returns the penalty this begins, if any.
    pub fn end(&mut self, slot: Slot, ending: Ending, now: Instant) -> Option<Penalty> {
        let Slot { source, counted } = slot;
        if let Some(e) = self.table.get_mut(&source).filter(|_| counted) {
            e.startups = e.startups.saturating_sub(1);
            if e.startups == 0 {
                e.told_busy = false;
            }
        }
        let penalty = if ending.failed() && !self.policy.penalty.is_zero() {
            self.fail(source, now)
        } else {
            None
        };
        let calm = self.calm();
        if let Some(e) = self.table.get_mut(&source) {
            e.forget_old(now, calm);
            if e.idle_and_clean() {
                self.table.remove(&source);
            }
        }
        penalty
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn calm(&self) -> Duration {
        self.policy.penalty_max.max(self.policy.penalty)
    }

    /// Records a failed login of `source`; the penalty it begins, if any.
    fn fail(&mut self, source: Source, now: Instant) -> Option<Penalty> {
        if !self.table.contains_key(&source) && !self.make_room(now) {
            return None;
        }
        let (first, longest) = (self.policy.penalty, self.calm());
        let e = self.table.entry(source).or_default();
        e.forget_old(now, longest);
        let r = e.record.get_or_insert(Record {
            failures: 0,
            last_failure: now,
            last_penalty: Duration::ZERO,
            until: None,
        });
        r.failures = r.failures.saturating_add(1);
        r.last_failure = now;
        if r.left(now).is_some() || r.failures < FREE_FAILURES {
            return None;
        }
        let length = if r.last_penalty.is_zero() {
            first
        } else {
            r.last_penalty.saturating_mul(2).min(longest)
        };
        r.last_penalty = length;
        r.until = now.checked_add(length);
        Some(Penalty {
            source,
            length,
            failures: r.failures,
        })
    }

    /// Whether a new source fits, after forgetting what may be forgotten
    /// and, if still full, evicting the idle entry with the least at stake.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.table.len() < self.capacity {
            return true;
        }
        let calm = self.calm();
        self.table.retain(|_, e| {
            e.forget_old(now, calm);
            !e.idle_and_clean()
        });
        if self.table.len() < self.capacity {
            return true;
        }
        let victim = self
            .table
            .iter()
            .filter(|(_, e)| e.startups == 0)
            .filter_map(|(s, e)| Some((s, e.record.as_ref()?)))
            .min_by_key(|(_, r)| (r.left(now).is_some(), r.forget_at(calm)))
            .map(|(s, _)| *s);
        victim.is_some_and(|s| self.table.remove(&s).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SECS: Duration = Duration::from_secs(1);

    fn policy(max_startups: usize, penalty: u64, max: u64) -> Policy {
        Policy {
            max_startups,
            penalty: SECS * penalty as u32,
            penalty_max: SECS * max as u32,
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    /// `n` connections from `ip` that each fail to log in at `now`; the
    /// penalties they began.
    fn fail_n(t: &mut PerSource, ip: IpAddr, n: u32, now: Instant) -> Vec<Penalty> {
        (0..n)
            .filter_map(|_| {
                let slot = t.try_start(ip, now).expect("admitted");
                t.end(slot, Ending::Refused, now)
            })
            .collect()
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
        assert_ne!(Source::of(v4(1)), Source::of(v4(2)));
        assert_eq!(Source::of(v4(7)).to_string(), "192.0.2.7");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of(v4(7)));
    }

    #[test]
    fn one_source_gets_its_share_of_startups_and_others_are_not_counted_against_it() {
        let now = Instant::now();
        let mut t = PerSource::new(policy(2, 30, 600), 100);
        let held = [t.try_start(v4(1), now), t.try_start(v4(1), now)].map(Result::unwrap);
        assert_eq!(
            t.try_start(v4(1), now).unwrap_err(),
            Refused::Busy { first: true }
        );
        assert_eq!(
            t.try_start(v4(1), now).unwrap_err(),
            Refused::Busy { first: false }
        );
        let other = t.try_start(v4(2), now).expect("another source is admitted");
        let [h1, h2] = held;
        assert_eq!(t.end(h1, Ending::LoggedIn, now), None);
        let again = t.try_start(v4(1), now).expect("a place was given back");
        // Still busy: not reported again until its count fell to none.
        assert_eq!(
            t.try_start(v4(1), now).unwrap_err(),
            Refused::Busy { first: false }
        );
        for s in [h2, again, other] {
            assert_eq!(t.end(s, Ending::HungUp, now), None);
        }
        assert!(t.is_empty(), "clean idle sources are not kept: {t:?}");
        let _s = t.try_start(v4(1), now).unwrap();
        let _s2 = t.try_start(v4(1), now).unwrap();
        assert_eq!(
            t.try_start(v4(1), now).unwrap_err(),
            Refused::Busy { first: true }
        );
    }

    #[test]
    fn the_tenth_failed_login_begins_a_penalty_that_ends_on_time() {
        let now = Instant::now();
        let mut t = PerSource::new(policy(5, 30, 600), 100);
        assert!(fail_n(&mut t, v4(1), FREE_FAILURES - 1, now).is_empty());
        let p = fail_n(&mut t, v4(1), 1, now);
        assert_eq!(
            p,
            [Penalty {
                source: Source::of(v4(1)),
                length: 30 * SECS,
                failures: FREE_FAILURES
            }]
        );
        assert_eq!(
            t.try_start(v4(1), now + 10 * SECS).unwrap_err(),
            Refused::Penalized { left: 20 * SECS }
        );
        let s = t.try_start(v4(2), now).expect("others are served");
        let _ = t.end(s, Ending::LoggedIn, now);
        let s = t.try_start(v4(1), now + 30 * SECS).expect("served again");
        assert_eq!(t.end(s, Ending::LoggedIn, now + 30 * SECS), None);
    }

    #[test]
    fn hang_ups_and_logins_are_no_failures() {
        let now = Instant::now();
        let mut t = PerSource::new(policy(5, 30, 600), 100);
        for _ in 0..3 * FREE_FAILURES {
            for ending in [Ending::HungUp, Ending::LoggedIn] {
                let s = t.try_start(v4(1), now).unwrap();
                assert_eq!(t.end(s, ending, now), None);
            }
        }
        assert!(t.is_empty());
    }

    #[test]
    fn each_relapse_doubles_the_penalty_up_to_the_maximum() {
        let mut now = Instant::now();
        let mut t = PerSource::new(policy(5, 30, 200), 100);
        let mut lengths = Vec::new();
        for n in [FREE_FAILURES, 1, 1, 1, 1] {
            let p = fail_n(&mut t, v4(1), n, now);
            lengths.push(p[0].length.as_secs());
            now += p[0].length; // served again once it is over
        }
        assert_eq!(lengths, [30, 60, 120, 200, 200]);
    }

    #[test]
    fn failures_of_connections_already_running_count_towards_the_next_penalty_only() {
        let now = Instant::now();
        let mut t = PerSource::new(policy(20, 30, 600), 100);
        let running: Vec<Slot> = (0..3).map(|_| t.try_start(v4(1), now).unwrap()).collect();
        assert_eq!(fail_n(&mut t, v4(1), FREE_FAILURES, now).len(), 1);
        for s in running {
            assert_eq!(t.end(s, Ending::Stalled, now + SECS), None);
        }
        let later = now + 30 * SECS;
        let p = fail_n(&mut t, v4(1), 1, later);
        assert_eq!(p[0].length, 60 * SECS);
        assert_eq!(p[0].failures, FREE_FAILURES + 4);
    }

    #[test]
    fn a_source_calm_for_the_maximum_is_forgotten() {
        let now = Instant::now();
        let mut t = PerSource::new(policy(5, 30, 600), 100);
        assert!(fail_n(&mut t, v4(1), FREE_FAILURES - 1, now).is_empty());
        assert_eq!(t.len(), 1);
        // Calm for 600 s after its last failure: the next one is its first.
        let later = now + 600 * SECS;
        assert!(fail_n(&mut t, v4(1), 1, later).is_empty());
        assert!(fail_n(&mut t, v4(1), FREE_FAILURES - 2, later).is_empty());
        // Penalized, then calm for 600 s after the penalty: afresh, so the
        // next penalty is the first again, not a doubled one.
        let p = fail_n(&mut t, v4(1), 1, later);
        assert_eq!(p[0].length, 30 * SECS);
        let afresh = later + 630 * SECS;
        assert!(fail_n(&mut t, v4(1), FREE_FAILURES - 1, afresh).is_empty());
        assert_eq!(fail_n(&mut t, v4(1), 1, afresh)[0].length, 30 * SECS);
    }

    #[test]
    fn penalties_off_records_nothing() {
        let now = Instant::now();
        let mut t = PerSource::new(policy(5, 0, 0), 100);
        assert!(fail_n(&mut t, v4(1), 5 * FREE_FAILURES, now).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_drops_the_least_at_stake_and_never_refuses_for_being_full() {
        let now = Instant::now();
        let mut t = PerSource::new(policy(5, 30, 600), 3);
        // Source 1 is penalized; 2 has one failure; 3 has a connection open.
        assert_eq!(fail_n(&mut t, v4(1), FREE_FAILURES, now).len(), 1);
        let later = now + SECS;
        assert!(fail_n(&mut t, v4(2), 1, later).is_empty());
        let open = t.try_start(v4(3), later).unwrap();
        assert_eq!(t.len(), 3);
        // A new source takes 2's place: 1 stays penalized, 3 stays counted.
        let s4 = t.try_start(v4(4), later).unwrap();
        assert_eq!(t.len(), 3);
        assert!(matches!(
            t.try_start(v4(1), later),
            Err(Refused::Penalized { .. })
        ));
        // Then 1 is the only idle one left: it goes for source 5.
        assert!(fail_n(&mut t, v4(5), 1, later).is_empty());
        let s1 = t.try_start(v4(1), later).expect("its penalty was dropped");
        // Every entry busy: a new source is served uncounted.
        let s6 = t
            .try_start(v4(6), later)
            .expect("not refused for a full table");
        assert!(t.len() <= 3);
        for s in [open, s4, s1, s6] {
            assert_eq!(t.end(s, Ending::HungUp, later), None);
        }
        assert!(t.is_empty(), "{t:?}");
        // Records calm for long enough are forgotten before anything is
        // evicted: a full table of them makes room for all at once.
        for last in [7, 8, 9] {
            assert!(fail_n(&mut t, v4(last), 1, later).is_empty());
        }
        assert_eq!(t.len(), 3);
        let s10 = t.try_start(v4(10), later + 600 * SECS).unwrap();
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t.end(s10, Ending::HungUp, later + 600 * SECS), None);
    }

    #[test]
    fn the_penalty_flag_parses_and_refuses_nonsense() {
        let d = |a: u64, b: u64| Ok((SECS * a as u32, SECS * b as u32));
        assert_eq!(Policy::parse_penalty(DEFAULT_PENALTY), d(30, 600));
        assert_eq!(Policy::parse_penalty("5"), d(5, 600));
        assert_eq!(Policy::parse_penalty("900"), d(900, 900));
        assert_eq!(Policy::parse_penalty("0"), d(0, 600));
        assert_eq!(Policy::parse_penalty("2:4"), d(2, 4));
        assert_eq!(Policy::parse_penalty("86400:86400"), d(86400, 86400));
        for bad in [
            "", ":", "x", "-1", "5:", ":5", "5:4", "1:2:3", "86401", "1.5", " 5",
        ] {
            let e = Policy::parse_penalty(bad).unwrap_err();
            assert!(e.contains("--per-source-penalty"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_default_share_is_half_the_global_cap_and_at_least_two() {
        let share: Vec<usize> = [1, 2, 3, 4, 10, 11, 100]
            .map(Policy::default_max_startups)
            .into();
        assert_eq!(share, [2, 2, 2, 2, 5, 6, 50]);
    }
}
