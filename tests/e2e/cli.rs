//! The server binary's flags, config errors and host-key handling.

use crate::common::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The server binary with `args`, bounded at 20 s.
fn run_server(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg(server_bin())
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_prints_the_binary_name_and_version() {
    let out = run_server(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("m2m-mcp-server-ssh-server {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_every_flag() {
    let out = run_server(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--host",
        "--port",
        "--authorized-clients",
        "--server-key",
        "--passphrase",
        "--servers-config",
        "--log-level",
        "--version",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}

#[test]
fn out_of_range_flags_are_refused_with_exit_2() {
    let dir = TempDir::new("flags");
    let key = dir.path().join("hk");
    for (flag, value) in [
        ("--request-timeout", "0"),
        ("--login-grace-time", "0"),
        ("--login-grace-time", "601"),
        ("--max-sessions", "0"),
        ("--max-startups", "0"),
        ("--warm-spares", "17"),
        ("--max-line-bytes", "100"),
        ("--key-server-rate-limit", "0"),
    ] {
        let out = run_server(&[
            "--port",
            "0",
            "--server-key",
            key.to_str().unwrap(),
            flag,
            value,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = stderr(&out);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
}

#[test]
fn an_unknown_log_level_is_refused_with_exit_2() {
    let out = run_server(&["--log-level", "LOUD"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn config_errors_name_file_server_and_field_and_exit_2() {
    let dir = TempDir::new("cfg");
    let d = dir.path();
    let key = d.join("hk");
    let keyarg = key.to_str().unwrap();
    let cases: Vec<(&str, Option<&str>, Vec<&str>)> = vec![
        ("missing.json", None, vec!["missing.json", "cannot read"]),
        (
            "bad.json",
            Some("{\n \"mcpServers\": {\n  \"a\": {\"command\": }\n }\n}"),
            vec!["bad.json", "line 3"],
        ),
        (
            "nocmd.json",
            Some(r#"{"mcpServers": {"time": {"args": []}}}"#),
            vec!["nocmd.json", "\"time\"", "\"command\" is missing"],
        ),
        (
            "badargs.json",
            Some(r#"{"mcpServers": {"time": {"command": "x", "args": "y"}}}"#),
            vec!["\"time\"", "\"args\""],
        ),
    ];
    for (name, text, needles) in cases {
        let p = d.join(name);
        if let Some(t) = text {
            std::fs::write(&p, t).unwrap();
        }
        let out = run_server(&[
            "--port",
            "0",
            "--server-key",
            keyarg,
            "--servers-config",
            p.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr(&out);
        for n in needles {
            assert!(err.contains(n), "{name}: {n:?} not in {err}");
        }
    }
}

#[test]
fn the_host_key_is_generated_with_safe_modes() {
    let srv = Server::start(json!({}), &[]);
    assert_eq!(mode(&srv.path("hostkey/host_ed25519")), 0o600);
    assert_eq!(mode(&srv.path("hostkey/host_ed25519.pub")), 0o644);
    assert_eq!(mode(&srv.path("hostkey")), 0o700);
}

#[test]
fn the_generated_host_key_is_the_one_presented_and_ssh_keygen_reads_it() {
    let srv = Server::start(json!({}), &[]);
    let pub_line = srv.host_pub();
    assert!(pub_line.starts_with("ssh-ed25519 AAAA"), "{pub_line}");
    let sess = srv.ssh2();
    let (blob, _) = sess.host_key().unwrap();
    let (k, _) = m2m_mcp_server_ssh_server::keys::parse_line(&pub_line).unwrap();
    assert_eq!(blob, k.blob.as_slice());
    let key = srv.path("hostkey/host_ed25519");
    let derived = ssh_keygen(&["-y", "-f", key.to_str().unwrap()]);
    assert_eq!(
        derived.split_whitespace().nth(1),
        pub_line.split_whitespace().nth(1)
    );
}

/// A temp dir with a client key, its authorized_keys, an empty config and a
/// host key made by `ssh-keygen` with `passphrase`: (dir, client key, host key).
fn keygen_setup(passphrase: &str) -> (TempDir, PathBuf, PathBuf) {
    let (dir, ckey) = Server::files(json!({}));
    std::fs::create_dir_all(dir.path().join("hostkey")).unwrap();
    let hk = dir.path().join("hostkey/host_ed25519");
    ssh_keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        passphrase,
        "-f",
        hk.to_str().unwrap(),
    ]);
    (dir, ckey, hk)
}

#[test]
fn an_encrypted_host_key_without_its_passphrase_exits_2_saying_so() {
    let (dir, _, hk) = keygen_setup("sekrit");
    let out = run_server(&[
        "--port",
        "0",
        "--server-key",
        hk.to_str().unwrap(),
        "--servers-config",
        dir.path().join("servers_config.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("passphrase"), "{}", stderr(&out));
}

#[test]
fn an_encrypted_ssh_keygen_host_key_loads_with_its_passphrase() {
    let (dir, ckey, _) = keygen_setup("sekrit");
    let srv = Server::start_in(dir, ckey, &["--passphrase", "sekrit"]);
    srv.session();
}

/// The warning is the behaviour: the log is the only place it shows.
#[test]
fn a_host_key_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, ckey, hk) = keygen_setup("");
    std::fs::set_permissions(&hk, std::fs::Permissions::from_mode(0o640)).unwrap();
    let srv = Server::start_in(dir, ckey, &[]);
    assert!(srv.wait_log("readable by others"), "{}", srv.log());
}

#[test]
fn a_plain_ssh_keygen_host_key_loads_and_is_never_rewritten() {
    let (dir, ckey, hk) = keygen_setup("");
    let before = std::fs::read(&hk).unwrap();
    let srv = Server::start_in(dir, ckey, &[]);
    srv.session();
    assert_eq!(
        std::fs::read(srv.path("hostkey/host_ed25519")).unwrap(),
        before,
        "an existing key is never rewritten"
    );
}

/// The warning on the server's stderr is the behaviour here.
#[test]
fn a_non_loopback_host_is_warned_about_loudly() {
    // 192.0.2.1 (TEST-NET-1) is not on this machine: the bind fails after the
    // warning, so nothing listens and no traffic leaves the host.
    let dir = TempDir::new("nonlo");
    std::fs::write(dir.path().join("c.json"), r#"{"mcpServers": {}}"#).unwrap();
    let out = run_server(&[
        "--host",
        "192.0.2.1",
        "--port",
        "0",
        "--server-key",
        dir.path().join("hk").to_str().unwrap(),
        "--servers-config",
        dir.path().join("c.json").to_str().unwrap(),
        "--authorized-clients",
        dir.path().join("none").to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(err.contains("NOT a loopback address"), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot listen on 192.0.2.1"), "{err}");
}
