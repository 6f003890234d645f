//! Bytes waiting for the client, written only as far as its SSH window
//! allows, so a slow reader never blocks the session thread.

use crate::error::Error;
use crate::ssh::sys::Live;

/// Largest single channel write: keeps libssh's packet building bounded.
const WRITE_CHUNK: usize = 256 * 1024;

#[derive(Default)]
pub struct Outbox {
    buf: Vec<u8>,
    start: usize,
}

impl Outbox {
    pub fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// Serializes straight into the buffer (no line built and copied).
    pub fn push_json(&mut self, v: &serde_json::Value) {
        // Writing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, v);
        self.buf.push(b'\n');
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.buf.len()
    }

    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Writes what the window allows; the rest waits for a window adjust.
    pub fn flush(&mut self, live: &mut Live) -> Result<(), Error> {
        while !self.is_empty() {
            let window = live.window() as usize;
            if window == 0 {
                break;
            }
            let end = (self.start + window.min(WRITE_CHUNK)).min(self.buf.len());
            let n = live.write(&self.buf[self.start..end])?;
            if n == 0 {
                break;
            }
            self.start += n;
        }
        if self.is_empty() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > 1 << 20 {
                self.buf.shrink_to(64 * 1024); // do not keep a big message's buffer
            }
        }
        Ok(())
    }
}
