//! The set of client keys allowed to log in: the `--authorized-clients` file
//! plus the key API's registered-clients file, re-read when either changes so
//! a new key works on the next connection without a restart.
//!
//! Lines may carry options (see [`super::options`]). A line whose options
//! cannot be honoured is logged (file, line, reason) and allows nothing.
//!
//! A key listed more than once (in one file or both) gets only what every
//! one of its lines allows: all `from=` lists must pass, the earliest
//! `expiry-time` counts, `command=` and the filters must all allow a name,
//! and a refused line refuses the key. So no copy of a key, such as one the
//! key API appended, can widen what another line restricts. (sshd instead
//! takes the first line that authorises the connection.)

use super::options::{KeyOptions, OptionError};
use super::{PublicKey, parse_line};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// One key line of a file: the key, its 1-based line number, and its
/// options or why they were refused.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: PublicKey,
    pub line: usize,
    pub options: Result<KeyOptions, OptionError>,
}

/// A line that lists a matched key: where it is and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub path: PathBuf,
    pub line: usize,
    pub comment: String,
    pub options: KeyOptions,
}

/// What a trusted key may do: the intersection of all its lines, first
/// file and line first (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    listings: Vec<Listing>,
}

/// Why a listed key may not log in now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client address fails `from=` on `path:line`.
    From {
        ip: IpAddr,
        path: PathBuf,
        line: usize,
    },
    /// `expiry-time` on `path:line` has passed.
    Expired { path: PathBuf, line: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::From { ip, path, line } => write!(
                f,
                "client address {ip} is not allowed by from= at {}:{line}",
                path.display()
            ),
            Refusal::Expired { path, line } => {
                write!(f, "key expired (expiry-time at {}:{line})", path.display())
            }
        }
    }
}

impl Grant {
    /// Every line that lists the key, in file and line order.
    pub fn listings(&self) -> &[Listing] {
        &self.listings
    }

    /// The first line's file, for logs.
    pub fn path(&self) -> &Path {
        self.listings.first().map_or(Path::new(""), |l| &l.path)
    }

    /// The first line's comment (often user@host), for logs.
    pub fn comment(&self) -> &str {
        self.listings.first().map_or("", |l| &l.comment)
    }

    /// The checks made at authentication: `from=` and `expiry-time`.
    pub fn check_login(&self, ip: IpAddr, now: SystemTime) -> Result<(), Refusal> {
        for l in &self.listings {
            let at = || (l.path.clone(), l.line);
            if !l.options.allows_from(ip) {
                let (path, line) = at();
                return Err(Refusal::From { ip, path, line });
            }
            if l.options.expired_at(now) {
                let (path, line) = at();
                return Err(Refusal::Expired { path, line });
            }
        }
        Ok(())
    }

    /// Whether every line lets the key use the MCP server `name` (`command=`).
    pub fn allows_server(&self, name: &str) -> bool {
        self.listings.iter().all(|l| l.options.allows_server(name))
    }

    /// Whether every line lets the key use the tool `name` (`MCP_TOOLS`).
    pub fn allows_tool(&self, name: &str) -> bool {
        self.listings.iter().all(|l| l.options.allows_tool(name))
    }

    /// Whether every line lets the key use the prompt `name` (`MCP_PROMPTS`).
    pub fn allows_prompt(&self, name: &str) -> bool {
        self.listings.iter().all(|l| l.options.allows_prompt(name))
    }

    /// True when no line restricts anything.
    pub fn is_unrestricted(&self) -> bool {
        self.listings.iter().all(|l| l.options.is_unrestricted())
    }

    /// This grant narrowed by one more listing (a certificate's options,
    /// or a line the AuthorizedKeysCommand printed).
    pub fn with(mut self, listing: Listing) -> Grant {
        self.listings.push(listing);
        self
    }

    /// A grant of these listings (at least one), for keys found elsewhere
    /// than the trust files.
    pub fn of(listings: Vec<Listing>) -> Option<Grant> {
        (!listings.is_empty()).then_some(Grant { listings })
    }
}

#[derive(Default)]
struct FileState {
    stamp: Option<(SystemTime, u64, u64)>,
    entries: Vec<Entry>,
}

/// Thread-safe trust store over one or more authorized_keys-format files.
pub struct Authorized {
    files: Vec<(PathBuf, Mutex<FileState>)>,
    /// The files list CA keys (`--trusted-user-ca-keys`): CA-line options.
    cas: bool,
}

impl Authorized {
    pub fn new(paths: Vec<PathBuf>) -> Authorized {
        Authorized {
            files: paths
                .into_iter()
                .map(|p| (p, Mutex::new(FileState::default())))
                .collect(),
            cas: false,
        }
    }

    /// The store of a `--trusted-user-ca-keys` file: lines parsed with
    /// [`KeyOptions::parse_ca`], and only ed25519 CA keys (others are left
    /// out with a warning: their certificates could not be verified).
    pub fn cas(path: PathBuf) -> Authorized {
        Authorized {
            cas: true,
            ..Authorized::new(vec![path])
        }
    }

    /// Calls `f` with each file's current entries (re-read if changed).
    fn each_file(&self, mut f: impl FnMut(&Path, &[Entry])) {
        for (path, state) in &self.files {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            refresh(path, &mut st, self.cas);
            f(path, &st.entries);
        }
    }

    /// The grant of a key with this type and blob: None when no line lists
    /// it or a line listing it was refused. Compares blobs, never whole
    /// lines (comments differ between copies).
    pub fn lookup(&self, kind: &str, blob: &[u8]) -> Option<Grant> {
        let mut listings = Vec::new();
        let mut refused = false;
        self.each_file(|path, entries| {
            for e in entries
                .iter()
                .filter(|e| e.key.kind == kind && e.key.blob == blob)
            {
                match &e.options {
                    Ok(options) => listings.push(Listing {
                        path: path.to_owned(),
                        line: e.line,
                        comment: e.key.comment.clone(),
                        options: options.clone(),
                    }),
                    Err(_) => refused = true,
                }
            }
        });
        (!refused && !listings.is_empty()).then_some(Grant { listings })
    }

    /// True when a key with this type and blob is trusted and none of its
    /// lines restricts anything: callers that do not enforce options (from,
    /// expiry, command, filters) must not let a restricted key in.
    pub fn allows(&self, kind: &str, blob: &[u8]) -> bool {
        self.lookup(kind, blob).is_some_and(|g| g.is_unrestricted())
    }

    /// Number of distinct keys currently trusted (for the start-up log line).
    pub fn count(&self) -> usize {
        let (mut ok, mut refused) = (BTreeSet::new(), BTreeSet::new());
        self.each_file(|_, entries| {
            for e in entries {
                let id = (e.key.kind.clone(), e.key.blob.clone());
                if e.options.is_ok() {
                    &mut ok
                } else {
                    &mut refused
                }
                .insert(id);
            }
        });
        ok.difference(&refused).count()
    }
}

/// What tells a changed file: (mtime, size, inode).
pub(crate) fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn refresh(path: &Path, st: &mut FileState, cas: bool) {
    let now = stamp(path);
    if now == st.stamp && now.is_some() {
        return;
    }
    st.stamp = now;
    st.entries = match std::fs::read_to_string(path) {
        Ok(text) => parse_file_as(&text, path, cas),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot read {}: {e}", path.display());
            }
            Vec::new()
        }
    };
    log::debug!(
        "loaded {} key line(s) from {}",
        st.entries.len(),
        path.display()
    );
}

/// Parses authorized_keys text: every key line, with its options parsed;
/// lines that are not keys, and keys whose options are refused, are logged.
pub fn parse_file(text: &str, path: &Path) -> Vec<Entry> {
    parse_file_as(text, path, false)
}

/// [`parse_file`], or with `cas` a `--trusted-user-ca-keys` file.
fn parse_file_as(text: &str, path: &Path, cas: bool) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((key, opts)) = parse_line(l) else {
            log::warn!(
                "{}:{}: not a public key line; skipped",
                path.display(),
                n + 1
            );
            continue;
        };
        if cas && key.kind != "ssh-ed25519" {
            log::warn!(
                "{}:{}: CA key {} is {}: only ssh-ed25519 CA keys are supported; line skipped",
                path.display(),
                n + 1,
                key.fingerprint(),
                key.kind
            );
            continue;
        }
        let options = if cas {
            KeyOptions::parse_ca(&opts)
        } else {
            KeyOptions::parse(&opts)
        };
        if let Err(e) = &options {
            log::warn!(
                "{}:{}: key {} refused: {e}",
                path.display(),
                n + 1,
                key.fingerprint()
            );
        }
        entries.push(Entry {
            key,
            line: n + 1,
            options,
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_ed25519;

    const K: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    /// Files `f0`, `f1`... in a fresh directory, removed on drop.
    struct Files {
        dir: PathBuf,
        paths: Vec<PathBuf>,
    }

    impl Files {
        fn new(name: &str, texts: &[&str]) -> Files {
            let dir = std::env::temp_dir().join(format!("m2m-auth-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let paths: Vec<_> = (0..texts.len())
                .map(|i| dir.join(format!("f{i}")))
                .collect();
            for (p, t) in paths.iter().zip(texts) {
                std::fs::write(p, t).unwrap();
            }
            Files { dir, paths }
        }

        fn store(&self) -> Authorized {
            Authorized::new(self.paths.clone())
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Fresh keys: each one's `type base64 comment` line and blob.
    fn keys<const N: usize>(comments: [&str; N]) -> [(String, Vec<u8>); N] {
        comments.map(|c| {
            let (_, line) = generate_ed25519(c);
            let blob = parse_line(&line).unwrap().0.blob;
            (line, blob)
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn grant(a: &Authorized, blob: &[u8]) -> Option<Grant> {
        a.lookup("ssh-ed25519", blob)
    }

    #[test]
    fn reloads_when_the_file_changes() {
        let files = Files::new("reload", &["# none yet\n"]);
        let f = &files.paths[0];
        let a = Authorized::new(vec![f.clone(), files.dir.join("missing")]);
        let (k, _) = parse_line(&format!("ssh-ed25519 {K}")).unwrap();
        assert!(!a.allows("ssh-ed25519", &k.blob));
        std::fs::write(f, format!("\n# c\nno-pty ssh-ed25519 {K} other comment\n")).unwrap();
        assert!(a.allows("ssh-ed25519", &k.blob));
        assert!(!a.allows("ssh-rsa", &k.blob));
        // Restricted: listed, but not for callers that do not enforce options.
        std::fs::write(f, format!("command=\"ls\" ssh-ed25519 {K}\n")).unwrap();
        assert!(!a.allows("ssh-ed25519", &k.blob));
        let g = grant(&a, &k.blob).unwrap();
        assert!(g.allows_server("ls") && !g.allows_server("time"));
    }

    #[test]
    fn lookup_returns_options_path_line_and_comment() {
        let [(line, blob)] = keys(["me@laptop"]);
        let text = format!(
            "# keys\n\nrestrict,from=\"10.0.0.0/8\",command=\"time\",\
             environment=\"MCP_TOOLS=get_*\",environment=\"MCP_PROMPTS=!x\" {line}\n"
        );
        let files = Files::new("lookup", &[&text]);
        let a = files.store();
        let g = grant(&a, &blob).unwrap();
        assert_eq!(g.path(), files.paths[0]);
        assert_eq!(g.comment(), "me@laptop");
        assert_eq!(g.listings().len(), 1);
        assert_eq!(g.listings()[0].line, 3);
        assert!(!g.is_unrestricted());
        assert!(!a.allows("ssh-ed25519", &blob));
        let now = SystemTime::now();
        assert_eq!(g.check_login(ip("10.1.2.3"), now), Ok(()));
        assert_eq!(g.check_login(ip("::ffff:10.1.2.3"), now), Ok(()));
        let refusal = Refusal::From {
            ip: ip("192.0.2.1"),
            path: files.paths[0].clone(),
            line: 3,
        };
        assert_eq!(g.check_login(ip("192.0.2.1"), now), Err(refusal));
        assert!(g.allows_server("time") && !g.allows_server("fs"));
        assert!(g.allows_tool("get_time") && !g.allows_tool("set_time"));
        assert!(g.allows_prompt("y") && !g.allows_prompt("x"));
        assert_eq!(a.count(), 1);
    }

    #[test]
    fn expired_key_is_refused_at_login() {
        let [(old, old_blob), (new, new_blob)] = keys(["old", "new"]);
        let text = format!("expiry-time=\"20200101Z\" {old}\nexpiry-time=\"29990101\" {new}\n");
        let files = Files::new("expiry", &[&text]);
        let a = files.store();
        let now = SystemTime::now();
        let e = grant(&a, &old_blob)
            .unwrap()
            .check_login(ip("127.0.0.1"), now)
            .unwrap_err();
        let path = files.paths[0].clone();
        assert_eq!(e, Refusal::Expired { path, line: 1 });
        assert!(e.to_string().contains("expired"), "{e}");
        let g = grant(&a, &new_blob).unwrap();
        assert_eq!(g.check_login(ip("127.0.0.1"), now), Ok(()));
    }

    #[test]
    fn refused_options_leave_the_line_out() {
        let [(bad, bad_blob), (good, good_blob)] = keys(["bad", "good"]);
        let text = format!("permitopen=\"h:1\" {bad}\nnot a key\nno-pty {good}\n");
        let entries = parse_file(&text, Path::new("keys"));
        assert_eq!(entries.len(), 2);
        assert!(matches!(
            entries[0].options,
            Err(OptionError::Unsupported { .. })
        ));
        assert_eq!(entries[1].line, 3);
        let files = Files::new("refused", &[&text]);
        let a = files.store();
        assert!(grant(&a, &bad_blob).is_none());
        assert!(!a.allows("ssh-ed25519", &bad_blob));
        assert!(a.allows("ssh-ed25519", &good_blob));
        assert_eq!(a.count(), 1);
    }

    #[test]
    fn a_key_in_both_files_gets_what_every_line_allows() {
        let [(k, blob), (r, r_blob)] = keys(["k", "r"]);
        let first = format!("command=\"a,b\",from=\"10.0.0.0/8\" {k}\nverify-required {r}\n");
        // The key API's file holds plain copies: they must not widen anything.
        let second = format!("{k}\ncommand=\"b,c\" {k}\n{r}\n");
        let files = Files::new("both", &[&first, &second]);
        let a = files.store();
        let g = grant(&a, &blob).unwrap();
        assert_eq!(g.listings().len(), 3);
        assert_eq!(g.path(), files.paths[0]);
        assert_eq!(g.listings()[2].path, files.paths[1]);
        assert!(g.allows_server("b"));
        assert!(!g.allows_server("a") && !g.allows_server("c"));
        assert!(g.check_login(ip("192.0.2.1"), SystemTime::now()).is_err());
        assert!(!a.allows("ssh-ed25519", &blob));
        // A refused line refuses the key, whatever the other file says.
        assert!(grant(&a, &r_blob).is_none());
        assert_eq!(a.count(), 1);
    }
}
