//! The key-management HTTP API (`--run-key-server`), built as an attack
//! surface: small bodies only, strict content type, per-IP rate limit with
//! bounded memory, optional bearer token, validated keys only, and errors
//! that never carry paths or internals.
//!
//! - `GET /server_pub_key` -> `{"server_pub_key": "ssh-ed25519 AAAA..."}`
//! - `POST /register` `{"client_pub_key": "..."}` -> `{"status": "success"}`;
//!   with a token it may add `"servers": [...]` and `"tools": [...]`
//! - `GET /clients` (token only) -> `{"clients": [...]}`, every trusted key line
//! - `DELETE /clients/SHA256:...` (token only) -> the key leaves `--registered-clients`
//! - `GET /health` -> `{"status": "healthy", "servers": [...]}`, each
//!   configured server's scope, state, processes and restarts (not rate
//!   limited)
//! - `GET /` -> a short HTML page describing the API

use crate::error::Error;
use crate::keys::clients::{self, Client, Revocation};
use crate::keys::registry::{Added, Registry};
use crate::keys::scope::Scope;
use crate::keys::validate;
use rouille::{Request, Response};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest request body read (a key line plus JSON framing).
pub const MAX_BODY: usize = 16 * 1024;
/// Most client addresses remembered by the rate limiter.
const MAX_TRACKED_IPS: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);

/// Per-IP fixed-window limiter with a bounded table.
pub struct RateLimiter {
    per_window: u32,
    table: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_window: per_minute,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` if allowed, else the seconds until the window resets.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() >= MAX_TRACKED_IPS && !t.contains_key(&ip) {
            t.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if t.len() >= MAX_TRACKED_IPS {
                // Still full of live windows: forget the oldest one.
                if let Some(oldest) = t.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k) {
                    t.remove(&oldest);
                }
            }
        }
        let e = t.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        if e.1 >= self.per_window {
            let left = WINDOW.saturating_sub(now.duration_since(e.0));
            return Err(left.as_secs().max(1));
        }
        e.1 += 1;
        Ok(())
    }

    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Gives the names of the MCP servers currently configured.
pub type ServerNames = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// Gives the configured servers' state for `/health` (see
/// `Gateway::health`).
pub type Health = Box<dyn Fn() -> Value + Send + Sync>;

/// Everything the handler needs.
pub struct KeyApi {
    pub server_pub_key: String,
    pub registry: Registry,
    /// `--authorized-clients`: listed by `GET /clients`, never written.
    pub authorized: PathBuf,
    /// The configured MCP servers now (a SIGHUP may change them): the
    /// names a scoped registration may use.
    pub servers: ServerNames,
    pub health: Health,
    pub limiter: RateLimiter,
    pub token: Option<String>,
}

fn error(code: u16, msg: &str) -> Response {
    Response::json(&json!({ "error": msg })).with_status_code(code)
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

const INDEX: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>m2m-mcp-server-ssh key API</title></head>\
<body><h1>MCP SSH server: key API</h1><ul>\
<li><code>GET /server_pub_key</code>: the SSH host key, <code>{\"server_pub_key\": \"ssh-ed25519 ...\"}</code></li>\
<li><code>POST /register</code> with <code>Content-Type: application/json</code> and <code>{\"client_pub_key\": \"ssh-ed25519 ... comment\"}</code>: trust a client key \
(with the token, <code>\"servers\"</code> and <code>\"tools\"</code> lists limit it)</li>\
<li><code>GET /clients</code> (token): every trusted key; <code>DELETE /clients/SHA256:...</code> (token): revoke a registered key</li>\
<li><code>GET /health</code>: <code>{\"status\": \"healthy\"}</code></li></ul></body></html>";

impl KeyApi {
    /// Routes one request.
    pub fn handle(&self, req: &Request) -> Response {
        let path = req.url();
        let method = req.method();
        let allowed = match path.as_str() {
            "/" | "/health" | "/server_pub_key" | "/clients" => "GET",
            "/register" => "POST",
            p if p.starts_with(REVOKE) => "DELETE",
            _ => return error(404, "not found"),
        };
        if method != allowed && !(allowed == "GET" && method == "HEAD") {
            return error(405, "method not allowed").with_additional_header("Allow", allowed);
        }
        if path != "/health" {
            if let Err(secs) = self.limiter.check(req.remote_addr().ip(), Instant::now()) {
                return error(429, "too many requests")
                    .with_additional_header("Retry-After", secs.to_string());
            }
        }
        match path.as_str() {
            "/" => Response::html(INDEX),
            "/health" => Response::json(&json!({"status": "healthy", "servers": (self.health)()})),
            "/server_pub_key" => Response::json(&json!({"server_pub_key": self.server_pub_key})),
            "/register" => self.register(req),
            "/clients" => self.clients(req),
            p => self.revoke(req, &p[REVOKE.len()..]),
        }
    }

    /// `Err` with the answer unless the request carries the bearer token;
    /// `Ok` when the API runs without one.
    fn check_token(&self, req: &Request) -> Result<(), Response> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = req
            .header("Authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(error(401, "a valid bearer token is required")
                .with_additional_header("WWW-Authenticate", "Bearer"))
        }
    }

    /// Like [`KeyApi::check_token`], for the endpoints that exist only
    /// with a token: without one they are forbidden to everyone.
    fn check_admin(&self, req: &Request) -> Result<(), Response> {
        if self.token.is_none() {
            return Err(error(
                403,
                "this endpoint needs the key API to run with --key-server-token-file",
            ));
        }
        self.check_token(req)
    }

    fn register(&self, req: &Request) -> Response {
        if let Err(r) = self.check_token(req) {
            return r;
        }
        let ctype = req.header("Content-Type").unwrap_or("");
        let mime = ctype.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return error(415, "Content-Type must be application/json");
        }
        if let Some(len) = req.header("Content-Length") {
            match len.trim().parse::<usize>() {
                Ok(n) if n > MAX_BODY => return error(413, "request body too large"),
                Ok(_) => {}
                Err(_) => return error(400, "invalid Content-Length"),
            }
        }
        let Some(body) = req.data() else {
            return error(400, "request body already read");
        };
        let mut buf = Vec::new();
        if body
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut buf)
            .is_err()
        {
            return error(400, "could not read the request body");
        }
        if buf.len() > MAX_BODY {
            return error(413, "request body too large");
        }
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&buf) else {
            return error(400, "body is not a JSON object");
        };
        if let Some(f) = body.keys().find(|f| !REGISTER_FIELDS.contains(&f.as_str())) {
            // A misspelt "servers" must not register an unrestricted key.
            let f: String = f.chars().take(64).collect();
            return error(400, &format!("unknown field {f:?}"));
        }
        let key = match body.get("client_pub_key") {
            Some(Value::String(s)) => s,
            Some(_) => return error(400, "client_pub_key must be a string"),
            None => return error(400, "missing field client_pub_key"),
        };
        let ip = req.remote_addr().ip();
        let line = validate::validate(key)
            .map_err(|why| format!("invalid key: {why}"))
            .and_then(|key| self.scope(&body)?.line(&key));
        let line = match line {
            Ok(l) => l,
            Err(why) => {
                log::info!("key API: refused a registration from {ip}: {why}");
                return error(400, &why);
            }
        };
        let (key, options) = (line.key(), line.options_text());
        match self.registry.add(&line) {
            Ok(Added::OtherOptions) => error(
                409,
                &format!(
                    "this key is registered already, with other options: revoke it first \
                     (DELETE /clients/{})",
                    key.fingerprint()
                ),
            ),
            Ok(added) => {
                log::info!(
                    "key API: {} {} key {}{} from {ip}",
                    if added == Added::New {
                        "registered"
                    } else {
                        "already had"
                    },
                    key.kind,
                    key.fingerprint(),
                    if options.is_empty() {
                        String::new()
                    } else {
                        format!(" with {options}")
                    },
                );
                Response::json(&json!({"status": "success"}))
            }
            Err(e) => {
                log::error!(
                    "key API: cannot write {}: {e}",
                    self.registry.path().display()
                );
                error(500, "internal error")
            }
        }
    }

    /// The `"servers"` and `"tools"` of a registration body, checked; only
    /// with a token (without one, options stay refused).
    fn scope(&self, body: &Map<String, Value>) -> Result<Scope, String> {
        if self.token.is_none() && (body.contains_key("servers") || body.contains_key("tools")) {
            return Err(
                "servers and tools need the key API to run with --key-server-token-file".into(),
            );
        }
        let list = |field: &str| -> Result<Option<Vec<String>>, String> {
            let not_strings = || format!("{field} must be an array of strings");
            match body.get(field) {
                None => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned).ok_or_else(not_strings))
                    .collect::<Result<_, _>>()
                    .map(Some),
                Some(_) => Err(not_strings()),
            }
        };
        Scope::new(list("servers")?, list("tools")?, &(self.servers)())
    }

    /// `GET /clients`: every key line of both trust files.
    fn clients(&self, req: &Request) -> Response {
        if let Err(r) = self.check_admin(req) {
            return r;
        }
        match clients::list(&self.authorized, self.registry.path()) {
            Ok(all) => {
                let all: Vec<Value> = all.iter().map(Client::to_json).collect();
                Response::json(&json!({ "clients": all }))
            }
            Err(e) => {
                log::error!("key API: cannot read the trust files: {e}");
                error(500, "internal error")
            }
        }
    }

    /// `DELETE /clients/SHA256:...`: the key leaves `--registered-clients`;
    /// one in `--authorized-clients` is reported, never edited.
    fn revoke(&self, req: &Request, fingerprint: &str) -> Response {
        if let Err(r) = self.check_admin(req) {
            return r;
        }
        if !clients::is_fingerprint(fingerprint) {
            return error(
                400,
                "not a key fingerprint: write SHA256: and 43 base64 characters, as ssh-keygen -l prints it",
            );
        }
        let ip = req.remote_addr().ip();
        match clients::revoke(&self.registry, &self.authorized, fingerprint) {
            Ok(Revocation::Removed {
                lines,
                also_authorized,
            }) => {
                log::info!(
                    "key API: revoked key {fingerprint} ({lines} line(s)) for {ip}{}",
                    if also_authorized {
                        "; --authorized-clients still trusts it"
                    } else {
                        ""
                    }
                );
                Response::json(&json!({
                    "status": "success",
                    "removed": lines,
                    "in_authorized_clients": also_authorized,
                }))
            }
            Ok(Revocation::OnlyAuthorized) => error(
                409,
                "this key is in --authorized-clients, which the key API never edits: remove it there by hand",
            ),
            Ok(Revocation::NotFound) => error(404, "no trusted key has this fingerprint"),
            Err(e) => {
                log::error!(
                    "key API: cannot revoke {fingerprint} from {}: {e}",
                    self.registry.path().display()
                );
                error(500, "internal error")
            }
        }
    }
}

/// The fields a registration body may have.
const REGISTER_FIELDS: [&str; 3] = ["client_pub_key", "servers", "tools"];

/// Where a revocation's fingerprint starts.
const REVOKE: &str = "/clients/";

pub use front::{Limits, Running, start};

mod front;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_n_per_window_and_stays_bounded() {
        let l = RateLimiter::new(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        assert!(l.check(ip, t).is_ok());
        assert!(l.check(ip, t).is_ok());
        assert!(l.check(ip, t).is_ok());
        let wait = l.check(ip, t + Duration::from_secs(15)).unwrap_err();
        assert_eq!(wait, 45);
        assert!(l.check(ip, t + WINDOW).is_ok());
        for i in 0..(MAX_TRACKED_IPS as u32 + 50) {
            let _ = l.check(IpAddr::from(i.to_be_bytes()), t);
        }
        assert!(l.tracked() <= MAX_TRACKED_IPS);
    }

    #[test]
    fn constant_time_eq_matches_only_equal() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
