//! `--authorized-keys-command CMD` (sshd's `AuthorizedKeysCommand`): a
//! program that prints the authorized_keys lines for a login, for keys kept
//! in a directory (LDAP, SSSD) instead of a file on every gateway.
//!
//! `CMD` is split into arguments as sshd does (spaces separate; `"..."` and
//! `'...'` quote; a backslash escapes a quote, a backslash or a space; no
//! shell), its first word must be an absolute path that passes sshd's
//! `safe_path` check (at start-up and before each run), and each argument
//! has its tokens expanded: `%u` the user name, `%f` the key's fingerprint
//! (`SHA256:...`), `%t` its type, `%k` its base64 blob, `%%` a `%`. It runs
//! as the server's user, with no stdin, only `PATH` in its environment, in
//! a process group of its own, killed whole when the run ends.
//!
//! Its output (at most 64 KiB) is read as authorized_keys lines with
//! options; the key gets in only if a line lists it, with what every such
//! line allows. It must exit 0 within the timeout (5 s by default, and
//! never past the login deadline): a command that fails, is killed by a
//! signal, prints too much or no line for the key, or is still running at
//! the deadline (its whole group is then killed and reaped) refuses that
//! login, with the reason in the log. Its exit is the end of the run: what
//! it left holding its stdout is not waited for (see `run`). Waiting is one `poll` over its pipes
//! and a pidfd, bounded by the deadline: no sleep.

use super::authorized::{Grant, Listing, parse_file};
use crate::os;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most output read from the command; more refuses the login.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Most of its stderr kept for the log.
const MAX_STDERR: usize = 1024;
/// The default `--authorized-keys-command-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured command: its argument templates and its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysCommand {
    argv: Vec<String>,
    timeout: Duration,
}

/// sshd's `argv_split`: spaces and tabs separate arguments; single or
/// double quotes group; a backslash escapes a quote, a backslash, or (outside
/// quotes) a space, and is kept before anything else.
fn split(cmd: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut arg = String::new();
    let (mut quote, mut in_arg) = (None::<char>, false);
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' if quote.is_none() => {
                if in_arg {
                    args.push(std::mem::take(&mut arg));
                    in_arg = false;
                }
                continue;
            }
            '\\' => match chars.peek() {
                Some(&n) if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') => {
                    arg.push(n);
                    chars.next();
                }
                _ => arg.push('\\'),
            },
            '\'' | '"' if quote.is_none() => quote = Some(c),
            c if quote == Some(c) => quote = None,
            c => arg.push(c),
        }
        in_arg = true;
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_arg {
        args.push(arg);
    }
    Ok(args)
}

/// `arg` with its `%` tokens replaced; Err names an unknown one.
fn expand(arg: &str, user: &str, fp: &str, kind: &str, b64: &str) -> Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(user),
            Some('f') => out.push_str(fp),
            Some('t') => out.push_str(kind),
            Some('k') => out.push_str(b64),
            Some('%') => out.push('%'),
            Some(t) => return Err(format!("unknown token %{t} (known: %u %f %t %k %%)")),
            None => return Err("a lone % at the end of an argument (write %% for %)".into()),
        }
    }
    Ok(out)
}

/// Why a file or directory with owner `uid` and `mode` may not decide who
/// logs in, as sshd's `safe_path`: it must be owned by root or by the
/// server's user `server_uid`, and neither group nor others may write it.
fn unsafe_because(path: &Path, uid: u32, mode: u32, server_uid: u32) -> Option<String> {
    let p = path.display();
    if uid != 0 && uid != server_uid {
        return Some(format!(
            "{p} is owned by uid {uid}, neither root nor the server's uid {server_uid}: \
             its owner decides who logs in"
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "{p} is writable by group or others (mode {:o}): anyone who can change it \
             decides who logs in; run chmod go-w on it",
            mode & 0o7777
        ));
    }
    None
}

/// sshd's `safe_path`: `program` resolved through its symlinks must be a
/// file, and it and every directory above it must pass `unsafe_because`.
/// Returns the resolved path, the one to run.
fn check_path(program: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(program).map_err(|e| format!("{}: {e}", program.display()))?;
    let uid = os::euid();
    for (i, p) in real.ancestors().enumerate() {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if i == 0 && !meta.is_file() {
            return Err(format!("{} is not a file", p.display()));
        }
        if let Some(why) = unsafe_because(p, meta.uid(), meta.mode(), uid) {
            return Err(if real == program {
                why
            } else {
                format!(
                    "{} resolves to {}: {why}",
                    program.display(),
                    real.display()
                )
            });
        }
    }
    Ok(real)
}

/// Why a run gave no answer, for the log.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended with {status}"),
    }
}

impl KeysCommand {
    /// Checks `cmd` at start-up: arguments, tokens, and an absolute path
    /// that passes `check_path` (a command others could replace would let
    /// them in).
    pub fn new(cmd: &str, timeout: Duration) -> Result<KeysCommand, String> {
        let argv = split(cmd)?;
        let Some(program) = argv.first() else {
            return Err("the command is empty".into());
        };
        if !program.starts_with('/') {
            return Err(format!("{program:?} is not an absolute path"));
        }
        for a in &argv {
            expand(a, "u", "f", "t", "k")?;
        }
        check_path(Path::new(program))?;
        if timeout.is_zero() {
            return Err("the timeout must be positive".into());
        }
        Ok(KeysCommand { argv, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// What the command grants the key `kind`/`blob` of `user`, run until
    /// `deadline` at the latest (and its own timeout): Ok(None) when its
    /// output lists the key nowhere, Err when the run itself failed.
    pub fn lookup(
        &self,
        user: &str,
        kind: &str,
        blob: &[u8],
        deadline: Instant,
    ) -> Result<Option<Grant>, String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
        let fp = super::fingerprint(blob);
        let args = self
            .argv
            .iter()
            .map(|a| expand(a, user, &fp, kind, &b64))
            .collect::<Result<Vec<_>, _>>()?;
        let deadline = deadline.min(Instant::now() + self.timeout);
        if deadline <= Instant::now() {
            return Err("no time was left before the login deadline".into());
        }
        // Checked again before each run: a path made unsafe since start-up
        // refuses the login rather than run what others may have replaced.
        let program = check_path(Path::new(&args[0]))?;
        let out = run(&program, &args, deadline)?;
        let text = String::from_utf8(out).map_err(|_| "its output is not UTF-8".to_owned())?;
        let source = Path::new("AuthorizedKeysCommand");
        let mut listings = Vec::new();
        for e in parse_file(&text, source)
            .into_iter()
            .filter(|e| e.key.kind == kind && e.key.blob == blob)
        {
            match e.options {
                Ok(options) => listings.push(Listing {
                    path: PathBuf::from(&args[0]),
                    line: e.line,
                    comment: e.key.comment,
                    options,
                }),
                Err(why) => {
                    return Err(format!(
                        "its line {} for this key was refused: {why}",
                        e.line
                    ));
                }
            }
        }
        Ok(Grant::of(listings))
    }
}

/// The AuthorizedKeysCommand's part of an open session's re-check: it runs
/// again every `every` on a thread of its own (joined on drop, so never
/// past the session: a run ends by its timeout). The session ends when a
/// run succeeds without listing the key; a run that fails or times out is
/// logged and the last grant stays (a directory outage does not end every
/// open session; it refuses new logins).
pub struct Rerun {
    cmd: KeysCommand,
    user: String,
    kind: String,
    blob: Vec<u8>,
    every: Duration,
    state: Mutex<RerunState>,
}

struct RerunState {
    /// What the last successful run granted.
    grant: Grant,
    next: Instant,
    running: Option<JoinHandle<Result<Option<Grant>, String>>>,
}

impl Rerun {
    pub fn new(
        cmd: &KeysCommand,
        user: &str,
        kind: &str,
        blob: &[u8],
        grant: Grant,
        every: Duration,
    ) -> Rerun {
        Rerun {
            cmd: cmd.clone(),
            user: user.to_owned(),
            kind: kind.to_owned(),
            blob: blob.to_vec(),
            every,
            state: Mutex::new(RerunState {
                grant,
                next: Instant::now() + every,
                running: None,
            }),
        }
    }

    /// The grant in force: takes a finished run's answer, starts the next
    /// run when one is due. Err when a run no longer lists the key.
    pub fn grant(&self) -> Result<Grant, String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.running.as_ref().is_some_and(|h| h.is_finished()) {
            let said = st.running.take().map(JoinHandle::join);
            st.next = Instant::now() + self.every;
            match said {
                Some(Ok(Ok(Some(g)))) => st.grant = g,
                Some(Ok(Ok(None))) => {
                    return Err("the AuthorizedKeysCommand no longer lists it".into());
                }
                Some(Ok(Err(why))) => log::warn!(
                    "re-checking a key of user {:?}: the AuthorizedKeysCommand failed: {why}; \
                     the session goes on",
                    self.user
                ),
                Some(Err(_)) | None => log::error!("an AuthorizedKeysCommand re-check panicked"),
            }
        }
        if st.running.is_none() && Instant::now() >= st.next {
            let (cmd, user) = (self.cmd.clone(), self.user.clone());
            let (kind, blob) = (self.kind.clone(), self.blob.clone());
            let spawned = std::thread::Builder::new()
                .name("keys-command".into())
                .spawn(move || {
                    let deadline = Instant::now() + cmd.timeout;
                    cmd.lookup(&user, &kind, &blob, deadline)
                });
            match spawned {
                Ok(h) => st.running = Some(h),
                Err(e) => {
                    log::warn!("cannot re-run the AuthorizedKeysCommand: {e}");
                    st.next = Instant::now() + self.every;
                }
            }
        }
        Ok(st.grant.clone())
    }
}

impl Drop for Rerun {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = st.running.take() {
            let _ = h.join();
        }
    }
}

/// The environment the command gets, and only it: the server's own (its
/// options, credentials in variables) is not the command's business.
const PATH: &str = "/usr/bin:/bin";

/// A started command.
struct Run {
    child: Child,
    /// Its process group (its pid: `process_group(0)`), killed as a whole.
    group: u32,
}

impl Drop for Run {
    /// Whatever happened, the group is gone and the child reaped. The group
    /// is killed whether or not its leader still runs (what it left behind
    /// goes too); the leader is never reaped before this, so the group id
    /// cannot name anyone else's group yet.
    fn drop(&mut self) {
        os::signal_group(self.group, libc::SIGKILL);
        // Killed or exited: the wait returns at once.
        let _ = self.child.wait();
    }
}

/// A command's output as read so far, and which of its pipes are open.
struct Output {
    buf: Vec<u8>,
    out: Vec<u8>,
    err: Vec<u8>,
    out_open: bool,
    err_open: bool,
}

impl Output {
    /// Reads what is ready on the open pipes of those named ([stdout,
    /// stderr]): stdout up to [`MAX_OUTPUT`] (more is an error), stderr's
    /// first [`MAX_STDERR`] bytes.
    fn read(
        &mut self,
        stdout: std::os::fd::BorrowedFd,
        stderr: std::os::fd::BorrowedFd,
        which: [bool; 2],
    ) -> Result<(), String> {
        if which[0] && self.out_open {
            let limit = Some(MAX_OUTPUT);
            self.out_open = !drain(stdout, &mut self.buf, &mut self.out, MAX_OUTPUT, limit)?;
        }
        if which[1] && self.err_open {
            self.err_open = !drain(stderr, &mut self.buf, &mut self.err, MAX_STDERR, None)?;
        }
        Ok(())
    }
}

/// Reads `fd` until it would block or ends, appending to `to` up to `keep`
/// bytes (Err past `limit`, when given); true at its end.
fn drain(
    fd: std::os::fd::BorrowedFd,
    buf: &mut [u8],
    to: &mut Vec<u8>,
    keep: usize,
    limit: Option<usize>,
) -> Result<bool, String> {
    // Bounded: what a writer adds while this reads stops at `limit`, or at
    // 64 KiB read for stderr.
    let mut read = 0;
    loop {
        match os::read_fd(fd, buf) {
            Ok(0) => return Ok(true),
            Ok(n) if limit.is_some_and(|l| to.len() + n > l) => {
                return Err(format!("it printed more than {} KiB", MAX_OUTPUT / 1024));
            }
            Ok(n) => {
                let room = keep.saturating_sub(to.len()).min(n);
                to.extend_from_slice(&buf[..room]);
                read += n;
                if limit.is_none() && read > MAX_OUTPUT {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read its output: {e}")),
        }
    }
}

/// Runs `program` (named `args[0]` to itself) with `args[1..]` until
/// `deadline`: its stdout if it exited 0 in time, or why not. The child and
/// its group never outlive the call.
///
/// The answer is the leader's: once it has exited, what is in its pipes is
/// read and the rest of its group is killed. A command that exits 0 while
/// something it started still holds its stdout (`helper &`) is answered
/// with what was printed by then, where sshd would wait for that end of
/// file: waiting could only end at the timeout.
fn run(program: &Path, args: &[String], deadline: Instant) -> Result<Vec<u8>, String> {
    let allowed = deadline.saturating_duration_since(Instant::now());
    let mut child = Command::new(program)
        .arg0(&args[0])
        .args(&args[1..])
        .env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let run = Run {
        group: child.id(),
        child,
    };
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        return Err("cannot read its output".into());
    };
    let pidfd = os::pidfd_open(run.group);
    let io_err = |e: io::Error| format!("cannot read its output: {e}");
    os::set_nonblocking(stdout.as_fd()).map_err(io_err)?;
    os::set_nonblocking(stderr.as_fd()).map_err(io_err)?;
    let mut o = Output {
        buf: vec![0u8; 16 * 1024],
        out: Vec::new(),
        err: Vec::new(),
        out_open: true,
        err_open: true,
    };
    let mut exited = None;
    let status = loop {
        if exited.is_none() && pidfd.is_none() && !o.out_open && !o.err_open {
            // No pidfd (Linux before 5.3): its pipes are closed, so only its
            // exit is left to wait for.
            exited = os::peek_exit(run.group, true).map_err(|e| e.to_string())?;
        }
        if let Some(status) = exited {
            // Still unreaped (the group id is ours): take what is in its
            // pipes, then end whatever holds them.
            o.read(stdout.as_fd(), stderr.as_fd(), [true, true])?;
            if o.out_open || o.err_open {
                log::warn!(
                    "the AuthorizedKeysCommand {} exited leaving processes that hold its output; \
                     its process group was killed",
                    args[0]
                );
            }
            os::signal_group(run.group, libc::SIGKILL);
            break status;
        }
        let timeout = os::poll_timeout(Some(deadline));
        if timeout == 0 {
            return Err(format!(
                "it did not finish within {:.1} s; its process group was killed",
                allowed.as_secs_f64()
            ));
        }
        let fd = |open: bool, raw: i32| if open { raw } else { -1 };
        let ready = os::poll_events(
            [
                (fd(o.out_open, stdout.as_raw_fd()), libc::POLLIN),
                (fd(o.err_open, stderr.as_raw_fd()), libc::POLLIN),
                (pidfd.as_ref().map_or(-1, |p| p.as_raw_fd()), libc::POLLIN),
            ],
            timeout,
        )
        .map_err(|e| format!("poll: {e}"))?;
        o.read(stdout.as_fd(), stderr.as_fd(), [ready[0], ready[1]])?;
        if ready[2] {
            // Readable once it exited, and from then on: it is not polled
            // again (the loop ends on the next turn).
            exited = os::peek_exit(run.group, false).map_err(|e| e.to_string())?;
        }
    };
    drop(run);
    if status.success() {
        return Ok(o.out);
    }
    let err = String::from_utf8_lossy(&o.err);
    let err = err.trim();
    if err.is_empty() {
        Err(format!("it {}", describe(status)))
    } else {
        Err(format!("it {}: {err:?}", describe(status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_sshd() {
        let s = |c: &str| split(c).unwrap();
        assert_eq!(s("  /bin/a  b\tc "), ["/bin/a", "b", "c"]);
        assert_eq!(
            s(r#"/x "a b" 'c "d"' e\ f"#),
            ["/x", "a b", "c \"d\"", "e f"]
        );
        assert_eq!(s(r#"/x a\\b a\nb "q\"q""#), ["/x", "a\\b", "a\\nb", "q\"q"]);
        assert_eq!(s(r#"/x """#), ["/x", ""]);
        assert_eq!(s(""), Vec::<String>::new());
        assert!(split("/x \"a").is_err());
        assert!(split("/x 'a").is_err());
    }

    #[test]
    fn expands_tokens() {
        let e = |a: &str| expand(a, "mcp", "SHA256:x", "ssh-ed25519", "AAAA");
        assert_eq!(
            e("%u-%f-%t-%k-%%u").unwrap(),
            "mcp-SHA256:x-ssh-ed25519-AAAA-%u"
        );
        assert_eq!(e("plain").unwrap(), "plain");
        assert!(e("%h").unwrap_err().contains("unknown token %h"));
        assert!(e("50%").is_err());
    }

    #[test]
    fn checks_the_command_at_start() {
        assert!(KeysCommand::new("", DEFAULT_TIMEOUT).is_err());
        assert!(
            KeysCommand::new("cat %u", DEFAULT_TIMEOUT)
                .unwrap_err()
                .contains("absolute")
        );
        assert!(KeysCommand::new("/bin/echo %x", DEFAULT_TIMEOUT).is_err());
        assert!(KeysCommand::new("/nonexistent/x", DEFAULT_TIMEOUT).is_err());
        assert!(KeysCommand::new("/bin/echo %u %%", DEFAULT_TIMEOUT).is_ok());
        assert!(KeysCommand::new("/bin/echo", Duration::ZERO).is_err());
    }

    /// A fresh directory that `check_path` accepts: under the target
    /// directory (the test binary is in target/debug/deps) when nothing above
    /// it is writable by others, else under $HOME/.cache (a checkout under
    /// /tmp, as a CI clone may be, has a sticky, world-writable ancestor).
    fn safe_dir(tag: &str) -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let target = exe.ancestors().nth(3).unwrap().join("tmp");
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"));
        let name = format!("m2m-kc-{tag}-{}", std::process::id());
        for base in std::iter::once(target).chain(home) {
            let dir = base.join(&name);
            let _ = std::fs::remove_dir_all(&dir);
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let probe = dir.join("probe");
            std::fs::write(&probe, "").unwrap();
            if check_path(&probe).is_ok() {
                std::fs::remove_file(&probe).unwrap();
                return dir;
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!(
            "no directory here for a keys command that sshd's rule accepts (tried target/tmp, $HOME/.cache)"
        );
    }

    fn chmod(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_owner_must_be_root_or_the_server() {
        let p = Path::new("/x/cmd");
        assert_eq!(unsafe_because(p, 0, 0o100755, 1000), None);
        assert_eq!(unsafe_because(p, 1000, 0o40755, 1000), None);
        let e = unsafe_because(p, 1001, 0o100755, 1000).unwrap();
        assert!(e.contains("/x/cmd is owned by uid 1001"), "{e}");
        let e = unsafe_because(p, 0, 0o40775, 1000).unwrap();
        assert!(
            e.contains("/x/cmd is writable by group or others (mode 775)"),
            "{e}"
        );
        assert!(unsafe_because(p, 1000, 0o41777, 1000).is_some());
        assert!(unsafe_because(p, 0, 0o100757, 0).is_some());
    }

    #[test]
    fn every_directory_above_the_command_is_checked_through_symlinks() {
        let dir = safe_dir("path");
        let (open, safe) = (dir.join("open"), dir.join("safe"));
        std::fs::create_dir_all(&open).unwrap();
        std::fs::create_dir_all(&safe).unwrap();
        let cmd = open.join("cmd");
        std::fs::write(&cmd, "#!/bin/sh\necho\n").unwrap();
        chmod(&cmd, 0o755);
        let t = DEFAULT_TIMEOUT;
        let line = cmd.display().to_string();
        assert!(KeysCommand::new(&line, t).is_ok());
        // A group-writable parent directory.
        chmod(&open, 0o775);
        let e = KeysCommand::new(&line, t).unwrap_err();
        assert!(
            e.starts_with(&format!("{} is writable by group", open.display())),
            "{e}"
        );
        // A symlink from a safe directory into it: the target is checked.
        let link = safe.join("link");
        std::os::unix::fs::symlink(&cmd, &link).unwrap();
        let e = KeysCommand::new(&link.display().to_string(), t).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "{} resolves to {}: {} is writable",
                link.display(),
                cmd.display(),
                open.display()
            )),
            "{e}"
        );
        // Made unsafe after start-up: the next run refuses.
        chmod(&open, 0o755);
        let kc = KeysCommand::new(&line, t).unwrap();
        chmod(&open, 0o757);
        let e = kc
            .lookup("u", "ssh-ed25519", b"k", Instant::now() + t)
            .unwrap_err();
        assert!(e.contains("is writable by group or others"), "{e}");
        assert!(
            KeysCommand::new(&dir.display().to_string(), t)
                .unwrap_err()
                .contains("not a file")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_command_gets_only_path_in_its_environment() {
        let args = ["env".to_owned()];
        let out = run(
            Path::new("/usr/bin/env"),
            &args,
            Instant::now() + DEFAULT_TIMEOUT,
        );
        assert_eq!(
            String::from_utf8(out.unwrap()).unwrap(),
            "PATH=/usr/bin:/bin\n"
        );
    }

    /// True once `pid` is gone (or only a zombie left for init), 10 s at most.
    fn ends(pid: &str) -> bool {
        let stat = format!("/proc/{pid}/stat");
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            match std::fs::read_to_string(&stat) {
                Err(_) => return true,
                Ok(s)
                    if s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                {
                    return true;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        false
    }

    #[test]
    fn a_command_that_exits_leaving_a_child_on_its_stdout_is_answered_and_its_group_killed() {
        let dir = safe_dir("bg");
        let pid = dir.join("pid");
        let script = format!("echo key; sleep 30 & echo $! > {}; exit 0", pid.display());
        // Before the fix: a spin until the 2 s deadline, a timeout, and the
        // sleep left running.
        assert_eq!(sh(&script).unwrap(), b"key\n");
        let pid = std::fs::read_to_string(&pid).unwrap();
        assert!(ends(pid.trim()), "sleep {pid} still runs");
        // The same with a failing exit: refused with its status.
        let script = format!(
            "sleep 30 & echo $! > {}; exit 4",
            dir.join("pid2").display()
        );
        assert_eq!(sh(&script).unwrap_err(), "it exited with status 4");
        let pid = std::fs::read_to_string(dir.join("pid2")).unwrap();
        assert!(ends(pid.trim()), "sleep {pid} still runs");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Asks `rerun` until `done` holds for its answer and the run count
    /// (10 s at most); every answer until then must be Ok.
    fn until(rerun: &Rerun, runs: &Path, done: impl Fn(&Grant, usize) -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let g = rerun.grant().expect("still trusted");
            let n = std::fs::read_to_string(runs).map_or(0, |t| t.lines().count());
            if done(&g, n) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn reruns_follow_the_commands_answers_and_keep_the_grant_on_failure() {
        let dir = safe_dir("rerun");
        let (keys, runs) = (dir.join("keys"), dir.join("runs"));
        let (_, line) = crate::keys::generate_ed25519("k");
        let key = crate::keys::parse_line(&line).unwrap().0;
        std::fs::write(&keys, format!("environment=\"MCP_TOOLS=a\" {line}\n")).unwrap();
        let script = format!(
            "/bin/sh -c 'echo run >> {}; exec cat {}'",
            runs.display(),
            keys.display()
        );
        let cmd = KeysCommand::new(&script, DEFAULT_TIMEOUT).unwrap();
        let first = cmd
            .lookup("u", &key.kind, &key.blob, Instant::now() + DEFAULT_TIMEOUT)
            .unwrap()
            .unwrap();
        assert!(first.allows_tool("a") && !first.allows_tool("b"));
        let rerun = Rerun::new(&cmd, "u", &key.kind, &key.blob, first, Duration::ZERO);
        // A new answer replaces the grant.
        std::fs::write(&keys, format!("{line}\n")).unwrap();
        assert!(until(&rerun, &runs, |g, _| g.allows_tool("b")));
        // Failing runs (cat of a missing file exits 1) keep it.
        std::fs::remove_file(&keys).unwrap();
        let n = std::fs::read_to_string(&runs).unwrap().lines().count();
        assert!(until(&rerun, &runs, |_, now| now >= n + 3));
        // A run that no longer lists the key ends it.
        std::fs::write(&keys, "").unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        let e = loop {
            match rerun.grant() {
                Err(e) => break e,
                Ok(_) if Instant::now() > end => panic!("still trusted"),
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        assert_eq!(e, "the AuthorizedKeysCommand no longer lists it");
        drop(rerun);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn sh(script: &str) -> Result<Vec<u8>, String> {
        let args = ["sh", "-c", script].map(String::from);
        run(
            Path::new("/bin/sh"),
            &args,
            Instant::now() + Duration::from_secs(2),
        )
    }

    #[test]
    fn runs_fail_and_time_out_without_leaving_anything() {
        assert_eq!(sh("echo hi").unwrap(), b"hi\n");
        assert_eq!(sh("exit 3").unwrap_err(), "it exited with status 3");
        assert_eq!(
            sh("echo oops >&2; exit 1").unwrap_err(),
            "it exited with status 1: \"oops\""
        );
        assert!(sh("kill -9 $$").unwrap_err().contains("signal 9"));
        let big = sh("head -c 70000 /dev/zero").unwrap_err();
        assert!(big.contains("more than 64 KiB"), "{big}");
        // A child that outlives the shell holds the pipe: the group is killed.
        let start = Instant::now();
        let e = sh("sleep 30 & echo started; wait").unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
        // Closing stdout early and lingering still counts until exit.
        let e = sh("exec >&- 2>&-; sleep 30").unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(sh("/nonexistent").is_err());
    }
}
