//! Newline-delimited JSON-RPC framing with a size cap, and error builders.
//!
//! A line over the cap is dropped as it streams past: it is never held in
//! memory whole.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::io::Read;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined server errors (-32000 to -32099).
pub const REQUEST_TIMEOUT: i64 = -32001;
pub const SERVER_UNAVAILABLE: i64 = -32002;

/// A JSON-RPC error response.
pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// A JSON-RPC success response.
pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// Serializes a message as one line ending in '\n'.
pub fn to_line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// A child's message as its reader thread hands it over. A response keeps
/// its `result` or `error` as raw JSON text: a large tool result is
/// validated once but never rebuilt as a tree or escaped again.
#[derive(Debug)]
pub enum Incoming {
    Response {
        id: Value,
        is_error: bool,
        payload: Box<RawValue>,
    },
    Other(Value),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// Classifies and validates one line from a child.
pub fn parse_child_line(line: &[u8]) -> Result<Incoming, serde_json::Error> {
    if let Ok(e) = serde_json::from_slice::<Envelope>(line)
        && e.method.is_none()
        && let Some(id) = e.id
    {
        match (e.result, e.error) {
            (Some(r), None) => {
                return Ok(Incoming::Response {
                    id,
                    is_error: false,
                    payload: r.to_owned(),
                });
            }
            (None, Some(r)) => {
                return Ok(Incoming::Response {
                    id,
                    is_error: true,
                    payload: r.to_owned(),
                });
            }
            _ => {}
        }
    }
    serde_json::from_slice(line).map(Incoming::Other)
}

/// A response line built from parts, with the payload copied as it came.
pub fn response_line(id: &Value, is_error: bool, payload: &RawValue) -> Vec<u8> {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "null".into());
    let key = if is_error { "error" } else { "result" };
    let p = payload.get();
    let mut out = Vec::with_capacity(p.len() + id.len() + 40);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(format!(",\"{key}\":").as_bytes());
    out.extend_from_slice(p.as_bytes());
    out.extend_from_slice(b"}\n");
    out
}

/// One framed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Line(Vec<u8>),
    /// A line longer than the cap was dropped.
    TooLong,
}

/// Push-based framer for bytes arriving in chunks (the SSH channel).
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

    /// Feeds bytes; complete lines (without '\n', '\r' trimmed) come out.
    /// Blank lines are skipped.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Frame>) {
        while !data.is_empty() {
            match memchr(b'\n', data) {
                Some(pos) => {
                    let part = &data[..pos];
                    data = &data[pos + 1..];
                    if self.discarding {
                        self.discarding = false;
                        out.push(Frame::TooLong);
                        continue;
                    }
                    if self.buf.len() + part.len() > self.max {
                        self.buf = Vec::new();
                        out.push(Frame::TooLong);
                        continue;
                    }
                    let mut line = std::mem::take(&mut self.buf);
                    line.extend_from_slice(part);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        out.push(Frame::Line(line));
                    }
                }
                None => {
                    if !self.discarding {
                        if self.buf.len() + data.len() > self.max {
                            self.buf = Vec::new();
                            self.discarding = true;
                        } else {
                            self.buf.extend_from_slice(data);
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    memchr::memchr(b, s)
}

/// What [`LineReader::next_line`] returns.
pub enum ReadLine {
    Line(Vec<u8>),
    TooLong,
    Eof,
}

/// Pull-based line reader with the same cap, for pipes (child stdout and
/// stderr). Its buffer starts at one page and doubles, up to 64 KiB, only
/// while reads fill it: an idle child costs a page, not a big buffer.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

const READ_FIRST: usize = 4 * 1024;
const READ_MAX: usize = 64 * 1024;

impl<R: Read> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            buf: Vec::new(),
            pos: 0,
            end: 0,
        }
    }

    pub fn next_line(&mut self) -> ReadLine {
        self.next_line_with(|| {})
    }

    /// Like [`LineReader::next_line`], running `before_read` right before
    /// each read from the pipe (which may block): callers hand on what they
    /// queued there, so a burst already buffered goes on in one go and
    /// nothing waits behind a blocking read.
    pub fn next_line_with(&mut self, mut before_read: impl FnMut()) -> ReadLine {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            if self.pos == self.end {
                // Grow only when the last read filled the buffer.
                if self.buf.len() < READ_MAX && self.end == self.buf.len() {
                    let size = (self.buf.len() * 2).clamp(READ_FIRST, READ_MAX);
                    self.buf.resize(size, 0);
                }
                self.pos = 0;
                self.end = 0;
                before_read();
                match self.inner.read(&mut self.buf) {
                    Ok(0) => {
                        return if too_long {
                            ReadLine::TooLong
                        } else if line.is_empty() {
                            ReadLine::Eof
                        } else {
                            ReadLine::Line(line)
                        };
                    }
                    Ok(n) => self.end = n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return ReadLine::Eof,
                }
            }
            let avail = &self.buf[self.pos..self.end];
            let (found, used) = match memchr(b'\n', avail) {
                Some(p) => (true, p),
                None => (false, avail.len()),
            };
            if too_long || line.len() + used > self.max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(&avail[..used]);
            }
            self.pos += used + usize::from(found);
            if !found {
                continue;
            }
            if too_long {
                return ReadLine::TooLong;
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                line.clear();
                continue;
            }
            return ReadLine::Line(line);
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
    }

    #[test]
    fn child_lines_are_classified_and_responses_rebuilt_byte_for_byte() {
        let line = br#"{"jsonrpc":"2.0","id":7,"result":{"b": 1,  "a":[true, "x\n"]}}"#;
        let Incoming::Response {
            id,
            is_error,
            payload,
        } = parse_child_line(line).unwrap()
        else {
            panic!("not a response")
        };
        assert_eq!((id, is_error), (json!(7), false));
        assert_eq!(payload.get(), r#"{"b": 1,  "a":[true, "x\n"]}"#);
        let out = response_line(&json!("client-1"), false, &payload);
        assert_eq!(
            out,
            b"{\"jsonrpc\":\"2.0\",\"id\":\"client-1\",\"result\":{\"b\": 1,  \"a\":[true, \"x\\n\"]}}\n"
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["a"][1], "x\n");
        let e =
            parse_child_line(br#"{"jsonrpc":"2.0","id":"s","error":{"code":-1,"message":"m"}}"#)
                .unwrap();
        assert!(matches!(e, Incoming::Response { is_error: true, .. }));
        for other in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"roots/list"}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":null}"#,
            br#"[1]"#,
        ] {
            assert!(matches!(
                parse_child_line(other).unwrap(),
                Incoming::Other(_)
            ));
        }
        assert!(parse_child_line(b"{oops").is_err());
    }

    #[test]
    fn line_reader_caps_and_recovers() {
        let data = b"short\nthis line is too long\n\nlast".as_slice();
        let mut r = LineReader::new(data, 8);
        assert!(matches!(r.next_line(), ReadLine::Line(l) if l == b"short"));
        assert!(matches!(r.next_line(), ReadLine::TooLong));
        assert!(matches!(r.next_line(), ReadLine::Line(l) if l == b"last"));
        assert!(matches!(r.next_line(), ReadLine::Eof));
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
        while let ReadLine::Line(l) = r.next_line_with(|| {
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
        assert!(matches!(r.next_line(), ReadLine::Line(l) if l.len() == 100));
        assert_eq!(r.buf.len(), READ_FIRST);
        let big = [vec![b'y'; 200_000], b"\n".to_vec()].concat();
        let mut r = LineReader::new(big.as_slice(), 1 << 20);
        assert!(matches!(r.next_line(), ReadLine::Line(l) if l.len() == 200_000));
        assert_eq!(r.buf.len(), READ_MAX);
    }
}
