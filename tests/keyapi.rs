//! The key-management API against the real binary: endpoints, registration
//! that works at once over SSH, concurrency, hostile input, rate limit, token.

mod common;

use common::*;
use serde_json::{Value, json};

fn keys_file(srv: &Server) -> std::path::PathBuf {
    srv.dir.path().join("registered_clients")
}

#[test]
fn endpoints_answer_and_a_registered_key_logs_in_without_restart() {
    let (srv, api) = Server::start_with_key_api(json!({"alpha": fixture("alpha", &[])}), &[]);
    let (st, _, body) = http(api, "GET", "/health", &[], b"");
    assert_eq!(
        (st, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"status": "healthy"}))
    );
    let (st, _, body) = http(api, "GET", "/server_pub_key", &[], b"");
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let host_pub =
        std::fs::read_to_string(srv.dir.path().join("hostkey/host_ed25519.pub")).unwrap();
    let served = v["server_pub_key"].as_str().unwrap();
    assert_eq!(
        served.split_whitespace().take(2).collect::<Vec<_>>(),
        host_pub.split_whitespace().take(2).collect::<Vec<_>>()
    );
    let (st, head, body) = http(api, "GET", "/", &[], b"");
    assert_eq!(st, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html")
    );
    assert!(body.contains("/register"));
    let (st, _, body) = http(api, "GET", "/nope", &[], b"");
    assert_eq!(st, 404);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let (st, head, _) = http(api, "GET", "/register", &[], b"");
    assert_eq!(st, 405);
    assert!(head.contains("Allow: POST"));

    // A fresh key, registered with its comment, works at once; twice is stored once.
    let (key, public) = client_key(srv.dir.path(), "newcomer");
    let (st, _, body) = register(api, &public, &[]);
    assert_eq!((st, body.as_str()), (200, r#"{"status":"success"}"#));
    let (st, _, _) = register(api, &public, &[]);
    assert_eq!(st, 200);
    let text = std::fs::read_to_string(keys_file(&srv)).unwrap();
    assert_eq!(text, format!("{public}\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(keys_file(&srv))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let sess = ssh2_session(srv.port, &key);
    let mut ch = sess.channel_session().unwrap();
    ch.shell().unwrap();
    let mut c = Mcp::new(sess, ch);
    assert!(c.initialize()["result"].is_object());
    // The --authorized-clients file is still honoured beside it.
    let _ = srv.ssh2();
    // authorized_keys is never written by the API.
    let ak = std::fs::read_to_string(srv.dir.path().join("authorized_keys")).unwrap();
    assert!(!ak.contains("newcomer"));
}

#[test]
fn fifty_concurrent_registrations_all_land_once() {
    let (srv, api) = Server::start_with_key_api(json!({}), &["--key-server-rate-limit", "1000"]);
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
    let text = std::fs::read_to_string(keys_file(&srv)).unwrap();
    assert_eq!(text.lines().count(), 50);
    for p in &publics {
        assert_eq!(text.lines().filter(|l| *l == p).count(), 1, "{p}");
    }
}

#[test]
fn hostile_bodies_get_4xx_and_leave_the_file_unchanged() {
    let (srv, api) = Server::start_with_key_api(json!({}), &["--key-server-rate-limit", "1000"]);
    let (_, good) = client_key(srv.dir.path(), "seed");
    assert_eq!(register(api, &good, &[]).0, 200);
    let before = std::fs::read(keys_file(&srv)).unwrap();
    let body64 = good.split_whitespace().nth(1).unwrap().to_owned();
    let (_, other) = client_key(srv.dir.path(), "other");
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD;
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
    let json_bodies: Vec<(Value, u16)> = vec![
        (json!({"client_pub_key": format!("{good}\n{other}")}), 400),
        (json!({"client_pub_key": format!("{other}\r{good}")}), 400),
        (
            json!({"client_pub_key": format!("command=\"/bin/sh\" {other}")}),
            400,
        ),
        (
            json!({"client_pub_key": format!("no-port-forwarding,restrict {other}")}),
            400,
        ),
        (json!({"client_pub_key": format!("{other}\u{0}")}), 400),
        (json!({"client_pub_key": 42}), 400),
        (json!({"client_pub_key": ["x"]}), 400),
        (json!({"client_pub_key": null}), 400),
        (json!({"key": other}), 400),
        (json!([other]), 400),
        (json!({"client_pub_key": "ssh-ed25519 @@@garbage@@@"}), 400),
        (json!({"client_pub_key": format!("ssh-rsa {body64}")}), 400),
        (
            json!({"client_pub_key": format!("ssh-ed25519 {truncated}")}),
            400,
        ),
        (
            json!({"client_pub_key": format!("ssh-ed25519 {wrong_len}")}),
            400,
        ),
        (json!({"client_pub_key": rsa1024}), 400),
    ];
    for (body, want) in json_bodies {
        let (st, _, resp) = http(
            api,
            "POST",
            "/register",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(st, want, "{body}: {resp}");
        let err = serde_json::from_str::<Value>(&resp).unwrap();
        assert!(err["error"].is_string(), "{resp}");
        assert!(
            !resp.contains(srv.dir.path().to_str().unwrap()),
            "path leaked: {resp}"
        );
    }
    // Not JSON, wrong content type, oversized body.
    let (st, _, _) = http(
        api,
        "POST",
        "/register",
        &[("Content-Type", "application/json")],
        b"{not json",
    );
    assert_eq!(st, 400);
    let (st, _, _) = http(
        api,
        "POST",
        "/register",
        &[("Content-Type", "text/plain")],
        json!({"client_pub_key": other}).to_string().as_bytes(),
    );
    assert_eq!(st, 415);
    let big = format!("{{\"client_pub_key\": \"{}\"}}", "A".repeat(1024 * 1024));
    let (st, _, _) = http(
        api,
        "POST",
        "/register",
        &[("Content-Type", "application/json")],
        big.as_bytes(),
    );
    assert_eq!(st, 413);
    assert_eq!(
        std::fs::read(keys_file(&srv)).unwrap(),
        before,
        "the keys file changed"
    );
}

#[test]
fn the_eleventh_request_in_a_minute_is_refused() {
    let (_srv, api) = Server::start_with_key_api(json!({}), &[]);
    for i in 0..10 {
        assert_eq!(
            http(api, "GET", "/server_pub_key", &[], b"").0,
            200,
            "request {i}"
        );
    }
    let (st, head, body) = http(api, "GET", "/server_pub_key", &[], b"");
    assert_eq!(st, 429, "{body}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    // Health checks are not counted.
    assert_eq!(http(api, "GET", "/health", &[], b"").0, 200);
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
    assert_eq!(
        register(
            api,
            &public,
            &[("Authorization", "Bearer wrong-token-0123456789")]
        )
        .0,
        401
    );
    assert!(!keys_file(&srv).exists());
    assert_eq!(
        register(
            api,
            &public,
            &[("Authorization", "Bearer s3cret-token-0123456789")]
        )
        .0,
        200
    );
    assert!(
        std::fs::read_to_string(keys_file(&srv))
            .unwrap()
            .contains(public.split_whitespace().nth(1).unwrap())
    );
}

#[test]
fn with_the_key_api_only_public_keys_get_in() {
    let (srv, api) = Server::start_with_key_api(json!({"alpha": fixture("alpha", &[])}), &[]);
    let (_, public) = client_key(srv.dir.path(), "reg");
    assert_eq!(register(api, &public, &[]).0, 200);
    assert_only_authorized_keys_get_in(srv.port, &srv.key, None);
}
