//! The server binary's flags, config errors and host-key handling.

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn run_server(args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg("20")
        .arg(server_bin())
        .args(args)
        .output()
        .unwrap()
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn version_and_help() {
    let out = run_server(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("m2m-mcp-server-ssh-server {}", env!("CARGO_PKG_VERSION"))
    );
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
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
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
        let err = String::from_utf8_lossy(&out.stderr);
        for n in needles {
            assert!(err.contains(n), "{name}: {n:?} not in {err}");
        }
    }
    let out = run_server(&["--log-level", "LOUD"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn host_key_is_generated_with_safe_modes() {
    let srv = Server::start(json!({}), &[]);
    let key = srv.dir.path().join("hostkey/host_ed25519");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(
        mode(&srv.dir.path().join("hostkey/host_ed25519.pub")),
        0o644
    );
    assert_eq!(mode(&srv.dir.path().join("hostkey")), 0o700);
    let pub_line =
        std::fs::read_to_string(srv.dir.path().join("hostkey/host_ed25519.pub")).unwrap();
    assert!(pub_line.starts_with("ssh-ed25519 AAAA"));
    // The server presents exactly that key.
    let sess = srv.ssh2();
    let (blob, _) = sess.host_key().unwrap();
    let (k, _) = m2m_mcp_server_ssh_server::keys::parse_line(&pub_line).unwrap();
    assert_eq!(blob, k.blob.as_slice());
    // ssh-keygen accepts the generated private key.
    let out = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1),
        pub_line.split_whitespace().nth(1)
    );
}

/// A temp dir with a client key, its authorized_keys, an empty config and a
/// host key made by `ssh-keygen` with `passphrase`: (dir, client key, host key).
fn keygen_setup(tag: &str, passphrase: &str) -> (TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    let (ckey, public) = client_key(dir.path(), "client");
    std::fs::write(dir.path().join("authorized_keys"), format!("{public}\n")).unwrap();
    std::fs::write(
        dir.path().join("servers_config.json"),
        r#"{"mcpServers": {}}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("hostkey")).unwrap();
    let hk = dir.path().join("hostkey/host_ed25519");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(&hk)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen failed");
    (dir, ckey, hk)
}

#[test]
fn ssh_keygen_host_keys_load_plain_and_encrypted() {
    let (dir, ckey, hk) = keygen_setup("kgp", "sekrit");
    // Encrypted without --passphrase: a clear error, exit 2.
    let out = run_server(&[
        "--port",
        "0",
        "--server-key",
        hk.to_str().unwrap(),
        "--servers-config",
        dir.path().join("servers_config.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("passphrase"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With it: serves, and a group-readable key is warned about.
    std::fs::set_permissions(&hk, std::fs::Permissions::from_mode(0o640)).unwrap();
    let srv = Server::start_in(dir, ckey, &["--passphrase", "sekrit"]);
    assert!(srv.log().contains("readable by others"), "{}", srv.log());
    let mut c = srv.connect();
    assert!(c.initialize()["result"].is_object());
}

#[test]
fn plain_ssh_keygen_host_key_loads() {
    let (dir, ckey, hk) = keygen_setup("kgplain", "");
    let before = std::fs::read(&hk).unwrap();
    let srv = Server::start_in(dir, ckey, &[]);
    let mut c = srv.connect();
    assert!(c.initialize()["result"].is_object());
    assert_eq!(
        std::fs::read(srv.dir.path().join("hostkey/host_ed25519")).unwrap(),
        before,
        "an existing key is never rewritten"
    );
}

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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOT a loopback address"), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot listen on 192.0.2.1"), "{err}");
}
