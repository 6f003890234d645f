//! Validation of one submitted public-key line (the key API's input).
//!
//! Accepted: `type base64 [comment]` on one line, a known type, base64 that
//! decodes to a complete blob whose inner type matches, a valid point for
//! ed25519, RSA of 2048 bits or more. No authorized_keys options. A comment
//! is kept only if it is short and printable ASCII; otherwise it is dropped.

use super::PublicKey;
use crate::error::Error;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Longest line considered at all (an RSA-16384 key is about 2.8 KB).
pub const MAX_LINE: usize = 8 * 1024;
const MAX_COMMENT: usize = 256;

const ALLOWED: [&str; 7] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Checks a submitted key line; the error says why it was refused.
pub fn validate(line: &str) -> Result<PublicKey, Error> {
    check(line).map_err(Error::Key)
}

fn check(line: &str) -> Result<PublicKey, String> {
    // One trailing line ending is tolerated: the Python client sends its key
    // as asyncssh exports it, with a final newline. Any other is refused.
    let line = line
        .strip_suffix("\r\n")
        .or_else(|| line.strip_suffix('\n'))
        .unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(format!("key line longer than {MAX_LINE} bytes"));
    }
    if line.contains(['\n', '\r']) {
        return Err("key must be a single line".into());
    }
    if line.contains('\0') {
        return Err("key contains a NUL byte".into());
    }
    let line = line.trim_matches([' ', '\t']);
    let mut parts = line.splitn(3, [' ', '\t']);
    let kind = parts.next().unwrap_or("");
    if !ALLOWED.contains(&kind) {
        if kind.contains('=') || kind.contains(',') || kind.contains('"') {
            return Err("authorized_keys options are not allowed".into());
        }
        return Err(format!(
            "unsupported key type {:?}; use one of {}",
            kind.chars().take(40).collect::<String>(),
            ALLOWED.join(", ")
        ));
    }
    let b64 = parts.next().unwrap_or("").trim();
    if b64.is_empty() {
        return Err("missing base64 key data".into());
    }
    let blob = B64
        .decode(b64)
        .map_err(|_| "key data is not valid base64".to_string())?;
    check_blob(kind, &blob)?;
    let comment = parts.next().unwrap_or("").trim();
    let comment =
        if comment.len() <= MAX_COMMENT && comment.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            comment.to_owned()
        } else {
            String::new()
        };
    Ok(PublicKey {
        kind: kind.to_owned(),
        blob,
        comment,
    })
}

/// A reader over SSH wire-format fields.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn string(&mut self) -> Result<&'a [u8], String> {
        if self.0.len() < 4 {
            return Err("key blob is truncated".into());
        }
        let n = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        if self.0.len() - 4 < n {
            return Err("key blob is truncated".into());
        }
        let (s, rest) = self.0[4..].split_at(n);
        self.0 = rest;
        Ok(s)
    }
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("key blob has trailing bytes".into())
        }
    }
}

fn check_blob(kind: &str, blob: &[u8]) -> Result<(), String> {
    let mut w = Wire(blob);
    let inner = w.string()?;
    if inner != kind.as_bytes() {
        return Err(format!(
            "key type {kind} does not match the key data ({})",
            String::from_utf8_lossy(inner)
                .chars()
                .take(40)
                .collect::<String>()
        ));
    }
    match kind {
        "ssh-ed25519" | "sk-ssh-ed25519@openssh.com" => {
            let pk = w.string()?;
            let pk: [u8; 32] = pk
                .try_into()
                .map_err(|_| "ed25519 key must be 32 bytes".to_string())?;
            ed25519_dalek::VerifyingKey::from_bytes(&pk)
                .map_err(|_| "not a valid ed25519 public key".to_string())?;
            if kind.starts_with("sk-") {
                w.string()?; // application
            }
        }
        "ssh-rsa" => {
            let e = mpint(w.string()?)?;
            let n = mpint(w.string()?)?;
            if e.is_empty() || e[e.len() - 1] & 1 == 0 {
                return Err("RSA public exponent must be odd".into());
            }
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if bits < 2048 {
                return Err(format!(
                    "RSA key of {bits} bits is too weak; 2048 or more required"
                ));
            }
            if bits > 16384 {
                return Err("RSA key larger than 16384 bits".into());
            }
        }
        _ => {
            // ECDSA (plain and security-key): curve name and an uncompressed point.
            let curve = w.string()?;
            let (name, len) = match kind {
                "ecdsa-sha2-nistp384" => ("nistp384", 97),
                "ecdsa-sha2-nistp521" => ("nistp521", 133),
                _ => ("nistp256", 65),
            };
            if curve != name.as_bytes() {
                return Err("ECDSA curve does not match the key type".into());
            }
            let q = w.string()?;
            if q.len() != len || q[0] != 4 {
                return Err("ECDSA point must be uncompressed and of the curve's size".into());
            }
            if kind.starts_with("sk-") {
                w.string()?;
            }
        }
    }
    w.end()
}

/// The magnitude bytes of a positive SSH mpint.
fn mpint(b: &[u8]) -> Result<&[u8], String> {
    if b.first().is_some_and(|x| x & 0x80 != 0) {
        return Err("negative number in RSA key".into());
    }
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    Ok(&b[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate_ed25519, put_string};

    fn b64(b: &[u8]) -> String {
        B64.encode(b)
    }

    fn rsa_blob(bits: usize) -> Vec<u8> {
        let mut n = vec![0u8; 1];
        n.push(0xc1);
        n.extend(std::iter::repeat_n(0x55u8, bits / 8 - 1));
        let mut blob = Vec::new();
        put_string(&mut blob, b"ssh-rsa");
        put_string(&mut blob, &[1, 0, 1]);
        put_string(&mut blob, &n);
        blob
    }

    #[test]
    fn accepts_real_keys_and_keeps_printable_comments() {
        let (_, public) = generate_ed25519("me@host");
        let k = validate(&public).unwrap();
        assert_eq!(k.comment, "me@host");
        let k = validate(&format!("ssh-rsa {} rsa", b64(&rsa_blob(2048)))).unwrap();
        assert_eq!(k.kind, "ssh-rsa");
        let mut ec = Vec::new();
        put_string(&mut ec, b"ecdsa-sha2-nistp256");
        put_string(&mut ec, b"nistp256");
        let mut q = vec![4u8];
        q.extend([7u8; 64]);
        put_string(&mut ec, &q);
        assert!(validate(&format!("ecdsa-sha2-nistp256 {}", b64(&ec))).is_ok());
        assert_eq!(validate(&format!("{public}\n")).unwrap().comment, "me@host");
        let bad_comment = format!("{} \u{1b}[31mred", public.rsplit_once(' ').unwrap().0);
        assert_eq!(validate(&bad_comment).unwrap().comment, "");
    }

    #[test]
    fn refuses_hostile_input_with_a_reason() {
        let (_, public) = generate_ed25519("x");
        let body = public.split_whitespace().nth(1).unwrap().to_owned();
        let cases = [
            (
                format!("{public}\nssh-ed25519 {body} second"),
                "single line",
            ),
            (format!("{public}\rssh-ed25519 {body}"), "single line"),
            (format!("{public}\n\n"), "single line"),
            (format!("command=\"sh\" ssh-ed25519 {body}"), "options"),
            (format!("no-pty,ssh-ed25519 {body}"), "options"),
            (format!("ssh-ed25519 {body}\0"), "NUL"),
            ("ssh-ed25519 !!notbase64!!".into(), "base64"),
            (format!("ssh-rsa {body}"), "does not match"),
            ("ssh-dss AAAA".into(), "unsupported"),
            ("ssh-ed25519".into(), "missing"),
            (format!("ssh-rsa {}", b64(&rsa_blob(1024))), "too weak"),
            (
                format!("ssh-ed25519 {}", b64(&B64.decode(&body).unwrap()[..40])),
                "truncated",
            ),
            ("x".repeat(MAX_LINE + 1), "longer"),
        ];
        for (line, why) in cases {
            let e = validate(&line).expect_err(&line).to_string();
            assert!(e.contains(why), "{line:?}: {e}");
        }
        // ed25519 blob whose key field is 31 bytes long.
        let mut blob = Vec::new();
        put_string(&mut blob, b"ssh-ed25519");
        put_string(&mut blob, &[9u8; 31]);
        assert!(
            validate(&format!("ssh-ed25519 {}", b64(&blob)))
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        // trailing bytes
        let mut blob = B64.decode(&body).unwrap();
        blob.push(0);
        assert!(
            validate(&format!("ssh-ed25519 {}", b64(&blob)))
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
    }
}
