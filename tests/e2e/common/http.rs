//! Plain HTTP/1.1 requests to the key API.

use super::WAIT;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;

/// A minimal HTTP/1.1 exchange (Connection: close): (status, head, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// GET `path`: (status, head, body).
pub fn get(port: u16, path: &str) -> (u16, String, String) {
    http(port, "GET", path, &[], b"")
}

/// POSTs `body` to /register as `content_type`.
pub fn post_register(port: u16, content_type: &str, body: &[u8]) -> (u16, String, String) {
    http(
        port,
        "POST",
        "/register",
        &[("Content-Type", content_type)],
        body,
    )
}

/// POSTs `{"client_pub_key": key}` as JSON, with `extra` headers.
pub fn register(port: u16, key: &str, extra: &[(&str, &str)]) -> (u16, String, String) {
    let body = json!({ "client_pub_key": key }).to_string();
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(extra);
    http(port, "POST", "/register", &h, body.as_bytes())
}
