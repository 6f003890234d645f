//! Client keys, SSH logins through the ssh2 crate and OpenSSH, and raw TCP
//! peers that never get as far as SSH.

use super::WAIT;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Writes a fresh ed25519 client key (OpenSSH format, 0600, `.pub` beside
/// it) and returns (private key path, public line).
pub fn client_key(dir: &Path, name: &str) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let (private, public) = m2m_mcp_server_ssh_server::keys::generate_ed25519(name);
    let p = dir.join(name);
    std::fs::write(&p, private).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join(format!("{name}.pub")), format!("{public}\n")).unwrap();
    (p, public)
}

/// An ssh2 session to the test server after key exchange, not logged in;
/// every call on it is bounded by `timeout`.
pub fn ssh2_handshake(port: u16, timeout: Duration) -> ssh2::Session {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    ssh2_handshake_on(tcp, timeout).expect("key exchange")
}

/// Key exchange on an open connection.
pub fn ssh2_handshake_on(tcp: TcpStream, timeout: Duration) -> Result<ssh2::Session, ssh2::Error> {
    let mut sess = ssh2::Session::new().unwrap();
    sess.set_tcp_stream(tcp);
    sess.set_timeout(timeout.as_millis() as u32);
    sess.handshake()?;
    Ok(sess)
}

/// Logs in as `mcp` with `key`: the session, or why not.
pub fn try_login(port: u16, key: &Path) -> Result<ssh2::Session, ssh2::Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let sess = ssh2_handshake_on(tcp, WAIT)?;
    sess.userauth_pubkey_file("mcp", None, key, None)?;
    assert!(sess.authenticated());
    Ok(sess)
}

/// An authenticated ssh2 session (panics if the login fails).
pub fn ssh2_session(port: u16, key: &Path) -> ssh2::Session {
    try_login(port, key).expect("public-key auth")
}

/// `ssh -T` to the test server with `key`, under a 60 s bound (the 40 MB
/// flow-control runs take 13 s on an idle two-CPU machine, up to twice that
/// under load); `extra` ends with the destination (and any command).
pub fn openssh_command(port: u16, key: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg("ssh")
        .args(["-T", "-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-i")
        .arg(key)
        .args(extra);
    cmd
}

/// Runs OpenSSH `ssh -T` against the server with `input` on stdin.
pub fn openssh(port: u16, key: &Path, extra: &[&str], input: &str) -> std::process::Output {
    let mut child = openssh_command(port, key, extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    child.wait_with_output().unwrap()
}

/// Runs `ssh-keygen` with `args` under a 20 s bound and returns its stdout,
/// panicking with its stderr if it fails.
pub fn ssh_keygen(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("20")
        .arg("ssh-keygen")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks that only public-key auth is offered and that `none`, `password`,
/// `keyboard-interactive` and (if given) an unauthorized key are refused,
/// through both the ssh2 crate and OpenSSH.
pub fn assert_only_authorized_keys_get_in(port: u16, key: &Path, stranger: Option<&Path>) {
    let s = ssh2_handshake(port, WAIT);
    // auth_methods sends a "none" request: it must not authenticate.
    assert_eq!(s.auth_methods("mcp").unwrap(), "publickey");
    assert!(!s.authenticated(), "the none method authenticated");
    assert!(s.userauth_password("mcp", "mcp").is_err());
    struct P;
    impl ssh2::KeyboardInteractivePrompt for P {
        fn prompt(&mut self, _: &str, _: &str, p: &[ssh2::Prompt]) -> Vec<String> {
            p.iter().map(|_| "x".to_string()).collect()
        }
    }
    assert!(s.userauth_keyboard_interactive("mcp", &mut P).is_err());
    if let Some(other) = stranger {
        assert!(s.userauth_pubkey_file("mcp", None, other, None).is_err());
    }
    assert!(!s.authenticated());
    for method in ["none", "password", "keyboard-interactive"] {
        let pref = format!("PreferredAuthentications={method}");
        let out = openssh(port, key, &["-o", &pref, "mcp@127.0.0.1"], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{method} got in");
        assert!(err.contains("Permission denied"), "{method}: {err}");
    }
}

/// A TCP connection that has read the server's first 8 bytes, which must be
/// its SSH banner, and then says nothing.
pub fn silent_peer_after_banner(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut banner = [0u8; 8];
    s.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    s
}

/// Connects without speaking and returns what the server sends before it
/// hangs up; panics if it has not within `secs`.
pub fn bytes_until_hangup(port: u16, secs: u64) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        panic!(
            "the server did not hang up within {secs} s ({e}); got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    got
}
