//! One MCP server child process: spawned in its own process group, with a
//! reader, a writer and a stderr thread joined to the session by crossbeam
//! channels, and stopped group-wide (stdin close, SIGTERM, SIGKILL) and reaped.

use crate::config::ServerSpec;
use crate::mcp::jsonrpc::{Incoming, LineReader, ReadLine, parse_child_line};
use crate::ssh::wake::{Wake, poll_events, poll_readable};
use crossbeam_channel::{Receiver, Sender};
use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a child's reader thread reports to its session.
#[derive(Debug)]
pub enum ChildEvent {
    Message(Incoming),
    /// A line that is not JSON (logged, not forwarded).
    BadLine(String),
    /// stdout closed: the child exited or is about to.
    Closed,
}

/// What a reader thread tells its session's `idle` hook.
#[derive(Debug, Clone, Copy)]
pub enum Idle {
    /// The reader is about to read this pipe, which may block: the hook may
    /// use the wait and returns once the pipe is readable (or at once).
    Before(RawFd),
    /// The reader stops reading for a while (a backlog wait) or for good:
    /// whatever the hook took on while waiting must go back.
    Stop,
}

/// Where a child's output goes once it belongs to a session: each event is
/// queued on `tx`, then `notify` runs on the reader thread (it delivers the
/// queue itself when the session is idle, or wakes the session thread).
/// Before each read from the child, the reader waits for `backlog` room and
/// then calls `idle`.
pub struct Sink {
    pub index: usize,
    pub tx: Sender<(usize, ChildEvent)>,
    pub notify: Arc<dyn Fn() + Send + Sync>,
    pub idle: Arc<dyn Fn(Idle) + Send + Sync>,
    pub backlog: Arc<Backlog>,
    /// Woken when the child's stdin backlog falls back under
    /// [`STDIN_BACKLOG_LIMIT`], so the session reads its client again.
    pub wake: Arc<Wake>,
}

/// Bytes queued for a child's stdin above which its session stops reading
/// the client: a client that sends faster than a child reads is held back
/// by SSH and TCP flow control instead of filling the server's memory.
pub const STDIN_BACKLOG_LIMIT: usize = 4 << 20;

/// Bytes a session holds for its client. While they are over the limit the
/// session's reader threads stop reading their children, so a child that
/// writes faster than the client reads is held back by its own pipe instead
/// of filling the server's memory.
pub struct Backlog {
    bytes: AtomicUsize,
    limit: usize,
    closed: AtomicBool,
    lock: Mutex<()>,
    room: Condvar,
}

impl Backlog {
    pub fn new(limit: usize) -> Arc<Backlog> {
        Arc::new(Backlog {
            bytes: AtomicUsize::new(0),
            limit,
            closed: AtomicBool::new(false),
            lock: Mutex::new(()),
            room: Condvar::new(),
        })
    }

    /// The session reports what it still holds after each write.
    pub fn set(&self, bytes: usize) {
        let was = self.bytes.swap(bytes, Ordering::AcqRel);
        if was > self.limit && bytes <= self.limit {
            // Under the lock, so a reader between its check and its wait
            // cannot miss this.
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.room.notify_all();
        }
    }

    /// The session is over: nobody waits any more.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.room.notify_all();
    }

    /// True while the session holds more than the limit.
    pub fn over(&self) -> bool {
        self.bytes.load(Ordering::Acquire) > self.limit
    }

    /// Blocks while the session holds more than the limit.
    pub fn wait_for_room(&self) {
        if !self.over() {
            return;
        }
        let mut g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        while self.bytes.load(Ordering::Acquire) > self.limit
            && !self.closed.load(Ordering::Acquire)
        {
            g = self.room.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

const STDERR_TAIL: usize = 20;
const GRACE: Duration = Duration::from_secs(2);
const THREAD_STACK: usize = 256 * 1024;

/// Lines up to this size are written straight from the thread running the
/// session's turn: the pipe is non-blocking, and a write of at most PIPE_BUF
/// bytes to it either goes in whole or fails with EAGAIN, in which case the
/// line goes to the writer thread. Larger lines and any backlog go through
/// the writer thread. This saves a thread hop per request: the writer
/// thread's wake-up and its channel spin were most of the gateway's CPU per
/// call in the profile.
const DIRECT_MAX: usize = libc::PIPE_BUF;

/// A running child.
pub struct ChildProc {
    pub name: String,
    child: Child,
    stdin_tx: Option<Sender<Vec<u8>>>,
    /// A second handle on the child's stdin, for direct small writes.
    stdin_direct: Option<std::fs::File>,
    /// Bytes handed to the writer thread and not yet written (0: nothing
    /// queued, as every line has its '\n'; see [`STDIN_BACKLOG_LIMIT`]).
    queued_bytes: Arc<AtomicUsize>,
    /// Whom the writer thread wakes when that backlog drains.
    drained: Arc<OnceLock<Arc<Wake>>>,
    sink_tx: Option<Sender<Sink>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    threads: Vec<JoinHandle<()>>,
    pidfd: Option<OwnedFd>,
}

impl ChildProc {
    /// Starts the server. Output is held until [`ChildProc::attach`].
    pub fn spawn(spec: &ServerSpec, max_line: usize) -> Result<ChildProc, String> {
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .envs(&spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Own session, hence own process group (pgid = pid): launchers (npx,
        // uvx) do not pass signals on, so stop() signals the whole group. A
        // session also detaches the child from the server's terminal and, as
        // sshd does for its sessions, gives it its own scheduler autogroup,
        // so busy children get their fair share of CPU.
        //
        // Every fd above stderr is marked close-on-exec: the child gets its
        // three pipes and nothing else, even fds the server inherited from
        // whoever started it (sshd closes those at start-up for the same
        // reason). Rust's own exec-error pipe is close-on-exec already, so
        // a failed exec is still reported. Kernels before 5.11 lack the flag;
        // the server's own fds are close-on-exec anyway.
        // SAFETY: setsid and the raw close_range syscall are
        // async-signal-safe, as pre_exec requires; setsid cannot fail in a
        // freshly forked child (not a group leader yet).
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            });
        }
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("command {:?} not found (searched PATH)", spec.command)
            }
            _ => format!("cannot start {:?}: {e}", spec.command),
        })?;
        let name = spec.name.clone();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (stdin_tx, stdin_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
        let (sink_tx, sink_rx) = crossbeam_channel::bounded::<Sink>(1);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let drained: Arc<OnceLock<Arc<Wake>>> = Arc::new(OnceLock::new());
        // Non-blocking (our end only: the child's end is another open file):
        // the direct write must never block the session, and the writer
        // thread waits for room in poll instead.
        let stdin_direct = stdin.as_ref().and_then(|s| {
            use std::os::fd::AsFd;
            set_nonblocking(s.as_fd())
                .and_then(|()| s.as_fd().try_clone_to_owned())
                .ok()
                .map(std::fs::File::from)
        });
        let mut threads = Vec::with_capacity(3);
        let spawn = |label: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("{label}:{name}"))
                .stack_size(THREAD_STACK)
                .spawn(f)
        };
        if let Some(mut stdin) = stdin {
            let (qb, drained) = (queued_bytes.clone(), drained.clone());
            threads.push(
                spawn(
                    "w",
                    Box::new(move || {
                        let wake = || {
                            if let Some(w) = drained.get() {
                                w.wake();
                            }
                        };
                        for line in stdin_rx.iter() {
                            let ok = write_all_waiting(&mut stdin, &line).is_ok();
                            let was = qb.fetch_sub(line.len(), Ordering::AcqRel);
                            if was >= STDIN_BACKLOG_LIMIT && was - line.len() < STDIN_BACKLOG_LIMIT
                            {
                                wake();
                            }
                            if !ok {
                                break;
                            }
                        }
                        // The child stopped reading for good: its backlog must
                        // not hold the session's client back any more.
                        qb.store(0, Ordering::Release);
                        wake();
                    }),
                )
                .map_err(|e| e.to_string())?,
            );
        }
        if let Some(stdout) = stdout {
            let n = name.clone();
            threads.push(
                spawn(
                    "r",
                    Box::new(move || read_stdout(stdout, sink_rx, max_line, n)),
                )
                .map_err(|e| e.to_string())?,
            );
        }
        if let Some(stderr) = stderr {
            let tail = stderr_tail.clone();
            let n = name.clone();
            threads.push(
                spawn("e", Box::new(move || read_stderr(stderr, tail, n)))
                    .map_err(|e| e.to_string())?,
            );
        }
        // SAFETY: pidfd_open on our own unreaped child returns a new fd or -1.
        let pidfd = unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) as RawFd;
            (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
        };
        Ok(ChildProc {
            name,
            child,
            stdin_tx: Some(stdin_tx),
            stdin_direct,
            queued_bytes,
            drained,
            sink_tx: Some(sink_tx),
            stderr_tail,
            threads,
            pidfd,
        })
    }

    /// Routes this child's output to a session.
    pub fn attach(&mut self, sink: Sink) {
        let _ = self.drained.set(sink.wake.clone());
        if let Some(tx) = self.sink_tx.take() {
            let _ = tx.send(sink);
        }
    }

    /// Queues one line (must end with '\n') for the child's stdin.
    pub fn send(&self, line: Vec<u8>) {
        if line.len() <= DIRECT_MAX
            && self.queued_bytes.load(Ordering::Acquire) == 0
            && let Some(f) = &self.stdin_direct
        {
            let mut w: &std::fs::File = f;
            // All or nothing (see DIRECT_MAX). A full pipe queues the line
            // for the writer thread; any other error means the child is gone,
            // which its reader reports.
            match w.write(&line) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => return,
            }
        }
        if let Some(tx) = &self.stdin_tx {
            let n = line.len();
            self.queued_bytes.fetch_add(n, Ordering::AcqRel);
            if tx.send(line).is_err() {
                // The writer may have ended (and zeroed the count) between
                // the add and the send: never wrap below zero, or the session
                // would think this stdin full for good.
                sub_at_most(&self.queued_bytes, n);
            }
        }
    }

    /// True while more than [`STDIN_BACKLOG_LIMIT`] bytes wait for stdin.
    pub fn stdin_full(&self) -> bool {
        self.queued_bytes.load(Ordering::Acquire) >= STDIN_BACKLOG_LIMIT
    }

    /// True while the process has not exited.
    /// Does not reap (with a pidfd), so the process group id stays ours
    /// until `stop_all` has signalled the group.
    pub fn alive(&mut self) -> bool {
        match &self.pidfd {
            Some(fd) => {
                use std::os::fd::AsRawFd;
                !poll_readable([fd.as_raw_fd()], 0).is_ok_and(|r| r[0])
            }
            None => matches!(self.child.try_wait(), Ok(None)),
        }
    }

    /// The last lines the child wrote to stderr, for failure reports.
    pub fn stderr_tail(&self) -> String {
        let t = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal_group(&self, sig: libc::c_int) {
        // SAFETY: the leader is not reaped yet (we reap last), so its pid is
        // still ours and is the group id: no other group can have it.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), sig);
        }
    }

    /// Waits until the leader exits or `timeout` passes, without reaping.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        match &self.pidfd {
            Some(fd) => {
                use std::os::fd::AsRawFd;
                let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
                let deadline = Instant::now() + timeout;
                loop {
                    match poll_readable([fd.as_raw_fd()], ms) {
                        Ok(r) if r[0] => return true,
                        _ if Instant::now() >= deadline => return false,
                        _ => {}
                    }
                }
            }
            // No pidfd (kernel < 5.3, or under valgrind): check every 20 ms
            // within the bound. Only this fallback polls.
            None => {
                let end = Instant::now() + timeout;
                loop {
                    if !self.alive() {
                        return true;
                    }
                    if Instant::now() >= end {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Subtracts `n`, stopping at zero.
fn sub_at_most(count: &AtomicUsize, n: usize) {
    let _ = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_sub(n))
    });
}

fn set_nonblocking(fd: std::os::fd::BorrowedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL/F_SETFL on an fd we hold open; no memory is passed.
    let ok = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Writes all of `buf` to a non-blocking pipe, waiting in poll while it is
/// full. Fails once the child has closed its end (EPIPE).
fn write_all_waiting(w: &mut std::process::ChildStdin, mut buf: &[u8]) -> std::io::Result<()> {
    use std::io::ErrorKind;
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                poll_events([(w.as_raw_fd(), libc::POLLOUT)], -1)?;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Stops children together (one grace period in all, not one each): close
/// stdin, wait, SIGTERM the group, wait, SIGKILL the group, reap, join.
pub fn stop_all(children: &mut [ChildProc]) {
    for c in children.iter_mut() {
        c.stdin_tx = None;
        c.stdin_direct = None;
        c.sink_tx = None; // an unattached reader thread stops waiting for a sink
    }
    let deadline = Instant::now() + GRACE;
    for c in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        c.wait_exit(left);
    }
    // Signal every group even if its leader left: launchers leave the real
    // server behind as a group member.
    for c in children.iter() {
        c.signal_group(libc::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    for c in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if !c.wait_exit(left) {
            log::warn!("[{}] did not stop after SIGTERM; killing it", c.name);
        }
        c.signal_group(libc::SIGKILL);
    }
    for c in children.iter_mut() {
        let _ = c.child.wait();
        for t in c.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn read_stdout(
    stdout: std::process::ChildStdout,
    sink_rx: Receiver<Sink>,
    max_line: usize,
    name: String,
) {
    // Nothing is read until a session owns the child (a warm spare stays quiet).
    let Ok(sink) = sink_rx.recv() else { return };
    // Events are queued as lines are parsed and handed on (`notify`) just
    // before the next read from the pipe, so a burst already read goes to
    // the session in one turn and nothing waits behind a blocking read.
    let mut pending = false;
    let fd = {
        use std::os::fd::AsRawFd;
        stdout.as_raw_fd()
    };
    let mut reader = LineReader::new(stdout, max_line);
    // Whatever the session's hook took on must go back however this ends.
    struct StopOnExit<'a>(&'a Sink);
    impl Drop for StopOnExit<'_> {
        fn drop(&mut self) {
            (self.0.idle)(Idle::Stop);
        }
    }
    let _stop = StopOnExit(&sink);
    loop {
        let line = reader.next_line_with(|| {
            if std::mem::take(&mut pending) {
                (sink.notify)();
            }
            if sink.backlog.over() {
                (sink.idle)(Idle::Stop);
                sink.backlog.wait_for_room();
            }
            (sink.idle)(Idle::Before(fd));
        });
        let ev = match line {
            ReadLine::Line(bytes) => match parse_child_line(&bytes) {
                Ok(m) => ChildEvent::Message(m),
                Err(_) => ChildEvent::BadLine(String::from_utf8_lossy(&bytes).into_owned()),
            },
            ReadLine::TooLong => {
                log::warn!("[{name}] sent a line over {max_line} bytes; dropped");
                continue;
            }
            ReadLine::Eof => {
                let _ = sink.tx.send((sink.index, ChildEvent::Closed));
                (sink.notify)();
                return;
            }
        };
        if sink.tx.send((sink.index, ev)).is_err() {
            return;
        }
        pending = true;
    }
}

fn read_stderr(
    stderr: std::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    name: String,
) {
    let mut reader = LineReader::new(stderr, 64 * 1024);
    loop {
        match reader.next_line() {
            ReadLine::Line(bytes) => {
                let line = String::from_utf8_lossy(&bytes).trim_end().to_owned();
                log::debug!("[{name}] {line}");
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
            ReadLine::TooLong => {}
            ReadLine::Eof => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sub_at_most;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_backlog_count_never_wraps_below_zero() {
        let c = AtomicUsize::new(10);
        sub_at_most(&c, 4);
        assert_eq!(c.load(Ordering::Relaxed), 6);
        c.store(0, Ordering::Relaxed); // the writer ended and cleared it
        sub_at_most(&c, 4);
        assert_eq!(c.load(Ordering::Relaxed), 0);
    }
}
