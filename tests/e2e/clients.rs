//! Who is trusted, and taking it back: scoped registration, `GET /clients`,
//! `DELETE /clients/SHA256:...` and the `clients list` / `clients revoke`
//! subcommand, against the real binary; a revoked key's open session ends.

use crate::common::*;
use crate::keyapi::{key_lines, keys_file};
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

const TOKEN: &str = "s3cret-token-0123456789";
const AUTH: (&str, &str) = ("Authorization", "Bearer s3cret-token-0123456789");
const ENDED: &str = "the server no longer trusts this key";

/// Servers `a` and `b` (fixtures, tools under `a.` and `b.`) and the key
/// API with a token and the rate limit out of the way.
fn start() -> (Server, u16) {
    let mut a = fixture("a", &[]);
    a["namePrefix"] = json!("a.");
    let mut b = fixture("b", &[]);
    b["namePrefix"] = json!("b.");
    let dir = TempDir::new("token");
    let tf = dir.path().join("token");
    std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
    Server::start_with_key_api(
        json!({"a": a, "b": b}),
        &[
            "--key-server-token-file",
            tf.to_str().unwrap(),
            "--key-server-rate-limit",
            "1000",
            "--warm-spares",
            "0",
        ],
    )
}

/// A request with the token (and a JSON body if any): (status, JSON answer).
fn call(api: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut headers = vec![AUTH];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (st, _, text) = http(api, method, path, &headers, body.as_bytes());
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (st, v)
}

/// POST /register with the token: (status, answer).
fn register_with(api: u16, body: Value) -> (u16, Value) {
    call(api, "POST", "/register", Some(body))
}

/// GET /clients with the token: the list.
fn clients(api: u16) -> Vec<Value> {
    let (st, v) = call(api, "GET", "/clients", None);
    assert_eq!(st, 200, "{v}");
    v["clients"].as_array().unwrap().clone()
}

/// The fingerprint of a public key file, as OpenSSH prints it.
fn fingerprint(public_file: &Path) -> String {
    let out = ssh_keygen(&["-l", "-f", public_file.to_str().unwrap()]);
    out.split_whitespace().nth(1).unwrap().to_owned()
}

/// A fresh key registered through the API with `scope` (fields added to
/// the body): (private key path, public line, fingerprint).
fn registered(
    srv: &Server,
    api: u16,
    name: &str,
    scope: Value,
) -> (std::path::PathBuf, String, String) {
    let (key, public) = client_key(srv.dir.path(), name);
    let mut body = json!({ "client_pub_key": public });
    body.as_object_mut()
        .unwrap()
        .extend(scope.as_object().unwrap().clone());
    let (st, v) = register_with(api, body);
    assert_eq!((st, &v), (200, &json!({"status": "success"})));
    let fp = fingerprint(&srv.path(&format!("{name}.pub")));
    (key, public, fp)
}

/// The server binary's `clients` subcommand on the server's files, bounded.
fn cli(srv: &Server, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg(server_bin())
        .arg("--authorized-clients")
        .arg(srv.path("authorized_keys"))
        .arg("--registered-clients")
        .arg(keys_file(srv))
        .arg("clients")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An initialized MCP session over ssh2 with `key`.
fn session(srv: &Server, key: &Path) -> Mcp {
    let sess = ssh2_session(srv.port, key);
    let mut ch = sess.channel_session().unwrap();
    ch.shell().unwrap();
    let mut mcp = Mcp::over(ch);
    assert!(mcp.initialize()["result"].is_object());
    mcp
}

/// Waits (bounded by the session's timeout) for the server to end the
/// session; returns its exit status and what it wrote on stderr.
fn ended(mut mcp: Mcp) -> (i32, String) {
    let ch = &mut mcp.wire.ch;
    let mut rest = Vec::new();
    ch.read_to_end(&mut rest)
        .expect("the server ends the session within the wait");
    let mut err = String::new();
    ch.stderr().read_to_string(&mut err).unwrap();
    ch.wait_close().unwrap();
    (ch.exit_status().unwrap(), err)
}

#[test]
fn get_clients_lists_both_files_with_fingerprints_options_and_time_added() {
    let (srv, api) = start();
    let (_, plain, plain_fp) = registered(&srv, api, "plain", json!({}));
    let scope = json!({"servers": ["b"], "tools": ["b.e*", "!b.echo2"]});
    let (_, _, scoped_fp) = registered(&srv, api, "scoped", scope);
    let all = clients(api);
    assert_eq!(all.len(), 3, "{all:?}");
    let own = &all[0];
    assert_eq!(own["fingerprint"], fingerprint(&srv.path("client.pub")));
    assert_eq!(own["file"], "authorized-clients");
    assert_eq!(
        (&own["type"], &own["comment"], &own["options"]),
        (&json!("ssh-ed25519"), &json!("client"), &json!(""))
    );
    assert!(own["added"].is_null() && own["refused"].is_null(), "{own}");
    assert_eq!(all[1]["fingerprint"], plain_fp);
    assert_eq!(all[1]["file"], "registered-clients");
    assert_eq!(all[1]["comment"], "plain");
    assert!(plain.ends_with(" plain"));
    let added = all[1]["added"].as_str().expect("a time added");
    assert!(added.starts_with("20") && added.ends_with('Z'), "{added}");
    assert_eq!(all[2]["fingerprint"], scoped_fp);
    assert_eq!(
        all[2]["options"],
        r#"command="b",environment="MCP_TOOLS=b.e*,!b.echo2""#
    );
    assert!(all[2]["added"].is_string() && all[2]["refused"].is_null());
}

#[test]
fn a_scoped_key_gets_only_its_servers_and_tools() {
    let (srv, api) = start();
    let scope = json!({"servers": ["b"], "tools": ["b.e*", "a.add"]});
    let (key, public, _) = registered(&srv, api, "scoped", scope);
    assert_eq!(
        key_lines(&srv),
        [format!(
            r#"command="b",environment="MCP_TOOLS=b.e*,a.add" {public}"#
        )]
    );
    let mut mcp = session(&srv, &key);
    let list = mcp.request("tools/list", json!({}));
    assert_eq!(names(&list, "tools"), ["b.echo"]);
    let refused = mcp.call("a.add", json!({"a": 1, "b": 2}));
    assert!(refused["error"].is_object(), "{refused}");
}

/// Registration bodies with a bad scope, each with a word of its reason.
fn bad_scopes(public: &str) -> Vec<(Value, &'static str)> {
    let with = |field: &str, v: Value| {
        let mut body = json!({ "client_pub_key": public });
        body[field] = v;
        body
    };
    vec![
        (with("servers", json!(["nope"])), "not a configured server"),
        (with("servers", json!(["b\n"])), "not a configured server"),
        (
            with("servers", json!(["b\"", "a"])),
            "not a configured server",
        ),
        (with("servers", json!("b")), "array of strings"),
        (with("servers", json!([1])), "array of strings"),
        (with("servers", json!(null)), "array of strings"),
        (with("servers", json!([])), "at least one"),
        (with("tools", json!(["a,b"])), "not a pattern"),
        (with("tools", json!(["a\"b"])), "not a pattern"),
        (with("tools", json!(["x\ny"])), "not a pattern"),
        (with("tools", json!(["x\u{0}"])), "not a pattern"),
        (with("tools", json!(["!"])), "not a pattern"),
        (with("tools", json!(["b.*", ""])), "not a pattern"),
        (with("tools", json!("b.*")), "array of strings"),
        (with("tools", json!({"b.*": true})), "array of strings"),
        (with("tools", json!([])), "at least one"),
        (with("server", json!(["b"])), "unknown field"),
        (with("prompts", json!(["x"])), "unknown field"),
    ]
}

#[test]
fn bad_scopes_get_400_with_a_reason_and_leave_the_file_unchanged() {
    let (srv, api) = start();
    registered(&srv, api, "seed", json!({"servers": ["a"]}));
    let before = std::fs::read(keys_file(&srv)).unwrap();
    let (_, public) = client_key(srv.dir.path(), "newcomer");
    for (body, why) in bad_scopes(&public) {
        let (st, v) = register_with(api, body.clone());
        assert_eq!(st, 400, "{body}: {v}");
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(why), "{body}: {err}");
    }
    assert_eq!(std::fs::read(keys_file(&srv)).unwrap(), before);
}

#[test]
fn without_a_token_scopes_are_refused_and_the_clients_endpoints_forbidden() {
    let (srv, api) = Server::start_with_key_api(alpha(), &[]);
    let (_, public) = client_key(srv.dir.path(), "k");
    let body = json!({"client_pub_key": public, "servers": ["alpha"]}).to_string();
    let (st, _, err) = post_register(api, "application/json", body.as_bytes());
    assert_eq!(st, 400, "{err}");
    assert!(err.contains("--key-server-token-file"), "{err}");
    assert!(!keys_file(&srv).exists());
    assert_eq!(register(api, &public, &[]).0, 200);
    let (st, _, err) = get(api, "/clients");
    assert_eq!(st, 403, "{err}");
    let fp = fingerprint(&srv.path("k.pub"));
    let path = format!("/clients/{fp}");
    assert_eq!(http(api, "DELETE", &path, &[AUTH], b"").0, 403);
    assert_eq!(key_lines(&srv), [public]);
}

#[test]
fn the_clients_endpoints_need_the_bearer_token() {
    let (srv, api) = start();
    let (_, public, fp) = registered(&srv, api, "k", json!({}));
    let wrong = ("Authorization", "Bearer wrong-token-0123456789");
    for headers in [&[][..], &[wrong][..]] {
        assert_eq!(http(api, "GET", "/clients", headers, b"").0, 401);
        let path = format!("/clients/{fp}");
        let (st, head, _) = http(api, "DELETE", &path, headers, b"");
        assert_eq!(st, 401);
        assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    }
    assert_eq!(key_lines(&srv), [public]);
}

#[test]
fn registering_again_with_other_options_gets_409_and_with_the_same_gets_200() {
    let (srv, api) = start();
    let scope = json!({"servers": ["a", "b"], "tools": ["a.*"]});
    let (_, public, fp) = registered(&srv, api, "k", scope);
    let before = std::fs::read(keys_file(&srv)).unwrap();
    // The same scope, the servers in another order: the same line.
    let same = json!({"client_pub_key": public, "servers": ["b", "a"], "tools": ["a.*"]});
    assert_eq!(register_with(api, same).0, 200);
    // Plain, as a client re-registering at start-up does: the line stays.
    assert_eq!(register(api, &public, &[AUTH]).0, 200);
    let other = json!({"client_pub_key": public, "servers": ["a"]});
    let (st, v) = register_with(api, other);
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains(&fp), "{v}");
    assert_eq!(std::fs::read(keys_file(&srv)).unwrap(), before);
}

#[test]
fn delete_revokes_a_registered_key_and_ends_its_open_session() {
    let (srv, api) = start();
    let (key, _, fp) = registered(&srv, api, "k", json!({}));
    let (_, kept, _) = registered(&srv, api, "kept", json!({}));
    let mcp = session(&srv, &key);
    // The fingerprint as it is, with its `/` and `+`.
    let (st, v) = call(api, "DELETE", &format!("/clients/{fp}"), None);
    assert_eq!(
        (st, v),
        (
            200,
            json!({"status": "success", "removed": 1, "in_authorized_clients": false})
        )
    );
    assert_eq!(key_lines(&srv), [kept]);
    let (status, err) = ended(mcp);
    assert_eq!(status, 1);
    assert!(err.contains(ENDED), "{err}");
    assert!(try_login(srv.port, &key).is_err(), "a revoked key logs in");
    assert!(clients(api).iter().all(|c| c["fingerprint"] != fp));
}

#[test]
fn cli_revoke_ends_an_open_openssh_session() {
    let (srv, api) = start();
    let (key, _, fp) = registered(&srv, api, "k", json!({"servers": ["a"]}));
    let mut ssh = StdioClient::spawn(openssh_command(srv.port, &key, &["mcp@127.0.0.1"]));
    assert!(ssh.initialize()["result"].is_object(), "{}", ssh.stderr());
    let out = cli(&srv, &["revoke", &fp]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("revoked {fp}")),
        "{}",
        stdout(&out)
    );
    assert!(key_lines(&srv).is_empty());
    let status = ssh.wait();
    assert_eq!(status.code(), Some(1));
    assert!(ssh.stderr().contains(ENDED), "{}", ssh.stderr());
}

#[test]
fn a_scoped_registration_names_the_servers_of_the_config_in_force() {
    let (srv, api) = start();
    let cfg = json!({"mcpServers": {"c": fixture("c", &[])}});
    std::fs::write(srv.path("servers_config.json"), cfg.to_string()).unwrap();
    signal(srv.pid(), libc::SIGHUP);
    let (_, public) = client_key(srv.dir.path(), "k");
    let body = |server: &str| json!({"client_pub_key": public, "servers": [server]});
    assert!(
        eventually(|| register_with(api, body("c")).0 == 200),
        "the reloaded config's server is never accepted"
    );
    let (st, v) = register_with(api, body("a"));
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("configured: c"),
        "{v}"
    );
    assert_eq!(key_lines(&srv), [format!(r#"command="c" {public}"#)]);
}

#[test]
fn a_key_in_authorized_clients_is_reported_and_never_edited() {
    let (srv, api) = start();
    let ak = srv.path("authorized_keys");
    let before = std::fs::read(&ak).unwrap();
    let own = fingerprint(&srv.path("client.pub"));
    let (st, v) = call(api, "DELETE", &format!("/clients/{own}"), None);
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("--authorized-clients")
    );
    let out = cli(&srv, &["revoke", &own]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("never edits"), "{}", stderr(&out));
    // In both files: the registered copy goes, the key stays trusted.
    let public = std::fs::read_to_string(srv.path("client.pub")).unwrap();
    assert_eq!(register(api, public.trim(), &[AUTH]).0, 200);
    let (st, v) = call(api, "DELETE", &format!("/clients/{own}"), None);
    assert_eq!(
        (st, &v["in_authorized_clients"]),
        (200, &json!(true)),
        "{v}"
    );
    assert!(key_lines(&srv).is_empty());
    assert_eq!(std::fs::read(&ak).unwrap(), before);
    assert!(srv.connect().initialize()["result"].is_object());
}

/// A server with one registered key: (server, API port, the keys file's
/// bytes, the fingerprint of a key nobody registered).
fn one_registered_and_a_stranger() -> (Server, u16, Vec<u8>, String) {
    let (srv, api) = start();
    registered(&srv, api, "k", json!({}));
    let before = std::fs::read(keys_file(&srv)).unwrap();
    client_key(srv.dir.path(), "stranger");
    let stranger = fingerprint(&srv.path("stranger.pub"));
    (srv, api, before, stranger)
}

#[test]
fn unknown_or_malformed_fingerprints_get_404_or_400() {
    let (srv, api, before, stranger) = one_registered_and_a_stranger();
    // Percent-encoded as a URL library would send it.
    let encoded = stranger
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace('+', "%2B");
    let (st, v) = call(api, "DELETE", &format!("/clients/{encoded}"), None);
    assert_eq!(st, 404, "{v}");
    for bad in ["", "SHA256:short", "MD5:00", "SHA256:%0A"] {
        let (st, v) = call(api, "DELETE", &format!("/clients/{bad}"), None);
        assert_eq!(st, 400, "{bad}: {v}");
    }
    assert_eq!(http(api, "GET", "/clients/x", &[AUTH], b"").0, 405);
    assert_eq!(http(api, "DELETE", "/clients", &[AUTH], b"").0, 405);
    assert_eq!(std::fs::read(keys_file(&srv)).unwrap(), before);
}

#[test]
fn cli_list_prints_a_table_or_json_lines_of_both_files() {
    let (srv, api) = start();
    registered(&srv, api, "scoped", json!({"tools": ["a.*"]}));
    let table = cli(&srv, &["list"]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = stdout(&table);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0].starts_with("FINGERPRINT"), "{text}");
    assert!(rows[1].contains("authorized-clients:1"), "{text}");
    assert!(rows[2].contains("registered-clients:2"), "{text}");
    assert!(rows[2].contains(r#"environment="MCP_TOOLS=a.*""#), "{text}");
    let json = cli(&srv, &["list", "--json"]);
    assert_eq!(json.status.code(), Some(0));
    assert_eq!(json_lines(&json.stdout), clients(api));
}

#[test]
fn cli_revoke_exits_1_for_an_unknown_key_and_2_for_a_malformed_fingerprint() {
    let (srv, _api, before, stranger) = one_registered_and_a_stranger();
    let out = cli(&srv, &["revoke", &stranger]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is in neither"), "{}", stderr(&out));
    let out = cli(&srv, &["revoke", "SHA256:nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a key fingerprint"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(keys_file(&srv)).unwrap(), before);
    let help = Command::new(server_bin()).arg("--help").output().unwrap();
    assert!(stdout(&help).contains("clients"), "{}", stdout(&help));
}

#[test]
fn api_registrations_racing_cli_revocations_lose_nothing() {
    let (srv, api) = start();
    let old: Vec<String> = (0..6)
        .map(|i| registered(&srv, api, &format!("old{i}"), json!({})).2)
        .collect();
    let new: Vec<String> = (0..6)
        .map(|i| client_key(srv.dir.path(), &format!("new{i}")).1)
        .collect();
    let revokers: Vec<_> = old
        .iter()
        .map(|fp| {
            let args = [
                "--authorized-clients".to_owned(),
                srv.path("authorized_keys").display().to_string(),
                "--registered-clients".to_owned(),
                keys_file(&srv).display().to_string(),
                "clients".to_owned(),
                "revoke".to_owned(),
                fp.clone(),
            ];
            std::thread::spawn(move || {
                let out = Command::new("timeout")
                    .arg("20")
                    .arg(server_bin())
                    .args(args)
                    .output()
                    .unwrap();
                out.status.code()
            })
        })
        .collect();
    let registrars: Vec<_> = new
        .iter()
        .cloned()
        .map(|p| std::thread::spawn(move || register(api, &p, &[AUTH]).0))
        .collect();
    for t in revokers {
        assert_eq!(t.join().unwrap(), Some(0));
    }
    for t in registrars {
        assert_eq!(t.join().unwrap(), 200);
    }
    let mut got = key_lines(&srv);
    got.sort_unstable();
    let mut want = new;
    want.sort_unstable();
    assert_eq!(got, want);
    let text = std::fs::read_to_string(keys_file(&srv)).unwrap();
    assert_eq!(
        text.lines().count(),
        12,
        "each key after its added line: {text}"
    );
}
