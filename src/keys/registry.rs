//! The key API's own trust file: one validated line per key, appended
//! atomically (write a temp file, fsync, rename) under a lock, no duplicates.
//! It is never `~/.ssh/authorized_keys`, which would also open the real sshd.

use super::{PublicKey, authorized::parse_file};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Serialized writer of the registered-clients file.
pub struct Registry {
    path: PathBuf,
    lock: Mutex<()>,
}

/// Whether a registration changed the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    New,
    AlreadyThere,
}

impl Registry {
    pub fn new(path: PathBuf) -> Registry {
        Registry {
            path,
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `key` (already validated) unless a key with the same blob is there.
    pub fn add(&self, key: &PublicKey) -> std::io::Result<Added> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let existing = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        // Any line naming the key counts, even one whose options are
        // refused: a plain copy must not bypass what that line restricts.
        if parse_file(&existing, &self.path)
            .iter()
            .any(|e| e.key.kind == key.kind && e.key.blob == key.blob)
        {
            return Ok(Added::AlreadyThere);
        }
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let tmp = dir.join(format!(
            ".{}.tmp",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("keys")
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(existing.as_bytes())?;
        if !existing.is_empty() && !existing.ends_with('\n') {
            f.write_all(b"\n")?;
        }
        f.write_all(key.to_line().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(Added::New)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate_ed25519, parse_line};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn appends_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("m2m-reg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = Registry::new(dir.join("sub/clients"));
        let (_, a) = generate_ed25519("a");
        let (_, b) = generate_ed25519("b");
        let ka = parse_line(&a).unwrap().0;
        let mut ka2 = ka.clone();
        ka2.comment = "other comment".into();
        assert_eq!(r.add(&ka).unwrap(), Added::New);
        assert_eq!(r.add(&ka2).unwrap(), Added::AlreadyThere);
        assert_eq!(r.add(&parse_line(&b).unwrap().0).unwrap(), Added::New);
        let text = std::fs::read_to_string(r.path()).unwrap();
        assert_eq!(text, format!("{a}\n{b}\n"));
        let mode = std::fs::metadata(r.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(dir.join("sub"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
