//! `--revoked-keys FILE` (sshd's `RevokedKeys`): public keys that may not
//! log in however they are offered. One key a line (authorized_keys syntax;
//! options and comments are ignored); a certificate line revokes the key it
//! certifies. A listed key is refused as a plain key, as the key inside a
//! certificate, as the CA that signed a certificate (so revoking a CA key
//! refuses every certificate it signed, as in sshd), and from the
//! AuthorizedKeysCommand.
//!
//! Fails closed: a file that cannot be read refuses every key until it can
//! (as sshd), and OpenSSH's binary KRL format is refused (a KRL read as
//! lines would revoke nothing). A line that is not a key is skipped with a
//! warning. Re-read when the file changes (a stat per check), so a key
//! added here ends its open sessions within the 2 s trust re-check.

use super::authorized::stamp;
use super::cert::{certified_key, is_cert_type};
use super::is_key_type;
use crate::error::Error;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// The magic at the start of an OpenSSH KRL.
const KRL_MAGIC: &[u8] = b"SSHKRL\n\0";

struct State {
    stamp: Option<(SystemTime, u64, u64)>,
    /// Plain key blobs; Err when the file cannot be used.
    keys: Result<HashSet<Vec<u8>>, String>,
}

/// The revocation list, re-read when its file changes.
pub struct Revoked {
    path: PathBuf,
    state: Mutex<State>,
}

impl Revoked {
    /// Opens the list; a file that cannot be read or parsed now is a
    /// configuration error (exit 2), not a server that refuses everyone.
    pub fn open(path: PathBuf) -> Result<Revoked, Error> {
        let r = Revoked {
            path,
            state: Mutex::new(State {
                stamp: None,
                keys: Err(String::new()),
            }),
        };
        let n = r
            .with(|keys| keys.map(HashSet::len).map_err(String::clone))
            .map_err(|e| Error::Config(format!("--revoked-keys {}: {e}", r.path.display())))?;
        log::info!("{n} revoked key(s) in {}", r.path.display());
        Ok(r)
    }

    /// Err naming the first of `keys` (plain blobs, each with what it is:
    /// "key", "CA key") that is revoked, or why no key can be trusted now.
    pub fn check(&self, keys: &[(&str, &[u8])]) -> Result<(), String> {
        self.with(|set| {
            let set = set.map_err(|e| {
                format!(
                    "the revoked-keys file {} cannot be used ({e}): every key is refused",
                    self.path.display()
                )
            })?;
            match keys.iter().find(|(_, k)| set.contains(*k)) {
                Some((what, k)) => Err(format!(
                    "{what} {} is revoked (listed in {})",
                    super::fingerprint(k),
                    self.path.display()
                )),
                None => Ok(()),
            }
        })
    }

    fn with<T>(&self, f: impl FnOnce(Result<&HashSet<Vec<u8>>, &String>) -> T) -> T {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now.is_none() || now != st.stamp {
            st.stamp = now;
            let keys = read(&self.path);
            // Logged when it starts failing (or fails anew), not at every check.
            if let Err(e) = &keys
                && st.keys.as_ref().err() != Some(e)
            {
                log::error!(
                    "--revoked-keys {}: {e}; every key is refused",
                    self.path.display()
                );
            }
            st.keys = keys;
        }
        f(st.keys.as_ref())
    }
}

fn read(path: &Path) -> Result<HashSet<Vec<u8>>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.starts_with(KRL_MAGIC) {
        return Err(
            "a binary KRL, which this server does not read: list public keys, \
                    one a line"
                .into(),
        );
    }
    let text = String::from_utf8_lossy(&bytes);
    Ok(parse(&text, path))
}

/// The plain key blobs of the lines of `text`.
fn parse(text: &str, path: &Path) -> HashSet<Vec<u8>> {
    let mut keys = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match key_of(line) {
            Some(k) => {
                keys.insert(k);
            }
            None => log::warn!(
                "{}:{}: not a public key or certificate line; skipped",
                path.display(),
                n + 1
            ),
        }
    }
    keys
}

/// The plain key blob a line names: the first `type base64` pair, options
/// before it ignored; a certificate stands for the key it certifies.
fn key_of(line: &str) -> Option<Vec<u8>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| is_key_type(w) || is_cert_type(w))?;
    let blob = B64.decode(words.get(i + 1)?).ok()?;
    // The blob must be of the type the line names.
    let mut named = Vec::new();
    super::put_string(&mut named, words[i].as_bytes());
    if !blob.starts_with(&named) {
        return None;
    }
    if is_cert_type(words[i]) {
        certified_key(&blob).ok().map(|(_, k)| k)
    } else {
        Some(blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_plain_keys_and_certificates_by_their_key() {
        let (_, a) = crate::keys::generate_ed25519("a");
        let a_blob = crate::keys::parse_line(&a).unwrap().0.blob;
        let text = format!(
            "# revoked\n\nno-pty {a}\nnot a key\nssh-ed25519 !!!\nssh-rsa {}\n",
            B64.encode(&a_blob)
        );
        let keys = parse(&text, Path::new("r"));
        // The ssh-rsa line's blob is an ed25519 key: skipped.
        assert_eq!(keys.len(), 1);
        assert!(keys.contains(&a_blob));
    }

    #[test]
    fn missing_krl_and_changed_files() {
        let dir = std::env::temp_dir().join(format!("m2m-revoked-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("revoked");
        assert!(Revoked::open(path.clone()).is_err(), "a missing file");
        std::fs::write(&path, b"SSHKRL\n\0\0\0\0\x01").unwrap();
        let e = Revoked::open(path.clone()).err().unwrap().to_string();
        assert!(e.contains("KRL"), "{e}");
        std::fs::write(&path, "").unwrap();
        let r = Revoked::open(path.clone()).unwrap();
        let (_, a) = crate::keys::generate_ed25519("a");
        let blob = crate::keys::parse_line(&a).unwrap().0.blob;
        assert_eq!(r.check(&[("key", &blob)]), Ok(()));
        std::fs::write(&path, format!("{a}\n")).unwrap();
        let e = r.check(&[("other", b"x"), ("CA key", &blob)]).unwrap_err();
        assert!(
            e.starts_with("CA key SHA256:") && e.contains("is revoked"),
            "{e}"
        );
        // Gone: fail closed.
        std::fs::remove_file(&path).unwrap();
        let e = r.check(&[("key", b"x")]).unwrap_err();
        assert!(e.contains("every key is refused"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
