//! The set of client keys allowed to log in: the `--authorized-clients` file
//! plus the key API's registered-clients file, re-read when either changes so
//! a new key works on the next connection without a restart.

use super::{PublicKey, parse_line};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Options that restrict a key to something else than an MCP session; such
/// keys were meant for another purpose and are not accepted here.
const RESTRICTING: [&str; 3] = ["command=", "restrict", "from="];

#[derive(Default)]
struct FileState {
    stamp: Option<(SystemTime, u64, u64)>,
    keys: Vec<PublicKey>,
}

/// Thread-safe trust store over one or more authorized_keys-format files.
pub struct Authorized {
    files: Vec<(PathBuf, Mutex<FileState>)>,
}

impl Authorized {
    pub fn new(paths: Vec<PathBuf>) -> Authorized {
        Authorized {
            files: paths
                .into_iter()
                .map(|p| (p, Mutex::new(FileState::default())))
                .collect(),
        }
    }

    /// True when a key with this type and blob is listed in any file.
    /// Compares blobs, never whole lines (comments differ between copies).
    pub fn allows(&self, kind: &str, blob: &[u8]) -> bool {
        self.files.iter().any(|(path, state)| {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            refresh(path, &mut st);
            st.keys.iter().any(|k| k.kind == kind && k.blob == blob)
        })
    }

    /// Number of keys currently trusted (for the start-up log line).
    pub fn count(&self) -> usize {
        self.files
            .iter()
            .map(|(path, state)| {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                refresh(path, &mut st);
                st.keys.len()
            })
            .sum()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn refresh(path: &Path, st: &mut FileState) {
    let now = stamp(path);
    if now == st.stamp && now.is_some() {
        return;
    }
    st.stamp = now;
    st.keys = match std::fs::read_to_string(path) {
        Ok(text) => parse_file(&text, path),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot read {}: {e}", path.display());
            }
            Vec::new()
        }
    };
    log::debug!("loaded {} key(s) from {}", st.keys.len(), path.display());
}

/// Parses authorized_keys text, skipping bad and restricted lines with a log.
pub fn parse_file(text: &str, path: &Path) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match parse_line(l) {
            Some((k, opts)) if RESTRICTING.iter().any(|r| opts.contains(r)) => {
                log::warn!(
                    "{}:{}: key {} has a restricting option ({opts}); not accepted for MCP sessions",
                    path.display(),
                    n + 1,
                    k.fingerprint()
                );
            }
            Some((k, _)) => keys.push(k),
            None => log::warn!(
                "{}:{}: not a public key line; skipped",
                path.display(),
                n + 1
            ),
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn reloads_when_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("m2m-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("keys");
        std::fs::write(&f, "# none yet\n").unwrap();
        let a = Authorized::new(vec![f.clone(), dir.join("missing")]);
        let (k, _) = parse_line(&format!("ssh-ed25519 {K}")).unwrap();
        assert!(!a.allows("ssh-ed25519", &k.blob));
        std::fs::write(&f, format!("\n# c\nno-pty ssh-ed25519 {K} other comment\n")).unwrap();
        assert!(a.allows("ssh-ed25519", &k.blob));
        assert!(!a.allows("ssh-rsa", &k.blob));
        std::fs::write(&f, format!("command=\"ls\" ssh-ed25519 {K}\n")).unwrap();
        assert!(!a.allows("ssh-ed25519", &k.blob));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
