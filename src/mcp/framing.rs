//! Newline-delimited JSON framing with a size cap: one [`Framer`] for bytes
//! that arrive in chunks (the SSH channel), and [`LineReader`], the same
//! framer fed from a pipe (child stdout and stderr).
//!
//! A line over the cap is dropped as it streams past: it is never held in
//! memory whole. A trailing '\r' is trimmed and blank lines are skipped.

use std::collections::VecDeque;
use std::io::Read;

/// One framed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Line(Vec<u8>),
    /// A line longer than the cap was dropped.
    TooLong,
}

/// Push-based framer: feed it chunks, complete lines come out.
pub struct Framer {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
}

impl Framer {
    pub fn new(max: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// The longest line it passes on.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Feeds bytes; complete lines (without '\n') are appended to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut impl Extend<Frame>) {
        while !data.is_empty() {
            let Some(pos) = memchr::memchr(b'\n', data) else {
                self.hold(data);
                return;
            };
            let part = &data[..pos];
            data = &data[pos + 1..];
            if self.discarding || self.buf.len() + part.len() > self.max {
                self.discarding = false;
                self.buf = Vec::new();
                out.extend([Frame::TooLong]);
                continue;
            }
            let mut line = std::mem::take(&mut self.buf);
            line.extend_from_slice(part);
            self.emit(line, out);
        }
    }

    /// The input ended: an unfinished last line still counts.
    pub fn finish(&mut self, out: &mut impl Extend<Frame>) {
        if std::mem::take(&mut self.discarding) {
            out.extend([Frame::TooLong]);
        } else {
            let line = std::mem::take(&mut self.buf);
            self.emit(line, out);
        }
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn hold(&mut self, data: &[u8]) {
        if self.discarding {
            return;
        }
        if self.buf.len() + data.len() > self.max {
            self.buf = Vec::new();
            self.discarding = true;
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    fn emit(&self, mut line: Vec<u8>, out: &mut impl Extend<Frame>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.extend([Frame::Line(line)]);
        }
    }
}

/// A [`Framer`] fed from a blocking reader. Its read buffer starts at one
/// page and doubles, up to 64 KiB, only while reads fill it: an idle child
/// costs a page, not a big buffer.
pub struct LineReader<R> {
    inner: R,
    framer: Framer,
    buf: Vec<u8>,
    /// Bytes the last read returned.
    last: usize,
    ready: VecDeque<Frame>,
    eof: bool,
}

const READ_FIRST: usize = 4 * 1024;
const READ_MAX: usize = 64 * 1024;

impl<R: Read> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            framer: Framer::new(max),
            buf: Vec::new(),
            last: 0,
            ready: VecDeque::new(),
            eof: false,
        }
    }

    /// The next frame; None at the end of input (or on a read error).
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.next_frame_with(|| {})
    }

    /// Like [`LineReader::next_frame`], running `before_read` right before
    /// each read (which may block): callers hand on what they queued there,
    /// so a burst already read goes on in one go and nothing waits behind a
    /// blocking read.
    pub fn next_frame_with(&mut self, mut before_read: impl FnMut()) -> Option<Frame> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Some(f);
            }
            if self.eof {
                return None;
            }
            // Grow only when the last read filled the buffer.
            if self.buf.len() < READ_MAX && self.last == self.buf.len() {
                let size = (self.buf.len() * 2).clamp(READ_FIRST, READ_MAX);
                self.buf.resize(size, 0);
            }
            before_read();
            match self.inner.read(&mut self.buf) {
                Ok(n) if n > 0 => {
                    self.last = n;
                    self.framer.push(&self.buf[..n], &mut self.ready);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                _ => {}
            }
            // End of input, or the pipe broke: either way nothing more comes.
            self.eof = true;
            self.framer.finish(&mut self.ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_splits_chunks_and_drops_long_lines() {
        let mut f = Framer::new(8);
        let mut out = Vec::new();
        f.push(b"ab", &mut out);
        f.push(b"c\r\n\nde", &mut out);
        assert_eq!(out, vec![Frame::Line(b"abc".to_vec())]);
        out.clear();
        f.push(b"fghijklmnop", &mut out);
        assert!(f.pending() <= 8, "held {} bytes", f.pending());
        f.push(b"qrs\nok\n", &mut out);
        assert_eq!(out, vec![Frame::TooLong, Frame::Line(b"ok".to_vec())]);
        out.clear();
        f.push(b"123456789\n", &mut out);
        assert_eq!(out, vec![Frame::TooLong]);
        out.clear();
        f.push(b"tail", &mut out);
        f.finish(&mut out);
        assert_eq!(out, vec![Frame::Line(b"tail".to_vec())]);
    }

    #[test]
    fn line_reader_caps_and_recovers() {
        let data = b"short\nthis line is too long\n\nlast".as_slice();
        let mut r = LineReader::new(data, 8);
        assert_eq!(r.next_frame(), Some(Frame::Line(b"short".to_vec())));
        assert_eq!(r.next_frame(), Some(Frame::TooLong));
        assert_eq!(r.next_frame(), Some(Frame::Line(b"last".to_vec())));
        assert_eq!(r.next_frame(), None);
        let mut r = LineReader::new(b"0123456789".as_slice(), 8);
        assert_eq!(
            r.next_frame(),
            Some(Frame::TooLong),
            "an over-long last line"
        );
        assert_eq!(r.next_frame(), None);
    }

    /// Hands out its data a few bytes per read, counting the reads.
    struct Trickle<'a>(&'a [u8], usize, std::rc::Rc<std::cell::Cell<usize>>);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.2.set(self.2.get() + 1);
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn line_reader_runs_the_hook_before_every_read_and_only_then() {
        let reads = std::rc::Rc::new(std::cell::Cell::new(0));
        // Three lines in one read, then a line split over three reads.
        let data = b"a\nb\nc\nlong-line\n";
        let mut r = LineReader::new(Trickle(data, 6, reads.clone()), 100);
        let hooks = std::cell::Cell::new(0);
        let mut got = Vec::new();
        while let Some(Frame::Line(l)) = r.next_frame_with(|| {
            hooks.set(hooks.get() + 1);
            assert_eq!(
                hooks.get(),
                reads.get() + 1,
                "hook runs right before each read"
            );
        }) {
            got.push(String::from_utf8(l).unwrap());
        }
        assert_eq!(got, ["a", "b", "c", "long-line"]);
        assert_eq!(hooks.get(), reads.get());
    }

    #[test]
    fn line_reader_buffer_grows_only_while_reads_fill_it() {
        let small = [vec![b'x'; 100], b"\n".to_vec()].concat();
        let mut r = LineReader::new(small.as_slice(), 1 << 20);
        assert!(matches!(r.next_frame(), Some(Frame::Line(l)) if l.len() == 100));
        assert_eq!(r.buf.len(), READ_FIRST);
        let big = [vec![b'y'; 200_000], b"\n".to_vec()].concat();
        let mut r = LineReader::new(big.as_slice(), 1 << 20);
        assert!(matches!(r.next_frame(), Some(Frame::Line(l)) if l.len() == 200_000));
        assert_eq!(r.buf.len(), READ_MAX);
    }
}
