//! The key API's own trust file (`--registered-clients`): one validated key
//! line per key, each after a `# added <UTC time>` comment line (comment
//! lines are skipped by every authorized_keys reader, sshd's too).
//!
//! Every change rewrites the whole file atomically: a temp file in the same
//! directory with the old file's mode and owner, fsync, rename over it,
//! fsync the directory. So a reader (the server's trust store) sees the old
//! file or the new one, never a mix. Writers serialize on an advisory lock
//! (`flock`) on `.<name>.lock` beside the file, whichever process they run
//! in: the key API's registrations and revocations and the server binary's
//! `clients revoke` can race without losing each other's change.
//!
//! It is never `~/.ssh/authorized_keys`, which would also open the real sshd.

use super::options::KeyOptions;
use super::{PublicKey, authorized::parse_file, parse_line};
use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How the comment line before a registered key starts; the time follows.
pub const ADDED: &str = "# added ";

/// The time of a `# added <time>` line, if `line` is one.
pub fn added_time(line: &str) -> Option<&str> {
    let t = line.trim().strip_prefix(ADDED)?.trim();
    let looks_like_a_time = t.starts_with(|c: char| c.is_ascii_digit())
        && t.chars().all(|c| c.is_ascii_digit() || "-:.TZ".contains(c));
    looks_like_a_time.then_some(t)
}

/// Writer of the registered-clients file; every change is locked (see the
/// module doc).
pub struct Registry {
    path: PathBuf,
}

/// What a registration did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    New,
    /// The key is there already: with the same options, or the request
    /// asked for none (a plain copy never widens what a line restricts).
    AlreadyThere,
    /// The key is there with other options: revoke it first.
    OtherOptions,
}

/// A key line that the server's own parser reads back as exactly this key
/// with valid options: the only kind of line the registry writes.
#[derive(Debug, Clone)]
pub struct KeyLine {
    key: PublicKey,
    options: KeyOptions,
    options_text: String,
    text: String,
}

impl KeyLine {
    /// `options` (authorized_keys syntax, may be empty) before `key`'s line,
    /// re-parsed as the server will parse it.
    pub fn new(key: &PublicKey, options: &str) -> Result<KeyLine, String> {
        let text = match options {
            "" => key.to_line(),
            o => format!("{o} {}", key.to_line()),
        };
        if text.contains(['\n', '\r', '\0']) {
            return Err("the key line would contain a line break or a NUL byte".into());
        }
        let Some((read, read_options)) = parse_line(&text) else {
            return Err("the key line does not read back as a key".into());
        };
        if read != *key || read_options != options {
            return Err("the key line does not read back unchanged".into());
        }
        let options = KeyOptions::parse(&read_options).map_err(|e| e.to_string())?;
        Ok(KeyLine {
            key: read,
            options,
            options_text: read_options,
            text,
        })
    }

    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The options as the server reads them.
    pub fn options(&self) -> &KeyOptions {
        &self.options
    }

    /// The options as written ("" for none).
    pub fn options_text(&self) -> &str {
        &self.options_text
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Registry {
    pub fn new(path: PathBuf) -> Registry {
        Registry { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` after a `# added` line, unless its key (by blob) is
    /// there already; any line naming the key counts, even one whose
    /// options are refused, so a plain copy cannot bypass what it restricts.
    pub fn add(&self, line: &KeyLine) -> std::io::Result<Added> {
        let _lock = self.lock()?;
        let existing = self.read()?;
        let same: Vec<_> = parse_file(&existing, &self.path)
            .into_iter()
            .filter(|e| e.key.kind == line.key.kind && e.key.blob == line.key.blob)
            .collect();
        if !same.is_empty() {
            let plain = line.options.is_unrestricted();
            let equal = same.iter().all(|e| e.options.as_ref() == Ok(&line.options));
            return Ok(if plain || equal {
                Added::AlreadyThere
            } else {
                Added::OtherOptions
            });
        }
        let mut text = existing;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let now = crate::audit::rfc3339(SystemTime::now());
        text.push_str(&format!("{ADDED}{now}\n{}\n", line.text));
        self.replace(&text)?;
        Ok(Added::New)
    }

    /// Removes every line listing the key with this fingerprint
    /// (`SHA256:...`), each with its `# added` line; everything else stays
    /// byte for byte. Returns the number of key lines removed (0: the file
    /// is left alone).
    pub fn remove(&self, fingerprint: &str) -> std::io::Result<usize> {
        let _lock = self.lock()?;
        let existing = self.read()?;
        let lines: Vec<&str> = existing.split_inclusive('\n').collect();
        let mut keep = vec![true; lines.len()];
        let mut removed = 0;
        for (i, l) in lines.iter().enumerate() {
            if parse_line(l).is_some_and(|(k, _)| k.fingerprint() == fingerprint) {
                keep[i] = false;
                removed += 1;
                if i > 0 && added_time(lines[i - 1]).is_some() {
                    keep[i - 1] = false;
                }
            }
        }
        if removed > 0 {
            let text: String = lines
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(l, _)| *l)
                .collect();
            self.replace(&text)?;
        }
        Ok(removed)
    }

    /// The file's text ("" when it does not exist yet).
    fn read(&self) -> std::io::Result<String> {
        match std::fs::read_to_string(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            r => r,
        }
    }

    /// The file's directory, created (0700) if missing.
    fn dir(&self) -> std::io::Result<&Path> {
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
        Ok(dir)
    }

    /// `<dir>/.<name>.<ext>`, for the lock and temp files.
    fn beside(&self, ext: &str) -> std::io::Result<PathBuf> {
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("keys");
        Ok(self.dir()?.join(format!(".{name}.{ext}")))
    }

    /// Takes the writers' lock; it is released when the file is dropped. A
    /// lock file this process creates gets the owner of the keys file (or of
    /// the directory), so one made by root's `clients revoke` stays usable
    /// by the server's user.
    fn lock(&self) -> std::io::Result<File> {
        let path = self.beside("lock")?;
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        let f = match created {
            Ok(f) => {
                let owner =
                    std::fs::metadata(&self.path).or_else(|_| std::fs::metadata(self.dir()?));
                if let Ok(m) = owner {
                    // Best effort: only root can give a file away.
                    let _ = same_owner(&f, &m);
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => File::open(&path)?,
            Err(e) => return Err(e),
        };
        crate::os::lock_exclusive(&f)?;
        Ok(f)
    }

    /// Replaces the file with `text` atomically, keeping its mode and owner
    /// (0600 and ours for a new file). Call with the lock held.
    fn replace(&self, text: &str) -> std::io::Result<()> {
        let tmp = self.beside("tmp")?;
        let old = std::fs::metadata(&self.path).ok();
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mode = old.as_ref().map_or(0o600, |m| m.mode() & 0o7777);
        f.set_permissions(Permissions::from_mode(mode))?;
        if let Some(m) = &old {
            // The server must still be able to read a file that root rewrote.
            same_owner(&f, m)?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(self.dir()?) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Gives `f` the owner and group of `like` when they differ.
fn same_owner(f: &File, like: &Metadata) -> std::io::Result<()> {
    let now = f.metadata()?;
    if (now.uid(), now.gid()) != (like.uid(), like.gid()) {
        std::os::unix::fs::fchown(f, Some(like.uid()), Some(like.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_ed25519;

    /// A registry in a fresh directory (removed on drop).
    struct Tmp(PathBuf);

    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let dir = std::env::temp_dir().join(format!("m2m-reg-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Tmp(dir)
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key(comment: &str) -> (String, PublicKey) {
        let (_, line) = generate_ed25519(comment);
        let k = parse_line(&line).unwrap().0;
        (line, k)
    }

    fn plain(k: &PublicKey) -> KeyLine {
        KeyLine::new(k, "").unwrap()
    }

    /// The key lines of a file's text (comments left out).
    fn key_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn appends_once_with_its_time_and_mode_0600() {
        let t = Tmp::new("once");
        let r = Registry::new(t.0.join("sub/clients"));
        let ((a, ka), (b, kb)) = (key("a"), key("b"));
        let mut ka2 = ka.clone();
        ka2.comment = "other comment".into();
        assert_eq!(r.add(&plain(&ka)).unwrap(), Added::New);
        assert_eq!(r.add(&plain(&ka2)).unwrap(), Added::AlreadyThere);
        assert_eq!(r.add(&plain(&kb)).unwrap(), Added::New);
        let text = std::fs::read_to_string(r.path()).unwrap();
        assert_eq!(key_lines(&text), [a.as_str(), b.as_str()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let t0 = added_time(lines[0]).expect("an added line first");
        assert!(t0.starts_with("20") && t0.ends_with('Z'), "{t0}");
        assert!(added_time(lines[2]).is_some());
        assert_eq!(mode(r.path()), 0o600);
        assert_eq!(mode(&t.0.join("sub")), 0o700);
        // What the server reads is unchanged by the comment lines.
        assert_eq!(parse_file(&text, r.path()).len(), 2);
    }

    #[test]
    fn options_decide_whether_a_second_registration_is_the_same() {
        let t = Tmp::new("opts");
        let r = Registry::new(t.0.join("clients"));
        let (_, k) = key("k");
        let scoped = KeyLine::new(&k, "command=\"a\"").unwrap();
        let other = KeyLine::new(&k, "command=\"b\"").unwrap();
        assert_eq!(r.add(&scoped).unwrap(), Added::New);
        assert_eq!(r.add(&scoped).unwrap(), Added::AlreadyThere);
        assert_eq!(r.add(&other).unwrap(), Added::OtherOptions);
        // A plain request leaves the scoped line alone and succeeds.
        assert_eq!(r.add(&plain(&k)).unwrap(), Added::AlreadyThere);
        let text = std::fs::read_to_string(r.path()).unwrap();
        assert_eq!(key_lines(&text), [scoped.text()]);
    }

    #[test]
    fn key_lines_are_only_what_the_parser_reads_back() {
        let (_, k) = key("me@host");
        let l = KeyLine::new(&k, "command=\"a,b\",environment=\"MCP_TOOLS=x*\"").unwrap();
        assert!(l.options().allows_server("a") && !l.options().allows_server("c"));
        assert!(l.options().allows_tool("xy") && !l.options().allows_tool("y"));
        assert!(l.text().ends_with(" me@host"));
        for bad in [
            "command=\"a\nb\"",
            "command=\"a\"\0",
            "frobnicate",
            "command=\"a\" x",
            "command=\"a\"b\"",
        ] {
            assert!(KeyLine::new(&k, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn remove_takes_every_line_of_the_key_and_its_added_line_and_nothing_else() {
        let t = Tmp::new("rm");
        let r = Registry::new(t.0.join("clients"));
        let ((a, ka), (b, kb)) = (key("a"), key("b"));
        // Hand-written lines around: a comment, a copy without a time.
        let text = format!("# mine\n{b}\n{ADDED}2026-01-02T03:04:05.000Z\n{a}\nno-pty {b} again");
        std::fs::create_dir_all(&t.0).unwrap();
        std::fs::write(r.path(), &text).unwrap();
        std::fs::set_permissions(r.path(), Permissions::from_mode(0o640)).unwrap();
        assert_eq!(r.remove(&ka.fingerprint()).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(r.path()).unwrap(),
            format!("# mine\n{b}\nno-pty {b} again")
        );
        assert_eq!(mode(r.path()), 0o640, "the mode is kept");
        assert_eq!(r.remove(&kb.fingerprint()).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(r.path()).unwrap(), "# mine\n");
        let before = std::fs::metadata(r.path()).unwrap().ino();
        assert_eq!(r.remove(&kb.fingerprint()).unwrap(), 0);
        let after = std::fs::metadata(r.path()).unwrap().ino();
        assert_eq!(before, after, "nothing to remove: the file is left alone");
    }

    /// Each thread has its own registry, as separate processes would: only
    /// the file lock serializes them.
    #[test]
    fn registrations_racing_removals_lose_nothing() {
        let t = Tmp::new("race");
        let path = t.0.join("clients");
        let old: Vec<PublicKey> = (0..8).map(|i| key(&format!("old{i}")).1).collect();
        let new: Vec<PublicKey> = (0..8).map(|i| key(&format!("new{i}")).1).collect();
        for k in &old {
            Registry::new(path.clone()).add(&plain(k)).unwrap();
        }
        let mut threads = Vec::new();
        for (o, n) in old.iter().cloned().zip(new.iter().cloned()) {
            let p = path.clone();
            threads.push(std::thread::spawn(move || {
                Registry::new(p).remove(&o.fingerprint()).unwrap()
            }));
            let p = path.clone();
            threads.push(std::thread::spawn(move || {
                Registry::new(p).add(&plain(&n)).unwrap();
                1
            }));
        }
        for th in threads {
            assert_eq!(th.join().unwrap(), 1);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut got = key_lines(&text);
        got.sort_unstable();
        let mut want: Vec<String> = new.iter().map(PublicKey::to_line).collect();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(text.lines().count(), 16, "each key with its added line");
    }
}
