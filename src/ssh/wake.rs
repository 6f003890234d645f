//! A wake-up fd (Linux eventfd) that other threads signal after pushing into a
//! session's inbox, so the session blocks in one poll and never sleep-polls.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd; `wake` is cheap and callable from any thread.
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
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to our own eventfd. A full
        // counter (EAGAIN) already means "readable", so the result is ignored.
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
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

/// Blocks until one of `fds` is readable (or hung up) or `timeout_ms`
/// passes (-1: forever). Returns which were. EINTR counts as "nothing ready".
pub fn poll_readable<const N: usize>(fds: [RawFd; N], timeout_ms: i32) -> io::Result<[bool; N]> {
    poll_events(fds.map(|fd| (fd, libc::POLLIN)), timeout_ms)
}

/// Like [`poll_readable`] with the events to wait for given per fd.
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

/// The fd that the signal handler writes to (-1 until installed).
static SIGNAL_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(_sig: libc::c_int) {
    let fd = SIGNAL_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; fd is our eventfd.
        unsafe {
            libc::write(fd, &one as *const u64 as *const libc::c_void, 8);
        }
    }
}

/// Routes SIGINT and SIGTERM to `wake` (a shutdown request).
pub fn install_signal_handlers(wake: &Wake) {
    SIGNAL_FD.store(wake.fd(), std::sync::atomic::Ordering::Relaxed);
    // SAFETY: on_signal only does an async-signal-safe write.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
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
}
