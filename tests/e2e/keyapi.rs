//! The key-management API against the real binary: endpoints, registration
//! that works at once over SSH, concurrency, hostile input, rate limit, token.

use crate::common::*;
use serde_json::{Value, json};
use std::path::PathBuf;

pub fn keys_file(srv: &Server) -> PathBuf {
    srv.path("registered_clients")
}

/// The key lines of the registered-clients file, without the `# added`
/// line before each.
pub fn key_lines(srv: &Server) -> Vec<String> {
    let text = std::fs::read_to_string(keys_file(srv)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// A key API with the rate limit out of the way.
fn unlimited() -> (Server, u16) {
    Server::start_with_key_api(json!({}), &["--key-server-rate-limit", "1000"])
}

#[test]
fn health_answers_healthy() {
    let (_srv, api) = Server::start_with_key_api(json!({}), &[]);
    let (st, _, body) = get(api, "/health");
    assert_eq!(
        (st, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"status": "healthy", "servers": []}))
    );
}

#[test]
fn server_pub_key_serves_the_ssh_host_key() {
    let (srv, api) = Server::start_with_key_api(json!({}), &[]);
    let (st, _, body) = get(api, "/server_pub_key");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let served = v["server_pub_key"].as_str().unwrap();
    assert_eq!(
        served.split_whitespace().take(2).collect::<Vec<_>>(),
        srv.host_pub()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_index_is_an_html_page_about_register() {
    let (_srv, api) = Server::start_with_key_api(json!({}), &[]);
    let (st, head, body) = get(api, "/");
    assert_eq!(st, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(body.contains("/register"), "{body}");
}

#[test]
fn unknown_paths_get_404_and_get_on_register_gets_405() {
    let (_srv, api) = Server::start_with_key_api(json!({}), &[]);
    let (st, _, body) = get(api, "/nope");
    assert_eq!(st, 404);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let (st, head, _) = get(api, "/register");
    assert_eq!(st, 405);
    assert!(head.contains("Allow: POST"), "{head}");
}

#[test]
fn a_key_registered_twice_is_stored_once_with_mode_0600() {
    let (srv, api) = Server::start_with_key_api(json!({}), &[]);
    let (_, public) = client_key(srv.dir.path(), "newcomer");
    let (st, _, body) = register(api, &public, &[]);
    assert_eq!((st, body.as_str()), (200, r#"{"status":"success"}"#));
    assert_eq!(register(api, &public, &[]).0, 200);
    assert_eq!(key_lines(&srv), [public]);
    let text = std::fs::read_to_string(keys_file(&srv)).unwrap();
    assert!(
        text.starts_with("# added 20"),
        "the time added comes first: {text}"
    );
    assert_eq!(mode(&keys_file(&srv)), 0o600);
}

#[test]
fn a_registered_key_logs_in_at_once_beside_the_authorized_one() {
    let (srv, api) = Server::start_with_key_api(alpha(), &[]);
    let (key, public) = client_key(srv.dir.path(), "newcomer");
    assert_eq!(register(api, &public, &[]).0, 200);
    let sess = ssh2_session(srv.port, &key);
    let mut ch = sess.channel_session().unwrap();
    ch.shell().unwrap();
    assert!(Mcp::over(ch).initialize()["result"].is_object());
    // The --authorized-clients file is still honoured beside it, and the
    // API never writes it.
    srv.session();
    let ak = std::fs::read_to_string(srv.path("authorized_keys")).unwrap();
    assert!(!ak.contains("newcomer"), "{ak}");
}

#[test]
fn fifty_concurrent_registrations_all_land_once() {
    let (srv, api) = unlimited();
    let dir = TempDir::new("many");
    let publics: Vec<String> = (0..50)
        .map(|i| client_key(dir.path(), &format!("k{i}")).1)
        .collect();
    let threads: Vec<_> = publics
        .iter()
        .cloned()
        .map(|p| std::thread::spawn(move || register(api, &p, &[]).0))
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let lines = key_lines(&srv);
    assert_eq!(lines.len(), 50);
    for p in &publics {
        assert_eq!(lines.iter().filter(|l| *l == p).count(), 1, "{p}");
    }
}

/// A key API with the rate limit out of the way and one key registered:
/// (server, API port, registered key, another valid key, keys file content).
fn seeded() -> (Server, u16, String, String, Vec<u8>) {
    let (srv, api) = unlimited();
    let (_, good) = client_key(srv.dir.path(), "seed");
    assert_eq!(register(api, &good, &[]).0, 200);
    let (_, other) = client_key(srv.dir.path(), "other");
    let before = std::fs::read(keys_file(&srv)).unwrap();
    (srv, api, good, other, before)
}

/// JSON bodies that must all get 400: several keys in one, key options,
/// a NUL, wrong types and fields, and blobs that are not one valid ed25519
/// key (garbage, the wrong type name, truncated, a bad length, RSA 1024).
fn hostile_json_bodies(good: &str, other: &str) -> Vec<Value> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD;
    let body64 = good.split_whitespace().nth(1).unwrap().to_owned();
    let blob = b.decode(&body64).unwrap();
    let truncated = b.encode(&blob[..30]);
    let mut wrong_len = Vec::new();
    wrong_len.extend_from_slice(&blob[..15]);
    wrong_len.extend_from_slice(&[0, 0, 0, 31]);
    wrong_len.extend_from_slice(&[7u8; 31]);
    let wrong_len = b.encode(&wrong_len);
    let mut rsa = Vec::new();
    for part in [
        &b"ssh-rsa"[..],
        &[1, 0, 1],
        &[&[0u8, 0xc3][..], &[0x11u8; 127]].concat(),
    ] {
        rsa.extend_from_slice(&(part.len() as u32).to_be_bytes());
        rsa.extend_from_slice(part);
    }
    let rsa1024 = format!("ssh-rsa {}", b.encode(&rsa));
    let key = |k: String| json!({ "client_pub_key": k });
    vec![
        key(format!("{good}\n{other}")),
        key(format!("{other}\r{good}")),
        key(format!("command=\"/bin/sh\" {other}")),
        key(format!("no-port-forwarding,restrict {other}")),
        key(format!("{other}\u{0}")),
        json!({"client_pub_key": 42}),
        json!({"client_pub_key": ["x"]}),
        json!({"client_pub_key": null}),
        json!({"key": other}),
        json!([other]),
        key("ssh-ed25519 @@@garbage@@@".into()),
        key(format!("ssh-rsa {body64}")),
        key(format!("ssh-ed25519 {truncated}")),
        key(format!("ssh-ed25519 {wrong_len}")),
        key(rsa1024),
    ]
}

#[test]
fn hostile_keys_get_400_with_a_json_error_and_leave_the_file_unchanged() {
    let (srv, api, good, other, before) = seeded();
    for body in hostile_json_bodies(&good, &other) {
        let (st, _, resp) = post_register(api, "application/json", body.to_string().as_bytes());
        assert_eq!(st, 400, "{body}: {resp}");
        let err = serde_json::from_str::<Value>(&resp).unwrap();
        assert!(err["error"].is_string(), "{resp}");
        assert!(
            !resp.contains(srv.dir.path().to_str().unwrap()),
            "path leaked: {resp}"
        );
    }
    assert_eq!(
        std::fs::read(keys_file(&srv)).unwrap(),
        before,
        "the keys file changed"
    );
}

#[test]
fn bodies_not_json_of_the_wrong_type_or_oversized_get_400_415_and_413() {
    let (srv, api, _, other, before) = seeded();
    let key = json!({"client_pub_key": other}).to_string();
    let big = format!("{{\"client_pub_key\": \"{}\"}}", "A".repeat(1024 * 1024));
    for (content_type, body, want) in [
        ("application/json", &b"{not json"[..], 400),
        ("text/plain", key.as_bytes(), 415),
        ("application/json", big.as_bytes(), 413),
    ] {
        let (st, _, resp) = post_register(api, content_type, body);
        assert_eq!(st, want, "{content_type}: {resp}");
    }
    assert_eq!(
        std::fs::read(keys_file(&srv)).unwrap(),
        before,
        "the keys file changed"
    );
}

#[test]
fn the_eleventh_request_in_a_minute_is_refused_but_health_is_not_counted() {
    let (_srv, api) = Server::start_with_key_api(json!({}), &[]);
    for i in 0..10 {
        assert_eq!(get(api, "/server_pub_key").0, 200, "request {i}");
    }
    let (st, head, body) = get(api, "/server_pub_key");
    assert_eq!(st, 429, "{body}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(get(api, "/health").0, 200);
}

#[test]
fn token_mode_requires_the_bearer_token() {
    let dir = TempDir::new("tok");
    let tf = dir.path().join("token");
    std::fs::write(&tf, "s3cret-token-0123456789\n").unwrap();
    let (srv, api) = Server::start_with_key_api(
        json!({}),
        &["--key-server-token-file", tf.to_str().unwrap()],
    );
    let (_, public) = client_key(srv.dir.path(), "tk");
    assert_eq!(register(api, &public, &[]).0, 401);
    let wrong = [("Authorization", "Bearer wrong-token-0123456789")];
    assert_eq!(register(api, &public, &wrong).0, 401);
    assert!(!keys_file(&srv).exists());
    let right = [("Authorization", "Bearer s3cret-token-0123456789")];
    assert_eq!(register(api, &public, &right).0, 200);
    let text = std::fs::read_to_string(keys_file(&srv)).unwrap();
    assert!(text.contains(public.split_whitespace().nth(1).unwrap()));
}

#[test]
fn with_the_key_api_only_public_keys_get_in() {
    let (srv, api) = Server::start_with_key_api(alpha(), &[]);
    let (_, public) = client_key(srv.dir.path(), "reg");
    assert_eq!(register(api, &public, &[]).0, 200);
    assert_only_authorized_keys_get_in(srv.port, &srv.key, None);
}
