//! One MCP server child process: spawned in its own process group, with a
//! reader, a writer and a stderr thread. The reader frames and parses lines
//! and hands each to the owning session (a channel send and a wake-up);
//! nothing else runs on it. A child is stopped group-wide (stdin close,
//! SIGTERM, SIGKILL) and reaped when it is dropped, so no path, a panic
//! included, leaves a process or a thread behind.

use crate::config::ServerSpec;
use crate::error::Error;
use crate::mcp::framing::{Frame, LineReader};
use crate::mcp::jsonrpc::{Incoming, parse_child_owned};
use crate::os::{self, Wake};
use crate::relay::Notify;
use crossbeam_channel::{Receiver, Sender};
use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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

/// Where a child's output goes once a session owns it.
pub struct Sink {
    pub index: usize,
    pub tx: Sender<(usize, ChildEvent)>,
    /// The session's wake-up, signalled when the child's stdin backlog
    /// falls back under [`STDIN_BACKLOG_LIMIT`].
    pub wake: Arc<Wake>,
    /// Called after events are queued: runs the owner's turn here or
    /// wakes its thread (see [`crate::relay`]).
    pub notify: Notify,
    /// The reader waits for room here before each read.
    pub backlog: Arc<Backlog>,
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

    /// Blocks while the session holds more than the limit.
    /// Blocks while the session holds more than the limit, unless the
    /// child is being stopped (`stopping`): its reader must then run to EOF.
    pub fn wait_for_room(&self, stopping: &AtomicBool) {
        if self.bytes.load(Ordering::Acquire) <= self.limit {
            return;
        }
        let mut g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        while self.bytes.load(Ordering::Acquire) > self.limit
            && !self.closed.load(Ordering::Acquire)
            && !stopping.load(Ordering::Acquire)
        {
            g = self.room.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wakes every waiting reader to look at its flags again.
    fn wake_all(&self) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.room.notify_all();
    }
}

const STDERR_TAIL: usize = 20;
const GRACE: Duration = Duration::from_secs(2);
const THREAD_STACK: usize = 256 * 1024;

/// Lines up to this size are written straight from the session thread: the
/// pipe is non-blocking, and a write of at most PIPE_BUF bytes either goes
/// in whole or fails with EAGAIN, in which case the line goes to the writer
/// thread. Larger lines and any backlog go through the writer thread. This
/// saves a thread hop per request.
const DIRECT_MAX: usize = libc::PIPE_BUF;

/// A running child. Dropping it stops and reaps it.
pub struct ChildProc {
    pub name: String,
    child: Child,
    stdin_tx: Option<Sender<Vec<u8>>>,
    /// A second handle on the child's stdin, for direct small writes.
    stdin_direct: Option<std::fs::File>,
    /// Bytes handed to the writer thread and not yet written.
    queued_bytes: Arc<AtomicUsize>,
    /// Whom the writer thread wakes when that backlog drains.
    drained: Arc<OnceLock<Arc<Wake>>>,
    sink_tx: Option<Sender<Sink>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    threads: Vec<JoinHandle<()>>,
    pidfd: Option<OwnedFd>,
    /// Set when it is being stopped: its reader stops waiting for room.
    stopping: Arc<AtomicBool>,
    /// Its session's output backlog, once attached.
    backlog: Option<Arc<Backlog>>,
    reaped: bool,
    /// How it ended, once reaped.
    status: Option<std::process::ExitStatus>,
}

impl ChildProc {
    /// Starts the server. Output is held until [`ChildProc::attach`]. If a
    /// step fails after the process started, the process is stopped and
    /// reaped before the error returns.
    pub fn spawn(spec: &ServerSpec, max_line: usize) -> Result<ChildProc, Error> {
        let spawn_err = |source| Error::Spawn {
            server: spec.name.clone(),
            command: spec.command.clone(),
            source,
        };
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .envs(&spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Own session, hence own process group: launchers (npx, uvx) do not
        // pass signals on, so a stop signals the whole group. As sshd does,
        // this also detaches the child from the server's terminal and gives
        // it its own scheduler autogroup. Only fds 0-2 cross the exec.
        os::detach_on_spawn(&mut cmd);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let pidfd = os::pidfd_open(child.id());
        let (stdin_tx, stdin_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
        // Two: a probe's sink, then the session's.
        let (sink_tx, sink_rx) = crossbeam_channel::bounded::<Sink>(2);
        // From here on, dropping `proc` stops and reaps the process.
        let mut proc = ChildProc {
            name: spec.name.clone(),
            child,
            stdin_tx: Some(stdin_tx),
            stdin_direct: None,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            drained: Arc::new(OnceLock::new()),
            sink_tx: Some(sink_tx),
            stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
            threads: Vec::with_capacity(3),
            pidfd,
            stopping: Arc::new(AtomicBool::new(false)),
            backlog: None,
            reaped: false,
            status: None,
        };
        if let Some(stdin) = stdin {
            // Non-blocking (our end only): the direct write must never block
            // the session, and the writer thread waits for room in poll.
            os::set_nonblocking(stdin.as_fd()).map_err(spawn_err)?;
            proc.stdin_direct = Some(
                stdin
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(spawn_err)?
                    .into(),
            );
            let (queued, drained) = (proc.queued_bytes.clone(), proc.drained.clone());
            proc.thread("w", move || write_stdin(stdin, stdin_rx, queued, drained))
                .map_err(spawn_err)?;
        }
        if let Some(stdout) = stdout {
            let (name, stopping) = (spec.name.clone(), proc.stopping.clone());
            proc.thread("r", move || {
                read_stdout(stdout, sink_rx, max_line, name, stopping)
            })
            .map_err(spawn_err)?;
        }
        if let Some(stderr) = stderr {
            let (tail, name) = (proc.stderr_tail.clone(), spec.name.clone());
            proc.thread("e", move || read_stderr(stderr, tail, name))
                .map_err(spawn_err)?;
        }
        Ok(proc)
    }

    fn thread(&mut self, label: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let h = std::thread::Builder::new()
            .name(format!("{label}:{}", self.name))
            .stack_size(THREAD_STACK)
            .spawn(f)?;
        self.threads.push(h);
        Ok(())
    }

    /// Before any session owns the child: sends `line` (a request with id
    /// `id`) and waits up to `timeout` for its answer; None on silence, an
    /// exit or a line that is not JSON. Anything else it writes meanwhile is
    /// dropped. [`ChildProc::attach`] may follow.
    pub fn probe(
        &mut self,
        line: Vec<u8>,
        id: &serde_json::Value,
        timeout: Duration,
        stop: &crossbeam_channel::Receiver<()>,
    ) -> Option<Incoming> {
        let tx = self.sink_tx.as_ref()?;
        let wake = Arc::new(Wake::new().ok()?);
        let (etx, erx) = crossbeam_channel::unbounded();
        let sink = Sink {
            index: 0,
            tx: etx,
            wake,
            notify: Arc::new(|| {}),
            backlog: Backlog::new(usize::MAX),
        };
        tx.try_send(sink).ok()?;
        self.send(line);
        let deadline = Instant::now() + timeout;
        loop {
            // `stop` disconnects when the owner shuts down: no wait on it.
            let ev = crossbeam_channel::select! {
                recv(erx) -> ev => ev.ok()?,
                recv(stop) -> _ => return None,
                default(deadline.saturating_duration_since(Instant::now())) => return None,
            };
            match ev {
                (_, ChildEvent::Message(m)) => {
                    let matches = match &m {
                        Incoming::Response { id: got, .. } => got == id,
                        Incoming::Other(_) => false,
                    };
                    if matches {
                        return Some(m);
                    }
                }
                (_, ChildEvent::BadLine(_)) => {}
                (_, ChildEvent::Closed) => return None,
            }
        }
    }

    /// Routes this child's output to a session.
    pub fn attach(&mut self, sink: Sink) {
        let _ = self.drained.set(sink.wake.clone());
        self.backlog = Some(sink.backlog.clone());
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

    /// True while the process has not exited. Does not reap (with a pidfd),
    /// so the process group id stays ours until the group is signalled.
    pub fn alive(&mut self) -> bool {
        match &self.pidfd {
            Some(fd) => !os::poll_readable([fd.as_raw_fd()], 0).is_ok_and(|r| r[0]),
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

    /// Closes the child's stdin and lets an unattached reader go: a
    /// well-behaved server exits on that alone.
    fn hang_up(&mut self) {
        self.stdin_tx = None;
        self.stdin_direct = None;
        self.sink_tx = None;
        // A reader parked for output room must not hold up the reap: the
        // session may be stopping this child precisely because its client
        // stopped reading.
        self.stopping.store(true, Ordering::Release);
        if let Some(b) = &self.backlog {
            b.wake_all();
        }
    }

    fn signal_group(&self, sig: libc::c_int) {
        if !self.reaped {
            os::signal_group(self.child.id(), sig);
        }
    }

    /// Waits until the leader exits or `timeout` passes, without reaping.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match &self.pidfd {
                Some(fd) => {
                    let ms = left.as_millis().min(i32::MAX as u128) as i32;
                    if os::poll_readable([fd.as_raw_fd()], ms).is_ok_and(|r| r[0]) {
                        return true;
                    }
                }
                // No pidfd (kernel < 5.3, or under valgrind): check every
                // 20 ms within the bound. Only this fallback polls.
                None => {
                    if !self.alive() {
                        return true;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(20)));
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Reaps the leader and joins the threads (after the group is killed).
    fn reap(&mut self) {
        self.signal_group(libc::SIGKILL);
        self.status = self.child.wait().ok();
        self.reaped = true;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ChildProc {
    /// The backstop for every path that did not go through [`stop_all`]
    /// (a failed spawn, a panic): SIGTERM at once, SIGKILL after the grace.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        self.hang_up();
        self.signal_group(libc::SIGTERM);
        self.wait_exit(GRACE);
        self.reap();
    }
}

/// How a stopped child ended, for logs: `exit status 1`, `signal 9`, ...
pub fn describe(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => s.to_string(),
        },
        None => "unknown status".into(),
    }
}

/// Stops one child (see [`stop_all`]) and says how it ended, with the last
/// lines of its stderr: complete, since its stderr reader has been joined.
pub fn stop_one(c: ChildProc) -> (String, String) {
    let mut v = vec![c];
    stop_each(&mut v);
    (describe(v[0].status), v[0].stderr_tail())
}

/// Stops children together (one grace period in all, not one each): close
/// stdin, wait, SIGTERM the group, wait, SIGKILL the group, reap, join.
pub fn stop_all(mut children: Vec<ChildProc>) {
    stop_each(&mut children);
}

fn stop_each(children: &mut [ChildProc]) {
    for c in children.iter_mut() {
        c.hang_up();
    }
    let deadline = Instant::now() + GRACE;
    for c in children.iter_mut() {
        c.wait_exit(deadline.saturating_duration_since(Instant::now()));
    }
    // Signal every group even if its leader left: launchers leave the real
    // server behind as a group member.
    for c in children.iter() {
        c.signal_group(libc::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    for c in children.iter_mut() {
        if !c.wait_exit(deadline.saturating_duration_since(Instant::now())) {
            log::warn!("[{}] did not stop after SIGTERM; killing it", c.name);
        }
    }
    for c in children.iter_mut() {
        c.reap();
    }
}

/// Subtracts `n`, stopping at zero.
fn sub_at_most(count: &AtomicUsize, n: usize) {
    let _ = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_sub(n))
    });
}

/// The writer thread: lines the direct write could not take, in order.
fn write_stdin(
    mut stdin: std::process::ChildStdin,
    lines: Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    drained: Arc<OnceLock<Arc<Wake>>>,
) {
    let wake = || {
        if let Some(w) = drained.get() {
            w.wake();
        }
    };
    for line in lines.iter() {
        let ok = write_all_waiting(&mut stdin, &line).is_ok();
        let was = queued.fetch_sub(line.len(), Ordering::AcqRel);
        if was >= STDIN_BACKLOG_LIMIT && was - line.len() < STDIN_BACKLOG_LIMIT {
            wake();
        }
        if !ok {
            break;
        }
    }
    // The child stopped reading for good: its backlog must not hold the
    // session's client back any more.
    queued.store(0, Ordering::Release);
    wake();
}

/// Writes all of `buf` to a non-blocking pipe, waiting in poll while it is
/// full. Fails once the child has closed its end (EPIPE).
fn write_all_waiting(w: &mut std::process::ChildStdin, mut buf: &[u8]) -> std::io::Result<()> {
    use std::io::ErrorKind;
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                os::poll_events([(w.as_raw_fd(), libc::POLLOUT)], -1)?;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The reader thread: frames and parses the child's stdout and queues each
/// message for its session. The session is woken just before the next read
/// from the pipe, so a burst already read reaches it in one turn and nothing
/// waits behind a blocking read.
fn read_stdout(
    stdout: std::process::ChildStdout,
    sink_rx: Receiver<Sink>,
    max_line: usize,
    name: String,
    stopping: Arc<AtomicBool>,
) {
    // Nothing is read until a session owns the child (a warm spare stays
    // quiet) or a probe asks it something; a session's sink replaces a
    // probe's before the next line.
    let Ok(mut sink) = sink_rx.recv() else { return };
    let mut reader = LineReader::new(stdout, max_line);
    let mut queued = false;
    loop {
        if let Ok(next) = sink_rx.try_recv() {
            sink = next;
        }
        let frame = reader.next_frame_with(|| {
            if std::mem::take(&mut queued) {
                (sink.notify)();
            }
            sink.backlog.wait_for_room(&stopping);
        });
        let event = match frame {
            Some(Frame::Line(bytes)) => match parse_child_owned(bytes) {
                Ok(m) => ChildEvent::Message(m),
                Err((_, bytes)) => {
                    ChildEvent::BadLine(String::from_utf8_lossy(&bytes).into_owned())
                }
            },
            Some(Frame::TooLong) => {
                log::warn!("[{name}] sent a line over {max_line} bytes; dropped");
                continue;
            }
            None => ChildEvent::Closed,
        };
        if let Ok(next) = sink_rx.try_recv() {
            (sink.notify)();
            sink = next;
        }
        let closed = matches!(event, ChildEvent::Closed);
        if let Err(e) = sink.tx.send((sink.index, event)) {
            // A finished probe's sink: the line is dropped (its exit is
            // kept for the session), and the reader waits for the session.
            let Ok(next) = sink_rx.recv() else { return };
            sink = next;
            if closed {
                let _ = sink.tx.send((sink.index, e.into_inner().1));
            }
        }
        if closed {
            (sink.notify)();
            return;
        }
        queued = true;
    }
}

fn read_stderr(
    stderr: std::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    name: String,
) {
    let mut reader = LineReader::new(stderr, 64 * 1024);
    while let Some(frame) = reader.next_frame() {
        let Frame::Line(bytes) = frame else { continue };
        let line = String::from_utf8_lossy(&bytes).trim_end().to_owned();
        log::debug!("[{name}] {line}");
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() == STDERR_TAIL {
            t.pop_front();
        }
        t.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_waiting_for_room_is_let_go_when_its_child_is_stopped() {
        let b = Backlog::new(10);
        b.set(100); // the client stopped reading
        let stopping = Arc::new(AtomicBool::new(false));
        let (b2, s2) = (b.clone(), stopping.clone());
        let reader = std::thread::spawn(move || b2.wait_for_room(&s2));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "parked while over the limit");
        stopping.store(true, Ordering::Release);
        b.wake_all();
        let until = Instant::now() + Duration::from_secs(5);
        while !reader.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            reader.is_finished(),
            "a stop releases it, so the reap can join it"
        );
        reader.join().unwrap();
    }

    #[test]
    fn a_backlog_count_never_wraps_below_zero() {
        let c = AtomicUsize::new(10);
        sub_at_most(&c, 4);
        assert_eq!(c.load(Ordering::Relaxed), 6);
        c.store(0, Ordering::Relaxed); // the writer ended and cleared it
        sub_at_most(&c, 4);
        assert_eq!(c.load(Ordering::Relaxed), 0);
    }

    fn spec(command: &str, args: &[&str]) -> ServerSpec {
        ServerSpec::new("t", command, args)
    }

    /// Alive and not a zombie.
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    }

    #[test]
    fn dropping_a_child_kills_its_whole_group_and_reaps_it() {
        // The shell ignores stdin's end and SIGTERM (its sleeping child
        // inherits that), so only the SIGKILL after the grace stops them.
        let c =
            ChildProc::spawn(&spec("sh", &["-c", "trap '' TERM; sleep 30 & wait"]), 1024).unwrap();
        let pid = c.pid();
        let kids = format!("/proc/{pid}/task/{pid}/children");
        let until = Instant::now() + Duration::from_secs(5);
        let grandchild = loop {
            let k = std::fs::read_to_string(&kids).unwrap_or_default();
            if let Some(g) = k.split_whitespace().next() {
                break g.parse::<u32>().unwrap();
            }
            assert!(Instant::now() < until, "the shell never started its child");
            std::thread::sleep(Duration::from_millis(10));
        };
        let started = Instant::now();
        drop(c);
        assert!(
            started.elapsed() >= GRACE,
            "SIGTERM was ignored: the grace ran out"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "leader reaped"
        );
        // SIGKILL is delivered as the member is next scheduled: on a busy
        // machine it may still be on its way out for a moment.
        let until = Instant::now() + Duration::from_secs(5);
        while running(grandchild) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!running(grandchild), "the group member is killed too");
    }

    #[test]
    fn a_missing_command_is_a_spawn_error_naming_server_and_command() {
        let Err(e) = ChildProc::spawn(&spec("/nonexistent/mcp", &[]), 1024) else {
            panic!("spawned a missing command")
        };
        let msg = e.to_string();
        assert!(
            msg.contains("server t") && msg.contains("/nonexistent/mcp"),
            "{msg}"
        );
    }
}
