//! OpenSSH `known_hosts` lookups: plain and hashed (`|1|salt|hash`) host
//! fields, comma-separated names, the `[host]:port` form for ports other
//! than 22, negated and wildcard patterns, `@revoked` markers.

use crate::keys::parse_line;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};

/// What the file says about a host's key.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An entry for this host lists exactly this key.
    Match,
    /// The key is marked `@revoked`.
    Revoked,
    /// The host is listed, but with other keys (possible attack).
    Mismatch,
    /// The host is not listed.
    Unknown,
}

/// The name OpenSSH uses for a host and port in known_hosts.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `blob` (the server's key) for `host`:`port` against file text.
pub fn check(text: &str, host: &str, port: u16, blob: &[u8]) -> Verdict {
    let name = host_name(host, port);
    let mut listed = false;
    let mut matched = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (marker, rest) = match line.strip_prefix('@') {
            Some(r) => match r.split_once(char::is_whitespace) {
                Some((m, rest)) => (Some(m), rest.trim_start()),
                None => continue,
            },
            None => (None, line),
        };
        let Some((hosts, keypart)) = rest.split_once(char::is_whitespace) else {
            continue;
        };
        if !hosts_match(hosts, &name) {
            continue;
        }
        let Some((key, _)) = parse_line(keypart) else {
            continue;
        };
        match marker {
            Some("revoked") if key.blob == blob => return Verdict::Revoked,
            Some(_) => continue, // @cert-authority: not used for plain host keys
            None => {
                listed = true;
                matched |= key.blob == blob;
            }
        }
    }
    match (matched, listed) {
        (true, _) => Verdict::Match,
        (false, true) => Verdict::Mismatch,
        _ => Verdict::Unknown,
    }
}

fn hosts_match(field: &str, name: &str) -> bool {
    if let Some(h) = field.strip_prefix("|1|") {
        return hashed_match(h, name);
    }
    let mut positive = false;
    for pat in field.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if wildcard(neg, name) {
                return false;
            }
        } else if wildcard(pat, name) {
            positive = true;
        }
    }
    positive
}

fn hashed_match(field: &str, name: &str) -> bool {
    let Some((salt, hash)) = field.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (B64.decode(salt), B64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` and `?` glob, case-insensitive like OpenSSH host names.
fn wildcard(pat: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pat.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_ed25519;

    fn blob(line: &str) -> Vec<u8> {
        parse_line(line).unwrap().0.blob
    }

    #[test]
    fn plain_hashed_ported_and_wildcard_entries() {
        let (_, a) = generate_ed25519("a");
        let (_, b) = generate_ed25519("b");
        let text = format!(
            "# c\nexample.com,10.0.0.1 {a}\n[example.com]:8022 {b}\n*.corp,!bad.corp {a}\n"
        );
        assert_eq!(check(&text, "example.com", 22, &blob(&a)), Verdict::Match);
        assert_eq!(check(&text, "10.0.0.1", 22, &blob(&a)), Verdict::Match);
        assert_eq!(check(&text, "example.com", 8022, &blob(&b)), Verdict::Match);
        assert_eq!(
            check(&text, "example.com", 8022, &blob(&a)),
            Verdict::Mismatch
        );
        assert_eq!(check(&text, "x.corp", 22, &blob(&a)), Verdict::Match);
        assert_eq!(check(&text, "bad.corp", 22, &blob(&a)), Verdict::Unknown);
        assert_eq!(check(&text, "other", 22, &blob(&a)), Verdict::Unknown);
        let revoked = format!("{text}@revoked * {b}\n");
        assert_eq!(
            check(&revoked, "example.com", 8022, &blob(&b)),
            Verdict::Revoked
        );
    }

    #[test]
    fn hashed_entry_matches_like_ssh_keygen_writes_it() {
        // HMAC-SHA1(salt, "[localhost]:8022"), as `ssh-keygen -H` computes it.
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[localhost]:8022");
        let hash = mac.finalize().into_bytes();
        let (_, a) = generate_ed25519("a");
        let text = format!("|1|{}|{} {a}\n", B64.encode(salt), B64.encode(hash));
        assert_eq!(check(&text, "localhost", 8022, &blob(&a)), Verdict::Match);
        assert_eq!(check(&text, "localhost", 22, &blob(&a)), Verdict::Unknown);
    }
}
