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

    /// Takes a whole line: into an empty outbox it moves instead of being
    /// copied (a big result is not copied, nor a second big buffer made).
    pub fn push_owned(&mut self, line: Vec<u8>) {
        if self.is_empty() {
            self.buf.clear();
            self.start = 0;
            if line.len() > self.buf.capacity() {
                self.buf = line;
                return;
            }
        }
        self.buf.extend_from_slice(&line);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_line_keeps_its_place_behind_what_waits() {
        let mut o = Outbox::default();
        o.push_owned(b"first\n".to_vec());
        assert_eq!(o.pending(), 6);
        o.push(b"second\n");
        o.push_owned(b"third\n".to_vec());
        assert_eq!(&o.buf[o.start..], b"first\nsecond\nthird\n");
        // Half written: what is left stays ahead of a new line.
        o.start = 3;
        o.push_owned(b"4\n".to_vec());
        assert_eq!(&o.buf[o.start..], b"st\nsecond\nthird\n4\n");
        assert_eq!(o.pending(), 18);
    }
}
