//! SSH keys: OpenSSH public-key lines, ed25519 key generation in OpenSSH
//! format (shared by server and client), and file-mode checks.

pub mod authorized;
pub mod cert;
pub mod clients;
pub mod command;
pub mod options;
pub mod pattern;
pub mod registry;
pub mod revoked;
pub mod scope;
pub mod validate;

use crate::error::Error;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A public key as it appears on an OpenSSH line: type, decoded blob, comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: String,
    pub blob: Vec<u8>,
    pub comment: String,
}

impl PublicKey {
    /// `type base64 [comment]`, the OpenSSH public line.
    pub fn to_line(&self) -> String {
        let b = B64.encode(&self.blob);
        if self.comment.is_empty() {
            format!("{} {b}", self.kind)
        } else {
            format!("{} {b} {}", self.kind, self.comment)
        }
    }

    /// SHA256 fingerprint as OpenSSH prints it (`SHA256:...`, no padding).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.blob)
    }
}

/// `SHA256:<base64 without padding>` of a key blob.
pub fn fingerprint(blob: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(blob);
    let b = base64::engine::general_purpose::STANDARD_NO_PAD.encode(d);
    format!("SHA256:{b}")
}

/// Appends an SSH wire string (u32 length + bytes).
pub(crate) fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// The public blob of an ed25519 key.
pub fn ed25519_blob(public: &[u8; 32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(51);
    put_string(&mut b, b"ssh-ed25519");
    put_string(&mut b, public);
    b
}

/// A fresh ed25519 key: (OpenSSH private key file text, public line).
pub fn generate_ed25519(comment: &str) -> (String, String) {
    let seed: [u8; 32] = rand::random();
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pk = sk.verifying_key().to_bytes();
    let pub_blob = ed25519_blob(&pk);

    // The private section (PROTOCOL.key in OpenSSH): two equal check ints,
    // the key, the comment, then padding 1,2,3.. to the cipher block size (8).
    let check: u32 = rand::random();
    let mut private = Vec::new();
    private.extend_from_slice(&check.to_be_bytes());
    private.extend_from_slice(&check.to_be_bytes());
    put_string(&mut private, b"ssh-ed25519");
    put_string(&mut private, &pk);
    let mut secret = Vec::with_capacity(64);
    secret.extend_from_slice(&seed);
    secret.extend_from_slice(&pk);
    put_string(&mut private, &secret);
    put_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }

    let mut file = Vec::new();
    file.extend_from_slice(b"openssh-key-v1\0");
    put_string(&mut file, b"none");
    put_string(&mut file, b"none");
    put_string(&mut file, b"");
    file.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut file, &pub_blob);
    put_string(&mut file, &private);

    let b64 = B64.encode(&file);
    let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(70) {
        text.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        text.push('\n');
    }
    text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    let public = PublicKey {
        kind: "ssh-ed25519".into(),
        blob: pub_blob,
        comment: comment.into(),
    };
    (text, public.to_line())
}

/// Makes sure an ed25519 key exists at `path`: generates one (private 0600,
/// `.pub` 0644, parent directory 0700) when missing, warns when an existing
/// private key is readable by group or others. Returns true if generated.
pub fn ensure_key(path: &Path, comment: &str) -> Result<bool, Error> {
    if path.exists() {
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                log::warn!(
                    "private key {} has mode {mode:o}: it is readable by others; run chmod 600 on it",
                    path.display()
                );
            }
        }
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::Key(format!("cannot create {}: {e}", dir.display())))?;
    }
    let (private, public) = generate_ed25519(comment);
    write_new(path, private.as_bytes(), 0o600)?;
    write_new(&pub_path(path), format!("{public}\n").as_bytes(), 0o644)?;
    log::info!("generated a new ed25519 key at {}", path.display());
    Ok(true)
}

/// `<path>.pub`
pub fn pub_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let e = |e: std::io::Error| Error::Key(format!("cannot write {}: {e}", path.display()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(e)?;
    f.write_all(data).map_err(e)?;
    // The mode passed to open is filtered by the umask; set it exactly.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(e)?;
    Ok(())
}

/// Parses an OpenSSH public-key line, with or without leading options
/// (authorized_keys style). Returns the key and the raw options text.
pub fn parse_line(line: &str) -> Option<(PublicKey, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // Options come first and may contain quoted spaces; the key type is the
    // first whitespace-separated token outside quotes that names a key type.
    let start;
    let mut in_quote = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    loop {
        // Skip whitespace to the next token.
        while i < bytes.len() && !in_quote && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        let tok_start = i;
        while i < bytes.len() && (in_quote || !bytes[i].is_ascii_whitespace()) {
            if bytes[i] == b'"' {
                in_quote = !in_quote;
            } else if bytes[i] == b'\\' && in_quote {
                i += 1;
            }
            i += 1;
        }
        let tok = &line[tok_start..i.min(line.len())];
        if is_key_type(tok) {
            start = tok_start;
            break;
        }
    }
    let options = line[..start].trim().to_owned();
    let mut rest = line[start..].splitn(3, char::is_whitespace);
    let kind = rest.next()?.to_owned();
    let b64 = rest.next()?;
    let comment = rest.next().unwrap_or("").trim().to_owned();
    let blob = B64.decode(b64).ok()?;
    Some((
        PublicKey {
            kind,
            blob,
            comment,
        },
        options,
    ))
}

/// Key type names OpenSSH knows (certificates excluded).
pub fn is_key_type(t: &str) -> bool {
    matches!(
        t,
        "ssh-ed25519"
            | "ssh-rsa"
            | "ecdsa-sha2-nistp256"
            | "ecdsa-sha2-nistp384"
            | "ecdsa-sha2-nistp521"
            | "sk-ssh-ed25519@openssh.com"
            | "sk-ecdsa-sha2-nistp256@openssh.com"
            | "ssh-dss"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_optioned_lines() {
        let (k, o) = parse_line("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host").unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.comment, "me@host");
        assert_eq!(k.blob.len(), 51);
        assert!(o.is_empty());
        let (k2, o) = parse_line("command=\"echo a b\",no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl").unwrap();
        assert_eq!(k2.blob, k.blob);
        assert_eq!(o, "command=\"echo a b\",no-pty");
        assert!(parse_line("# comment").is_none());
        assert!(parse_line("   ").is_none());
        assert!(parse_line("ssh-ed25519 !!!").is_none());
    }

    #[test]
    fn generated_key_round_trips_and_fingerprints() {
        let (private, public) = generate_ed25519("test");
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let (k, _) = parse_line(&public).unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.comment, "test");
        assert!(k.fingerprint().starts_with("SHA256:"));
        assert_eq!(k.fingerprint().len(), 7 + 43);
    }
}
