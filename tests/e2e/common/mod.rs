//! Shared fixtures of the end-to-end tests, one module per concern:
//! - [`server`]: the server binary as a process (temp keys, config, port),
//!   and the fixture MCP children it serves;
//! - [`client`]: the one JSON-line client, over an SSH channel or over the
//!   stdio of a child process (our client binary, OpenSSH);
//! - [`ssh`]: client keys, logins, OpenSSH, raw TCP peers;
//! - [`procfs`]: what /proc shows of a process (children, threads, fds,
//!   memory, CPU, listening sockets) and signals;
//! - [`http`]: requests to the key API.
//!
//! Every wait is bounded, by [`WAIT`] unless a test says otherwise, so a
//! hang fails fast instead of stalling the suite.

pub mod client;
pub mod http;
pub mod procfs;
pub mod server;
pub mod ssh;

pub use client::*;
pub use http::*;
pub use procfs::*;
pub use server::*;
pub use ssh::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The bound on any single wait: a line, an exit, a state in /proc.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `f` until true or [`WAIT`] passes (for effects with no event to
/// block on, such as /proc after a disconnect); returns the last answer.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + WAIT;
    // Short sleeps first: most states come within milliseconds.
    let mut pause = Duration::from_millis(2);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    f()
}

/// A fresh temp directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("m2m-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The permission bits of a file.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}
