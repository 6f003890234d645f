//! Who is trusted, for people: every key line of the two trust files, and
//! revocation from the registered-clients file. Shared by the key API
//! (`GET /clients`, `DELETE /clients/SHA256:...`) and the server binary's
//! `clients list` / `clients revoke`, which work on the same files.
//! `--authorized-clients` is only ever read here.

use super::options::KeyOptions;
use super::parse_line;
use super::registry::{Registry, added_time};
use serde_json::{Value, json};
use std::io;
use std::path::Path;

/// Which trust file a line is in (named after its flag: the key API never
/// shows paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Authorized,
    Registered,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Authorized => "authorized-clients",
            Source::Registered => "registered-clients",
        }
    }
}

/// One key line of a trust file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub kind: String,
    pub comment: String,
    /// The options text as written ("" for none).
    pub options: String,
    /// Why the server ignores this line (options it cannot honour).
    pub refused: Option<String>,
    pub source: Source,
    /// 1-based line number.
    pub line: usize,
    /// The time of the `# added` line just before (registered keys).
    pub added: Option<String>,
}

impl Client {
    pub fn to_json(&self) -> Value {
        json!({
            "fingerprint": self.fingerprint,
            "type": self.kind,
            "comment": self.comment,
            "options": self.options,
            "file": self.source.label(),
            "line": self.line,
            "added": self.added,
            "refused": self.refused,
        })
    }
}

/// The key lines of `path` (none when it does not exist), in file order.
pub fn read(path: &Path, source: Source) -> io::Result<Vec<Client>> {
    let text = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    let mut out = Vec::new();
    let mut added = None;
    for (i, line) in text.lines().enumerate() {
        let Some((key, options)) = parse_line(line) else {
            added = added_time(line).map(str::to_owned);
            continue;
        };
        out.push(Client {
            fingerprint: key.fingerprint(),
            refused: KeyOptions::parse(&options).err().map(|e| e.to_string()),
            kind: key.kind,
            comment: key.comment,
            options,
            source,
            line: i + 1,
            added: added.take(),
        });
    }
    Ok(out)
}

/// Every key line of both files, `--authorized-clients` first.
pub fn list(authorized: &Path, registered: &Path) -> io::Result<Vec<Client>> {
    let mut all = read(authorized, Source::Authorized)?;
    all.extend(read(registered, Source::Registered)?);
    Ok(all)
}

/// Whether `s` has the form of a SHA-256 key fingerprint (`SHA256:` and 43
/// characters of unpadded base64).
pub fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    })
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// `lines` key lines left the registered-clients file; the key may
    /// also be in `--authorized-clients`, where it stays trusted.
    Removed {
        lines: usize,
        also_authorized: bool,
    },
    /// Only `--authorized-clients` lists it: nothing was changed.
    OnlyAuthorized,
    NotFound,
}

/// Revokes the key with this fingerprint from `registry`'s file (see
/// [`Registry::remove`]); `authorized` is read, never written.
pub fn revoke(registry: &Registry, authorized: &Path, fingerprint: &str) -> io::Result<Revocation> {
    // Read first: an unreadable file fails before anything changes.
    let in_authorized = read(authorized, Source::Authorized)?
        .iter()
        .any(|c| c.fingerprint == fingerprint);
    Ok(match (registry.remove(fingerprint)?, in_authorized) {
        (0, true) => Revocation::OnlyAuthorized,
        (0, false) => Revocation::NotFound,
        (lines, also_authorized) => Revocation::Removed {
            lines,
            also_authorized,
        },
    })
}

/// A table for people, one key line a row, with a header.
pub fn table(clients: &[Client]) -> String {
    let header = [
        "FINGERPRINT",
        "TYPE",
        "FILE:LINE",
        "ADDED",
        "OPTIONS",
        "COMMENT",
    ];
    let rows: Vec<[String; 6]> = clients
        .iter()
        .map(|c| {
            let mut comment = c.comment.clone();
            if let Some(why) = &c.refused {
                comment = format!("{comment} (ignored by the server: {why})")
                    .trim_start()
                    .to_owned();
            }
            [
                c.fingerprint.clone(),
                c.kind.clone(),
                format!("{}:{}", c.source.label(), c.line),
                c.added.clone().unwrap_or_else(|| "-".into()),
                if c.options.is_empty() {
                    "-".into()
                } else {
                    c.options.clone()
                },
                comment,
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::registry::KeyLine;
    use crate::keys::{PublicKey, generate_ed25519};

    fn key(comment: &str) -> (String, PublicKey) {
        let (_, line) = generate_ed25519(comment);
        let k = parse_line(&line).unwrap().0;
        (line, k)
    }

    #[test]
    fn lists_both_files_with_options_times_and_refusals() {
        let dir = std::env::temp_dir().join(format!("m2m-clients-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (auth, reg) = (dir.join("authorized"), dir.join("registered"));
        let ((a, ka), (b, kb), (_, kc)) = (key("a@x"), key("b@y"), key(""));
        std::fs::write(&auth, format!("# admin\n{a}\nfrobnicate {b}\n")).unwrap();
        let r = Registry::new(reg.clone());
        r.add(&KeyLine::new(&kc, "command=\"t\"").unwrap()).unwrap();
        let all = list(&auth, &reg).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            (all[0].fingerprint.as_str(), all[0].line, all[0].source),
            (ka.fingerprint().as_str(), 2, Source::Authorized)
        );
        assert_eq!(
            (all[0].comment.as_str(), all[0].added.as_ref()),
            ("a@x", None)
        );
        assert_eq!(all[1].fingerprint, kb.fingerprint());
        assert!(all[1].refused.as_ref().unwrap().contains("frobnicate"));
        assert_eq!(all[2].options, "command=\"t\"");
        assert_eq!(all[2].line, 2);
        assert!(all[2].added.as_ref().unwrap().ends_with('Z'));
        let j = all[2].to_json();
        assert_eq!(j["file"], "registered-clients");
        assert_eq!(j["type"], "ssh-ed25519");
        assert!(j["refused"].is_null());
        let t = table(&all);
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(t.starts_with("FINGERPRINT"), "{t}");
        assert!(t.contains("registered-clients:2"), "{t}");
        assert!(t.contains("ignored by the server"), "{t}");

        // Revocation: a registered key goes, an authorized one is only reported.
        assert_eq!(
            revoke(&r, &auth, &ka.fingerprint()).unwrap(),
            Revocation::OnlyAuthorized
        );
        assert_eq!(
            revoke(&r, &auth, &kc.fingerprint()).unwrap(),
            Revocation::Removed {
                lines: 1,
                also_authorized: false
            }
        );
        assert_eq!(
            revoke(&r, &auth, &kc.fingerprint()).unwrap(),
            Revocation::NotFound
        );
        assert!(std::fs::read_to_string(&auth).unwrap().contains(&a));
        assert!(
            read(&dir.join("missing"), Source::Registered)
                .unwrap()
                .is_empty()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_have_one_form() {
        let (_, k) = key("x");
        assert!(is_fingerprint(&k.fingerprint()));
        for bad in [
            "",
            "SHA256:",
            "MD5:aa",
            "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuF",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSu\nU",
        ] {
            assert!(!is_fingerprint(bad), "{bad:?}");
        }
        assert!(is_fingerprint(
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        ));
    }
}
