//! The operating-system calls that std does not wrap: an eventfd wake-up,
//! poll, signal routing, process groups and pidfds, fd flags, and two glibc
//! malloc tunings. Together with the libssh binding (`ssh::sys`) this is the
//! only `unsafe` in the crate; each block states the invariant it relies on.

pub mod localtime;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// An eventfd that other threads signal after queueing work for a thread
/// that blocks in [`poll_events`], so nothing ever sleep-polls.
#[derive(Debug)]
pub struct Wake(OwnedFd);

impl Wake {
    pub fn new() -> io::Result<Wake> {
        // SAFETY: eventfd returns a new fd or -1; we take ownership of it.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable. Several wakes before a poll coalesce into one.
    pub fn wake(&self) {
        write_one(self.0.as_raw_fd());
    }

    /// Resets the counter (for loops that poll the fd themselves).
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from our own nonblocking fd.
        unsafe {
            libc::read(
                self.0.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            );
        }
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Adds one to an eventfd's counter; async-signal-safe.
fn write_one(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a valid u64 to an eventfd. A full counter
    // (EAGAIN) already means "readable", so the result is ignored.
    unsafe {
        libc::write(fd, &one as *const u64 as *const libc::c_void, 8);
    }
}

/// Blocks until one of `fds` is readable (or hung up) or `timeout_ms`
/// passes (-1: forever). Returns which were. EINTR counts as "nothing ready".
pub fn poll_readable<const N: usize>(fds: [RawFd; N], timeout_ms: i32) -> io::Result<[bool; N]> {
    poll_events(fds.map(|fd| (fd, libc::POLLIN)), timeout_ms)
}

/// Like [`poll_readable`] with the events to wait for given per fd. A
/// negative fd is skipped (and reported as not ready).
pub fn poll_events<const N: usize>(
    fds: [(RawFd, libc::c_short); N],
    timeout_ms: i32,
) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|(fd, events)| libc::pollfd {
        fd,
        events,
        revents: 0,
    });
    // SAFETY: pfds is a valid array of N pollfds for the duration of the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok([false; N]);
        }
        return Err(e);
    }
    Ok(pfds.map(|p| p.revents != 0))
}

/// Milliseconds for poll until `deadline` (None: forever, -1), rounded up so
/// a deadline is never woken for just before it passes.
pub fn poll_timeout(deadline: Option<std::time::Instant>) -> i32 {
    match deadline {
        None => -1,
        Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
            None => 0,
            Some(left) => left.as_millis().min(i32::MAX as u128 - 1) as i32 + 1,
        },
    }
}

/// The eventfds that the signal handler writes to (-1 until installed):
/// one for SIGINT and SIGTERM, one for SIGHUP.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
static HANGUP_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let slot = if sig == libc::SIGHUP {
        &HANGUP_FD
    } else {
        &SIGNAL_FD
    };
    let fd = slot.load(Ordering::Relaxed);
    if fd >= 0 {
        write_one(fd);
    }
}

/// Routes SIGINT and SIGTERM to `wake` (a shutdown request). `wake` must
/// outlive the process's interest in signals (the binaries keep it in main).
pub fn install_signal_handlers(wake: &Wake) {
    SIGNAL_FD.store(wake.fd(), Ordering::Relaxed);
    // SAFETY: on_signal only does an atomic load and an async-signal-safe write.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Routes SIGHUP to `wake` (reopen logs, as logrotate expects) instead of
/// ending the process. `wake` must outlive the process's interest in it.
pub fn install_hangup_handler(wake: &Wake) {
    HANGUP_FD.store(wake.fd(), Ordering::Relaxed);
    // SAFETY: as in install_signal_handlers.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGHUP, handler);
    }
}

/// Makes `cmd`'s child [`detach_child`] itself between fork and exec.
pub fn detach_on_spawn(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: pre_exec's closure runs between fork and exec, where only
    // async-signal-safe calls are allowed: detach_child makes only those.
    unsafe { cmd.pre_exec(detach_child) };
}

/// For `CommandExt::pre_exec`: puts the child in a session of its own (so
/// its process group id is its pid and [`signal_group`] reaches launchers'
/// children too), and marks every fd above stderr close-on-exec so the child
/// gets its three pipes and nothing else, even fds the server inherited.
/// Kernels before 5.11 lack the flag; the server's own fds are close-on-exec
/// anyway. Rust's exec-error pipe is close-on-exec already, so a failed exec
/// is still reported.
fn detach_child() -> io::Result<()> {
    // SAFETY: setsid and the raw close_range syscall are async-signal-safe,
    // as pre_exec requires; setsid cannot fail in a freshly forked child
    // (not a group leader yet).
    unsafe {
        libc::setsid();
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    // The server raised its own soft fd limit (`raise_nofile_limit`); the
    // child starts with the one the server was given, as under sshd.
    let soft = CHILD_NOFILE.load(Ordering::Relaxed);
    if soft > 0 {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit are plain syscalls (async-signal-safe)
        // on a valid struct on this stack.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && soft < rlim_u64(lim.rlim_cur)
            {
                lim.rlim_cur = soft as libc::rlim_t;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
    Ok(())
}

/// A pidfd for our own unreaped child (None before Linux 5.3): readable once
/// the child exits, so waiting for it needs no polling.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open on our own unreaped child returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as RawFd;
    // SAFETY: a non-negative result is a fresh fd that nobody else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `sig` to the process group led by `leader`. The caller must not
/// have reaped the leader yet: until then its pid, the group id, cannot
/// belong to anyone else. A group with no process left is no error.
pub fn signal_group(leader: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory effects; a negative pid names a group.
    unsafe {
        libc::kill(-(leader as libc::pid_t), sig);
    }
}

/// The effective uid of this process: the owner, besides root, that a
/// file deciding who logs in may have.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// How our child `pid` ended, without reaping it (`waitid` with
/// `WNOWAIT`): None while it runs, unless `block` waits for its end. Left
/// unreaped, its pid, and so the id of the process group it leads, cannot
/// be reused, so `signal_group` stays safe for what it left behind.
pub fn peek_exit(pid: u32, block: bool) -> io::Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
    // SAFETY: siginfo_t is plain data; zeroed, si_pid stays 0 when nothing
    // changed (WNOHANG), as waitid(2) asks.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid writes only into `info`, which we own.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // SAFETY: waitid filled `info` for a SIGCHLD-style event (or left it zeroed).
    let (child, status) = unsafe { (info.si_pid(), info.si_status()) };
    if child == 0 {
        return Ok(None);
    }
    // The raw wait status std decodes: code << 8 on exit, the signal when killed.
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => return Ok(None),
    };
    Ok(Some(std::process::ExitStatus::from_raw(raw)))
}

pub fn set_nonblocking(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an fd we hold open; no memory is passed.
    let ok = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads what is available on a raw fd, with no buffering in between (the
/// caller's poll must see everything that is left).
pub fn read_fd(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for its length; the borrow keeps fd open.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Keeps glibc from giving every thread its own malloc arena: with a thread
/// per session and three per child, per-thread arenas cost megabytes of RSS
/// for no gain at this server's allocation rate (small boards first). Call
/// before other threads start.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns freed heap to the system, so a burst of sessions does not keep
/// the server's resident size up once they are gone.
pub fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits for an exclusive advisory lock (`flock`) on `file`, held until the
/// file is closed. Each open of a file is a lock holder of its own, so
/// writers in one process (each opening it) and in several serialize alike.
pub fn lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    loop {
        // SAFETY: flock on an fd that the borrow keeps open; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (the common soft 1024
/// is far below what a server with a thread and several pipes per session
/// may need). Returns the soft limit before and after; on failure it stays
/// as it was. The limit bounds fd numbers, so fds above 1023 appear only
/// once more than 1024 are open.
/// The soft fd limit the server started with, given back to children (0:
/// unchanged): a child that uses select() breaks on fds above 1023.
static CHILD_NOFILE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = rlim_u64(lim.rlim_cur);
    CHILD_NOFILE.store(before, Ordering::Relaxed);
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the valid struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, rlim_u64(lim.rlim_cur)))
}

/// `rlim_t` is 32 bits on 32-bit ARM (armv7) and 64 elsewhere, where this
/// cast is a no-op that clippy would flag.
#[allow(clippy::unnecessary_cast)]
fn rlim_u64(v: libc::rlim_t) -> u64 {
    v as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_makes_fd_readable_and_drain_resets_it() {
        let w = Wake::new().unwrap();
        assert_eq!(poll_readable([w.fd()], 0).unwrap(), [false]);
        w.wake();
        w.wake();
        assert_eq!(poll_readable([w.fd()], 0).unwrap(), [true]);
        w.drain();
        assert_eq!(poll_readable([w.fd()], 0).unwrap(), [false]);
    }

    #[test]
    fn poll_timeouts_round_up_and_never_wait_for_a_past_deadline() {
        use std::time::{Duration, Instant};
        assert_eq!(poll_timeout(None), -1);
        assert_eq!(
            poll_timeout(Some(Instant::now() - Duration::from_secs(1))),
            0
        );
        let t = poll_timeout(Some(Instant::now() + Duration::from_micros(1500)));
        assert!((1..=2).contains(&t), "{t}");
    }

    #[test]
    fn raise_nofile_limit_lifts_the_soft_limit_to_the_hard_one() {
        let current = || {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into the valid struct we pass.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
            l
        };
        let hard = current().rlim_max;
        if hard == libc::RLIM_INFINITY || hard < 64 {
            return;
        }
        // One below the hard limit: nothing beside this test can notice.
        let lower = libc::rlimit {
            rlim_cur: hard - 1,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the valid struct we pass.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lower) }, 0);
        let (h, h1) = (rlim_u64(hard), rlim_u64(hard - 1));
        assert_eq!(raise_nofile_limit().unwrap(), (h1, h));
        assert_eq!(current().rlim_cur, hard);
        assert_eq!(raise_nofile_limit().unwrap(), (h, h));
    }
}
