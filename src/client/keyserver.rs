//! `--use-key-server`: fetch the server's host key and register ours, over
//! `https://HOST/...` first and `http://HOST:PORT/...` after, as the Python
//! client does.

use crate::error::Error;
use serde_json::{Value, json};
use std::time::Duration;

fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::NativeTls)
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .new_agent()
}

fn urls(host: &str, port: u16, path: &str) -> [String; 2] {
    let h = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]") // IPv6 literal
    } else {
        host.to_owned()
    };
    [
        format!("https://{h}{path}"),
        format!("http://{h}:{port}{path}"),
    ]
}

/// Reads the body (bounded) and the JSON in it.
fn body_json(resp: &mut ureq::http::Response<ureq::Body>) -> Option<Value> {
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// The server's public host key line (`ssh-ed25519 AAAA...`).
pub fn fetch_server_key(host: &str, port: u16) -> Result<String, Error> {
    let agent = agent();
    let mut last = String::new();
    for url in urls(host, port, "/server_pub_key") {
        match agent.get(&url).call() {
            Ok(mut r) if r.status() == 200 => {
                let key = body_json(&mut r)
                    .and_then(|v| v.get("server_pub_key")?.as_str().map(str::to_owned));
                match key {
                    Some(k) => {
                        log::info!("fetched the server key from {url}");
                        return Ok(k);
                    }
                    None => last = format!("{url}: no server_pub_key in the answer"),
                }
            }
            Ok(r) => last = format!("{url}: HTTP {}", r.status()),
            Err(e) => {
                log::debug!("{url}: {e}");
                last = format!("{url}: {e}");
            }
        }
    }
    Err(Error::Http(format!("cannot fetch the server key: {last}")))
}

/// Registers our public key line with the key API.
pub fn register(host: &str, port: u16, public: &str, token: Option<&str>) -> Result<(), Error> {
    let agent = agent();
    let body = json!({ "client_pub_key": public });
    let mut last = String::new();
    for url in urls(host, port, "/register") {
        let mut req = agent.post(&url).header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        match req.send(body.to_string()) {
            Ok(r) if r.status() == 200 => {
                log::info!("registered the client key at {url}");
                return Ok(());
            }
            Ok(mut r) => {
                let why = body_json(&mut r)
                    .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                last = format!("refused by {url}: HTTP {} {why}", r.status());
            }
            Err(e) => {
                log::debug!("{url}: {e}");
                last = format!("{url}: {e}");
            }
        }
    }
    Err(Error::Http(format!(
        "cannot register the client key: {last}"
    )))
}
