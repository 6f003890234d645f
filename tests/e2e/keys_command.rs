//! `--authorized-keys-command` end to end through OpenSSH's `ssh`: a shell
//! script as the command, an empty authorized_keys. The script prints the
//! file `keys` (what each test writes there), records its arguments in
//! `argv`, and behaves as `mode` says (`slow`, `fail`), so one server shows
//! a refusal and then a good login.

use crate::common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// A directory for the script that the server's path check accepts: under
/// the target directory, not /tmp (others may write /tmp). Removed on drop.
struct ScriptDir(PathBuf);

impl ScriptDir {
    /// A fresh directory the server's rule for the command's path accepts
    /// (root's or our own, nothing above it writable by others): under the
    /// target directory, else under $HOME/.cache (a checkout under /tmp has
    /// a world-writable ancestor).
    fn new(tag: &str) -> ScriptDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kc-{tag}-{}-{n}", std::process::id());
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"));
        for base in std::iter::once(PathBuf::from(env!("CARGO_TARGET_TMPDIR"))).chain(home) {
            let p = base.join(&name);
            let _ = std::fs::remove_dir_all(&p);
            if std::fs::create_dir_all(&p).is_ok() && safe(&p) {
                return ScriptDir(p);
            }
            let _ = std::fs::remove_dir_all(&p);
        }
        panic!(
            "no directory for the keys command that the server would accept (tried CARGO_TARGET_TMPDIR, $HOME/.cache)"
        );
    }
}

/// Whether `dir` and everything above it is owned by root or by us and not
/// writable by group or others (our uid: the owner of what we just made).
fn safe(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata(dir).map(|m| m.uid()) else {
        return false;
    };
    let Ok(real) = std::fs::canonicalize(dir) else {
        return false;
    };
    real.ancestors().all(|a| {
        std::fs::metadata(a).is_ok_and(|m| (m.uid() == 0 || m.uid() == me) && m.mode() & 0o022 == 0)
    })
}

impl Drop for ScriptDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server and the directory of its command.
struct Kc {
    srv: Server,
    _script: ScriptDir,
}

impl std::ops::Deref for Kc {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.srv
    }
}

/// Servers `a` and `b`, no authorized key, and the script as the command
/// with `args` after it; `extra` flags.
fn start(args: &str, extra: &[&str]) -> Kc {
    let mut a = fixture("a", &[]);
    a["namePrefix"] = json!("a.");
    let mut b = fixture("b", &[]);
    b["namePrefix"] = json!("b.");
    let (dir, key) = Server::files(json!({"a": a, "b": b}));
    let d = dir.path();
    std::fs::write(d.join("authorized_keys"), "").unwrap();
    std::fs::write(d.join("keys"), "").unwrap();
    let script_dir = ScriptDir::new("cmd");
    let script = script_dir.0.join("keys-command");
    let text = format!(
        "#!/bin/sh\nd={}\nprintf '%s\\n' \"$@\" > \"$d/argv\"\n\
         case \"$(cat \"$d/mode\" 2>/dev/null)\" in\n\
         slow) echo $$ > \"$d/pid\"; exec sleep 30;;\n\
         fail) cat \"$d/keys\"; echo 'directory unreachable' >&2; exit 1;;\n\
         bg) cat \"$d/keys\"; sleep 30 & echo $! > \"$d/pid\"; exit 0;;\n\
         esac\nexec cat \"$d/keys\"\n",
        d.display()
    );
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cmd = format!("{} {args}", script.display());
    let mut all = vec![
        "--authorized-keys-command",
        cmd.as_str(),
        "--warm-spares",
        "0",
    ];
    all.extend_from_slice(extra);
    Kc {
        srv: Server::start_in(dir, key, &all),
        _script: script_dir,
    }
}

fn public(srv: &Server) -> String {
    std::fs::read_to_string(format!("{}.pub", srv.key.display()))
        .unwrap()
        .trim()
        .to_owned()
}

/// What the script prints next.
fn print(srv: &Server, keys: &str) {
    std::fs::write(srv.path("keys"), keys).unwrap();
}

fn mode(srv: &Server, mode: &str) {
    std::fs::write(srv.path("mode"), mode).unwrap();
}

fn login(srv: &Server) -> (Output, Vec<Value>) {
    let out = openssh(
        srv.port,
        &srv.key,
        &["mcp@127.0.0.1"],
        &format!("{INIT}\n{LIST}\n"),
    );
    let answers = json_lines(&out.stdout);
    (out, answers)
}

/// The tool names a login sees; panics if refused.
fn tools(srv: &Server) -> Vec<String> {
    let (out, answers) = login(srv);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "refused: {err}\n{}", srv.log());
    let list = answers
        .iter()
        .find(|a| a["id"] == 1)
        .unwrap_or_else(|| panic!("{answers:?}"));
    let mut names = names(list, "tools");
    names.sort();
    names
}

/// The login is refused and the log says `why`.
fn refused(srv: &Server, why: &str) {
    let (out, answers) = login(srv);
    assert!(!out.status.success(), "got in: {answers:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    // Why the command refused is the subject: kept as a log assertion.
    assert!(srv.wait_log(why), "no {why:?} in the log:\n{}", srv.log());
}

#[test]
fn a_key_the_command_prints_gets_in_with_that_lines_options() {
    let srv = start("%u", &[]);
    refused(&srv, "nor listed by the AuthorizedKeysCommand");
    let key = public(&srv);
    print(
        &srv,
        &format!(
            "# from the directory\n{}\nenvironment=\"MCP_TOOLS=a.e*\" {key}\n",
            {
                let (_, other) = client_key(srv.dir.path(), "other");
                other
            }
        ),
    );
    assert_eq!(tools(&srv), ["a.echo"]);
    assert!(srv.log().contains("the AuthorizedKeysCommand lists it"));
    // A line whose options the server refuses refuses the key.
    print(&srv, &format!("permitopen=\"h:1\" {key}\n"));
    refused(&srv, "its line 1 for this key was refused");
    print(&srv, &format!("{key}\n"));
    assert_eq!(tools(&srv).len(), 14);
}

#[test]
fn tokens_are_expanded_into_the_commands_arguments() {
    let srv = start("%u %f %t %k %% x%%y 'a b'", &[]);
    let key = public(&srv);
    print(&srv, &format!("{key}\n"));
    assert_eq!(tools(&srv).len(), 14);
    let argv = std::fs::read_to_string(srv.path("argv")).unwrap();
    let argv: Vec<&str> = argv.lines().collect();
    let fp = ssh_keygen(&["-lf", &format!("{}.pub", srv.key.display())]);
    let fp = fp.split_whitespace().nth(1).unwrap().to_owned();
    let b64 = key.split_whitespace().nth(1).unwrap();
    assert_eq!(
        argv,
        ["mcp", &fp, "ssh-ed25519", b64, "%", "x%y", "a b"],
        "{}",
        srv.log()
    );
}

#[test]
fn a_slow_command_is_killed_at_its_timeout_and_the_next_login_is_served() {
    let srv = start("", &["--authorized-keys-command-timeout", "2"]);
    print(&srv, &format!("{}\n", public(&srv)));
    mode(&srv, "slow");
    refused(
        &srv,
        "did not finish within 2.0 s; its process group was killed",
    );
    // The command's process is gone (killed and reaped, not left to run).
    let pid = std::fs::read_to_string(srv.path("pid")).unwrap();
    let proc_dir = format!("/proc/{}", pid.trim());
    assert!(
        eventually(|| !Path::new(&proc_dir).exists()),
        "the command {pid} still runs"
    );
    mode(&srv, "");
    assert_eq!(tools(&srv).len(), 14);
}

#[test]
fn a_failing_command_refuses_even_a_key_it_prints() {
    let srv = start("", &[]);
    print(&srv, &format!("{}\n", public(&srv)));
    mode(&srv, "fail");
    refused(
        &srv,
        "the AuthorizedKeysCommand failed: it exited with status 1: \"directory unreachable\"",
    );
    mode(&srv, "");
    assert_eq!(tools(&srv).len(), 14);
}

#[test]
fn a_command_printing_junk_refuses() {
    let srv = start("", &[]);
    print(&srv, "ssh-ed25519 not-base64\n<html>error</html>\n\n");
    refused(&srv, "nor listed by the AuthorizedKeysCommand");
    std::fs::write(srv.path("keys"), b"\xff\xfe\x00binary").unwrap();
    refused(&srv, "its output is not UTF-8");
    let key = public(&srv);
    let big = format!("# {}\n{key}\n", "x".repeat(70 * 1024));
    print(&srv, &big);
    refused(&srv, "it printed more than 64 KiB");
    print(&srv, &format!("{key}\n"));
    assert_eq!(tools(&srv).len(), 14);
}

/// `--revoked-keys` applies to keys the command lists, and a key in
/// authorized_keys never runs the command.
#[test]
fn revoked_keys_apply_and_listed_keys_skip_the_command() {
    let dir = TempDir::new("kc-revoked");
    let revoked = dir.path().join("revoked");
    std::fs::write(&revoked, "").unwrap();
    let srv = start("%f", &["--revoked-keys", revoked.to_str().unwrap()]);
    let key = public(&srv);
    print(&srv, &format!("{key}\n"));
    std::fs::write(&revoked, format!("{key}\n")).unwrap();
    refused(&srv, "key SHA256:");
    assert!(srv.log().contains("is revoked"), "{}", srv.log());
    std::fs::write(&revoked, "").unwrap();
    assert_eq!(tools(&srv).len(), 14);
    // Listed in authorized_keys: the command is not asked (it would fail).
    std::fs::write(srv.path("authorized_keys"), format!("{key}\n")).unwrap();
    mode(&srv, "fail");
    std::fs::remove_file(srv.path("argv")).unwrap();
    assert_eq!(tools(&srv).len(), 14);
    assert!(!srv.path("argv").exists(), "the command ran");
}

/// A command that prints the key and exits 0 while a child it left behind
/// still holds its stdout is answered by what it printed (no wait for that
/// child's end of file), and the child is killed with its group.
#[test]
fn a_command_leaving_a_child_on_its_stdout_is_answered_and_the_child_killed() {
    let srv = start("", &[]);
    print(&srv, &format!("{}\n", public(&srv)));
    mode(&srv, "bg");
    assert_eq!(tools(&srv).len(), 14);
    assert!(srv.wait_log("exited leaving processes that hold its output"));
    let pid = std::fs::read_to_string(srv.path("pid")).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    // Gone, or a zombie waiting for init (killed either way).
    let ended = || {
        std::fs::read_to_string(&stat).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    };
    assert!(eventually(ended), "the command's sleep {pid} still runs");
}

/// The command's path is checked like sshd's `safe_path` at start-up: a
/// directory above it that others can write stops the server (exit 2),
/// naming that directory.
#[test]
fn a_command_in_a_writable_directory_stops_the_server_at_start_up() {
    let (dir, _) = Server::files(json!({"a": fixture("a", &[])}));
    let script_dir = ScriptDir::new("unsafe");
    let open = script_dir.0.join("open");
    std::fs::create_dir_all(&open).unwrap();
    let script = open.join("cmd");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o775)).unwrap();
    let out = std::process::Command::new("timeout")
        .arg("20")
        .arg(server_bin())
        .args(["--host", "127.0.0.1", "--port", "0", "--servers-config"])
        .arg(dir.path().join("servers_config.json"))
        .arg("--authorized-clients")
        .arg(dir.path().join("authorized_keys"))
        .arg("--server-key")
        .arg(dir.path().join("hostkey/host_ed25519"))
        .arg("--authorized-keys-command")
        .arg(&script)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let why = format!("{} is writable by group or others", open.display());
    assert!(err.contains(&why), "{err}");
}
