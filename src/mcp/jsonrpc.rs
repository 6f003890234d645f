//! JSON-RPC 2.0 messages: error codes, builders, and the classification of
//! a child's lines that lets a large result pass through as text.

use memchr::memmem;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::fmt;
use std::sync::LazyLock;

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

/// Lookups by a fixed JSON pointer ("/params/_meta/progressToken").
/// `Value::pointer` unescapes `~0`/`~1` with two `String` allocations per
/// segment; the router's paths hold no escapes and it reads several of
/// them per request, so these walk the tree without allocating.
pub trait At {
    fn at(&self, path: &str) -> Option<&Value>;
    fn at_mut(&mut self, path: &str) -> Option<&mut Value>;
}

/// Maps up to this many keys are searched by comparing keys: hashing a
/// key (SipHash) costs more than a few short compares, and a request's
/// objects hold a handful of keys.
const SCAN_KEYS: usize = 8;

/// `m.get(key)`, by a scan of a small map.
pub fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if m.len() <= SCAN_KEYS {
        m.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    } else {
        m.get(key)
    }
}

/// `m.get_mut(key)`, by a scan of a small map.
pub fn field_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Value> {
    if m.len() <= SCAN_KEYS {
        m.iter_mut().find(|(k, _)| *k == key).map(|(_, v)| v)
    } else {
        m.get_mut(key)
    }
}

/// `path.split('/')` by a byte loop: paths are a few short keys, for which
/// the general searcher's set-up costs more than the search.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == b'/') {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => rest.take(),
        }
    })
}

impl At for Value {
    fn at(&self, path: &str) -> Option<&Value> {
        let mut v = self;
        if path.is_empty() {
            return Some(v);
        }
        for key in segments(path.strip_prefix('/')?) {
            v = match v {
                Value::Object(m) => field(m, key)?,
                Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    fn at_mut(&mut self, path: &str) -> Option<&mut Value> {
        let mut v = self;
        if path.is_empty() {
            return Some(v);
        }
        for key in segments(path.strip_prefix('/')?) {
            v = match v {
                Value::Object(m) => field_mut(m, key)?,
                Value::Array(a) => a.get_mut(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

/// The key under which a client request's `params.arguments` is kept as
/// its JSON text (a `Value::String`). The gateway never reads a tool's
/// arguments, so they pass to the child as they came: not built into a
/// tree, not escaped again (a big argument costs a copy, not a parse and a
/// re-encoding). Only [`parse_client_line`] makes it; a client line that
/// names it is refused (see [`names_raw_arguments`]), and [`to_line`]
/// writes it back as `"arguments"`.
pub const RAW_ARGUMENTS: &str = "\u{0}arguments";

/// Why a client line that names [`RAW_ARGUMENTS`] is refused.
pub const RAW_ARGUMENTS_REFUSED: &str = "params key \\u0000arguments is reserved";

/// Serializes a message as one line ending in '\n', with kept arguments
/// ([`RAW_ARGUMENTS`]) written back as they came.
pub fn to_line(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    match raw_params(v) {
        None => {
            // Writing a Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, v);
        }
        Some(top) => {
            out.push(b'{');
            for (i, (k, val)) in top.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut out, k);
                out.push(b':');
                match val {
                    Value::Object(params) if k == "params" => write_params(&mut out, params),
                    _ => {
                        let _ = serde_json::to_writer(&mut out, val);
                    }
                }
            }
            out.push(b'}');
        }
    }
    debug_assert!(
        memchr::memchr2(b'\r', b'\n', &out).is_none(),
        "a line break inside a line"
    );
    out.push(b'\n');
    out
}

/// The message's top map if its `params` holds kept arguments.
fn raw_params(v: &Value) -> Option<&Map<String, Value>> {
    let top = v.as_object()?;
    let params = field(top, "params")?.as_object()?;
    params.contains_key(RAW_ARGUMENTS).then_some(top)
}

fn write_params(out: &mut Vec<u8>, params: &Map<String, Value>) {
    out.push(b'{');
    for (i, (k, val)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match val {
            Value::String(text) if k == RAW_ARGUMENTS => {
                out.extend_from_slice(b"\"arguments\":");
                out.extend_from_slice(text.as_bytes());
            }
            _ => {
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                let _ = serde_json::to_writer(&mut *out, val);
            }
        }
    }
    out.push(b'}');
}

/// A client's tree names [`RAW_ARGUMENTS`] itself (a line parsed whole):
/// refused, or its text would reach a child unchecked.
pub fn names_raw_arguments(v: &Value) -> bool {
    v.get("params")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key(RAW_ARGUMENTS))
}

/// A child's message as its reader thread hands it over. A response keeps
/// its `result` or `error` as raw JSON text: a large tool result is
/// validated once but never rebuilt as a tree or escaped again.
#[derive(Debug)]
pub enum Incoming {
    Response {
        id: Value,
        is_error: bool,
        payload: Payload,
    },
    Other(Value),
}

/// A response's `result` or `error` as JSON text, left where it is in the
/// child's line: a big result is neither copied nor given a second buffer.
#[derive(Debug)]
pub struct Payload {
    line: String,
    start: usize,
    end: usize,
}

impl Payload {
    /// The JSON text (valid: the line it is in was parsed).
    pub fn get(&self) -> &str {
        self.line.get(self.start..self.end).unwrap_or("null")
    }
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
pub fn parse_child_line(line: &[u8]) -> serde_json::Result<Incoming> {
    parse_child_owned(line.to_vec()).map_err(|(e, _)| e)
}

/// The same, keeping the line: a response's payload stays in it. A line
/// that is no JSON comes back with the error.
pub fn parse_child_owned(mut line: Vec<u8>) -> Result<Incoming, (serde_json::Error, Vec<u8>)> {
    let response = match serde_json::from_slice::<Envelope>(&line) {
        Ok(e) if e.method.is_none() => match (e.id, e.result, e.error) {
            (Some(id), Some(r), None) => Some((id, false, span(&line, r))),
            (Some(id), None, Some(r)) => Some((id, true, span(&line, r))),
            _ => None,
        },
        _ => None,
    };
    if let Some((id, is_error, (start, end))) = response {
        // A CR in the payload is whitespace (raw in a string it is no
        // JSON), but a client reading lines may end one there: a space.
        if let Some(p) = line.get_mut(start..end) {
            p.iter_mut()
                .filter(|b| **b == b'\r')
                .for_each(|b| *b = b' ');
        }
        // The payload was checked as UTF-8; a member the envelope skipped
        // was not: then the payload is copied out of the line.
        let payload = match String::from_utf8(line) {
            Ok(line) => Payload { line, start, end },
            Err(e) => {
                let bytes = e.into_bytes();
                let text = std::str::from_utf8(&bytes[start..end]).unwrap_or("null");
                let end = text.len();
                Payload {
                    line: text.to_owned(),
                    start: 0,
                    end,
                }
            }
        };
        return Ok(Incoming::Response {
            id,
            is_error,
            payload,
        });
    }
    match serde_json::from_slice(&line) {
        Ok(v) => Ok(Incoming::Other(v)),
        Err(e) => Err((e, line)),
    }
}

/// A value's JSON text on one line: a CR in it can only be whitespace (raw
/// in a string it is no JSON), but a child that reads lines the Python or
/// Node way ends one there, and what followed would be a line of its own.
fn one_line(text: &str) -> String {
    if memchr::memchr(b'\r', text.as_bytes()).is_some() {
        text.replace('\r', " ")
    } else {
        text.to_owned()
    }
}

/// Where `part`, borrowed from `line` by the parse, lies in it.
fn span(line: &[u8], part: &RawValue) -> (usize, usize) {
    let start = (part.get().as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    let end = start.wrapping_add(part.get().len());
    debug_assert!(line.get(start..end) == Some(part.get().as_bytes()));
    (start, end)
}

/// A client line parsed as a tree, except two members of `params`:
/// `arguments`, kept as text under [`RAW_ARGUMENTS`], and, if `split_meta`,
/// `_meta`, left out and returned as its text (borrowed from the line). A
/// 2026-07-28 client sends the same `_meta` on every request: its text is
/// compared with the last one checked instead of being built and checked
/// again. A line that names [`RAW_ARGUMENTS`] itself is refused.
pub fn parse_client_line(
    line: &[u8],
    split_meta: bool,
) -> serde_json::Result<(Value, Option<&RawValue>)> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let mut meta = None;
    let v = Split {
        meta: &mut meta,
        params: true,
        split_meta,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((v, meta))
}

/// Lines longer than this are not tried by [`parse_client_line_known_meta`]:
/// copying a big line would cost more than skipping its `_meta`.
const KNOWN_META_MAX: usize = 16 * 1024;

/// [`parse_client_line`] (`split_meta`) for a line whose `params._meta`
/// is `known` byte for byte, without reading those bytes: `known` (a JSON
/// object that parsed before), found after a `"_meta":`, is replaced by
/// `{}` in a copy of the line, which is parsed instead. The tree is the
/// line's own if that `{}` is where the parse read `params._meta`: up to
/// there the two texts are the same, an object ends at its closing brace
/// whatever follows, and after it they are the same again. None (so parse
/// the line itself) if `known` is not there, is elsewhere first, or the
/// copy does not parse.
pub fn parse_client_line_known_meta(line: &[u8], known: &[u8]) -> Option<Value> {
    if line.len() > KNOWN_META_MAX {
        return None;
    }
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    static KEY: LazyLock<memmem::Finder> = LazyLock::new(|| memmem::Finder::new(b"\"_meta\""));
    let start = KEY.find_iter(line).find_map(|at| {
        let mut i = at + 7;
        i += line[i..].iter().take_while(|b| ws(b)).count();
        (line.get(i) == Some(&b':')).then_some(())?;
        i += 1;
        i += line[i..].iter().take_while(|b| ws(b)).count();
        line[i..].starts_with(known).then_some(i)
    })?;
    let end = start + known.len();
    let mut cut = Vec::with_capacity(line.len() - known.len() + 2);
    cut.extend_from_slice(&line[..start]);
    cut.extend_from_slice(b"{}");
    cut.extend_from_slice(&line[end..]);
    let (v, meta) = parse_client_line(&cut, true).ok()?;
    (span(&cut, meta?) == (start, start + 2)).then_some(v)
}

/// Builds a `Value` like `Value::deserialize`, but diverts keys: at the top
/// (`params: true`) the object under `params` is built by a second `Split`,
/// which keeps `arguments` as text and diverts `_meta` into `meta`.
struct Split<'a, 'de> {
    meta: &'a mut Option<&'de RawValue>,
    params: bool,
    split_meta: bool,
}

impl<'de> DeserializeSeed<'de> for Split<'_, 'de> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Split<'_, 'de> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let v = match (self.params, key.as_str()) {
                (true, "params") => {
                    *self.meta = None; // a repeated key: the last one counts
                    map.next_value_seed(Split {
                        meta: &mut *self.meta,
                        params: false,
                        split_meta: self.split_meta,
                    })?
                }
                (false, "_meta") if self.split_meta => {
                    *self.meta = Some(map.next_value::<&RawValue>()?);
                    continue;
                }
                (false, "arguments") => {
                    let text = one_line(map.next_value::<&RawValue>()?.get());
                    out.insert(RAW_ARGUMENTS.to_owned(), Value::String(text));
                    continue;
                }
                (false, RAW_ARGUMENTS) => {
                    return Err(de::Error::custom(RAW_ARGUMENTS_REFUSED));
                }
                _ => map.next_value()?,
            };
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A response line built from parts, with the payload (valid JSON: a
/// child's validated result) copied as it came: not parsed again.
pub fn response_line(id: &Value, is_error: bool, payload: &str) -> Vec<u8> {
    response_line_with(id, is_error, payload.len(), |out| {
        out.extend_from_slice(payload.as_bytes())
    })
}

/// The same with the payload written by `write` (valid JSON by
/// construction), straight into the line: no copy of it in between.
pub fn response_line_with(
    id: &Value,
    is_error: bool,
    size_hint: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let key: &[u8] = if is_error {
        b",\"error\":"
    } else {
        b",\"result\":"
    };
    let mut out = Vec::with_capacity(size_hint + 64);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    if serde_json::to_writer(&mut out, id).is_err() {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(key);
    write(&mut out);
    out.extend_from_slice(b"}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_reads_fixed_paths_like_pointer() {
        let mut v = json!({"params": {"_meta": {"progressToken": 3}, "a": [1, {"b": "x"}]}});
        for path in [
            "/params/_meta/progressToken",
            "/params/a/1/b",
            "/params/a/0",
            "/params/a/7",
            "/params/a/x",
            "/params/missing",
            "/params/_meta/progressToken/deeper",
            "",
        ] {
            assert_eq!(v.at(path), v.pointer(path), "{path}");
        }
        let big: Map<String, Value> = (0..20).map(|i| (format!("k{i}"), json!(i))).collect();
        let mut big = json!({"params": big});
        for path in ["/params/k0", "/params/k19", "/params/k20"] {
            assert_eq!(big.at(path), big.pointer(path), "{path}");
        }
        *big.at_mut("/params/k7").unwrap() = json!("x");
        assert_eq!(big["params"]["k7"], "x");
        assert_eq!(v.at("no-slash"), None);
        for path in ["", "a", "a/b", "/a//b/", "//"] {
            assert!(segments(path).eq(path.split('/')), "{path}");
        }
        *v.at_mut("/params/a/1/b").unwrap() = json!("y");
        assert_eq!(v["params"]["a"][1]["b"], "y");
        assert!(v.at_mut("/params/nope/x").is_none());
    }

    /// What the split parse should give: the plain tree with
    /// `params.arguments` as its text and, if `split_meta`, `_meta` out.
    fn expected_split(line: &[u8], split_meta: bool) -> (Value, Option<Value>) {
        let mut plain: Value = serde_json::from_slice(line).unwrap();
        let mut meta = None;
        if let Some(p) = plain.get_mut("params").and_then(Value::as_object_mut) {
            if split_meta {
                meta = p.remove("_meta");
            }
            let text = |v: &Value| Value::String(v.to_string());
            let kept: Map<String, Value> = std::mem::take(p)
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    "arguments" => (RAW_ARGUMENTS.to_owned(), text(&v)),
                    _ => (k, v),
                })
                .collect();
            *p = kept;
        }
        (plain, meta)
    }

    #[test]
    fn a_client_line_is_the_plain_parse_with_arguments_as_text_and_meta_set_aside() {
        let lines: [&[u8]; 10] = [
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"a":[1,{"b":null}]},"arguments":{"x":1.5,"y":-2,"z":[true,"s\n"]}}}"#,
            br#"{"id":"x","params":{"_meta":5}}"#,
            br#"{"id":1,"params":[1,2,{"_meta":1,"arguments":2}]}"#,
            br#"{"id":1,"params":"p","_meta":{"top":1},"arguments":3}"#,
            br#"{"params":{"_meta":{"a":1},"_meta":{"b":2}}}"#,
            br#"{"params":{"_meta":{"a":1}},"params":{"n":1}}"#,
            br#"{"params":{"inner":{"_meta":{"kept":1},"arguments":{}}}}"#,
            br#"  {"id":18446744073709551615,"params":{}}  "#,
            br#"[{"params":{"_meta":{},"arguments":{}}}]"#,
            br#"{"params":{"arguments":1,"name":"n","arguments":"last"}}"#,
        ];
        for line in lines {
            let show = String::from_utf8_lossy(line);
            for split_meta in [true, false] {
                let (split, meta) = parse_client_line(line, split_meta).unwrap();
                let (tree, expected_meta) = expected_split(line, split_meta);
                let got = meta.map(|m| serde_json::from_str::<Value>(m.get()).unwrap());
                assert_eq!(got, expected_meta, "{show}");
                assert_eq!(split, tree, "{show}");
                // Written back, it is the message that came.
                let mut back: Value = serde_json::from_slice(&to_line(&split)).unwrap();
                if let (Some(m), Some(p)) = (got, back.get_mut("params")) {
                    p["_meta"] = m;
                }
                let plain: Value = serde_json::from_slice(line).unwrap();
                assert_eq!(back, plain, "{show}");
            }
        }
        for bad in [
            &b"{\"params\":{\"_meta\":{]}}"[..],
            b"{\"params\":{\"arguments\":{]}}",
            b"{} x",
            b"",
            b"{\"a\":1",
            // The key that carries kept arguments cannot come from a client.
            b"{\"params\":{\"\\u0000arguments\":\"{}}\"}}",
        ] {
            assert!(parse_client_line(bad, true).is_err());
        }
    }

    #[test]
    fn a_known_meta_is_cut_only_where_the_parse_reads_params_meta() {
        let known = r#"{"v":"2026-07-28","caps":{"a":[1,"}"]}}"#;
        let line = |s: &str| s.replace("KNOWN", known).into_bytes();
        // Cut: the tree is the split parse's, whose `_meta` is `known`.
        for ok in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":1},"_meta":KNOWN}}"#,
            r#"{"id":2,"params":{"_meta":KNOWN,"arguments":{"y":[KNOWN]}}}"#,
            r#"{"params":{"_meta":{"other":1},"_meta":KNOWN}}"#,
            r#"{"id":1,"params":{"arguments":KNOWN,"_meta" :	KNOWN}}"#,
            r#" {"params" : { "_meta" : KNOWN } } "#,
        ] {
            let l = line(ok);
            let got = parse_client_line_known_meta(&l, known.as_bytes());
            let (tree, meta) = parse_client_line(&l, true).unwrap();
            assert_eq!(meta.map(|m| m.get()), Some(known), "{ok}");
            assert_eq!(got, Some(tree), "{ok}");
        }
        // Not cut: `known` is absent, elsewhere first, or not what counts.
        for no in [
            r#"{"id":1,"params":{"_meta":{"v":"2025-11-25"}}}"#,
            r#"{"id":1,"params":{"arguments":{"_meta":KNOWN},"_meta":KNOWN}}"#,
            r#"{"id":1,"params":{"arguments":KNOWN}}"#,
            r#"{"params":{"_meta":KNOWN,"_meta":{"other":1}}}"#,
            r#"{"_meta":KNOWN,"params":{}}"#,
            r#"{"params":{"x":{"_meta":KNOWN}}}"#,
            r#"{"params":{"_meta":KNOWN},"params":{"n":1}}"#,
            r#"{"params":{"_meta":KNOWN}"#,
            r#"{"params":{"_meta":KNOWN,"\u0000arguments":"{}"}}"#,
        ] {
            assert_eq!(
                parse_client_line_known_meta(&line(no), known.as_bytes()),
                None,
                "{no}"
            );
        }
        let long = line(&format!(
            r#"{{"params":{{"_meta":KNOWN,"arguments":"{}"}}}}"#,
            "x".repeat(KNOWN_META_MAX)
        ));
        assert_eq!(parse_client_line_known_meta(&long, known.as_bytes()), None);
    }

    #[test]
    fn a_cr_between_tokens_never_reaches_the_other_side() {
        // A child (or client) that reads lines the Python or Node way
        // would end a line at a bare CR: a second request could ride in
        // the first one's arguments.
        let smuggle = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"ok\",\"arguments\":{\"x\":\r{\"id\":99,\"method\":\"tools/call\"}\r}}}";
        let (v, _) = parse_client_line(smuggle, false).unwrap();
        let out = to_line(&v);
        assert!(!out.contains(&b'\r'), "{}", String::from_utf8_lossy(&out));
        let back: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(smuggle).unwrap());
        // The same from a child, in a result passed on as text.
        let line = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"a\":\r{\"b\":1}\r}}\r".to_vec();
        let Incoming::Response { payload, .. } = parse_child_owned(line).unwrap() else {
            panic!("not a response")
        };
        assert_eq!(payload.get(), "{\"a\": {\"b\":1} }");
        // A raw CR inside a string is no JSON at all.
        assert!(parse_client_line(b"{\"params\":{\"arguments\":\"a\rb\"}}", false).is_err());
    }

    #[test]
    fn a_response_with_bad_utf8_outside_its_payload_is_still_a_response() {
        let line = b"{\"jsonrpc\":\"2.0\xff\",\"id\":1,\"result\":{\"ok\":true}}".to_vec();
        let Incoming::Response { id, payload, .. } = parse_child_owned(line).unwrap() else {
            panic!("not a response")
        };
        assert_eq!((id, payload.get()), (json!(1), "{\"ok\":true}"));
    }

    #[test]
    fn kept_arguments_reach_the_child_byte_for_byte() {
        let line = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x": 1.50, "s":"\u00e9\"", "n":[ ]},"_meta":{"progressToken":1}}}"#;
        let (mut v, _) = parse_client_line(line, false).unwrap();
        v["id"] = json!("g7");
        v["params"]["name"] = json!("u");
        let out = to_line(&v);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"jsonrpc":"2.0","id":"g7","method":"tools/call","params":{"name":"u","arguments":{"x": 1.50, "s":"\u00e9\"", "n":[ ]},"_meta":{"progressToken":1}}}"#.to_owned() + "\n"
        );
        // A tree built by hand is written as serde_json writes it.
        let plain = json!({"a": [1, "\u{7}"], "params": {"arguments": {"k": "v"}}});
        assert_eq!(
            to_line(&plain),
            [serde_json::to_vec(&plain).unwrap(), b"\n".to_vec()].concat()
        );
        assert!(!names_raw_arguments(&plain));
        let forged: Value = serde_json::from_str(r#"{"params":{"\u0000arguments":"{}"}}"#).unwrap();
        assert!(names_raw_arguments(&forged));
    }

    #[test]
    fn a_split_parse_keeps_the_recursion_limit_of_the_plain_one_outside_arguments() {
        for depth in 120..135 {
            let nest = |d: usize| format!("{}1{}", "[".repeat(d), "]".repeat(d));
            for line in [
                format!(r#"{{"id":1,"params":{{"name":{}}}}}"#, nest(depth)),
                format!(r#"{{"id":1,"other":{}}}"#, nest(depth)),
                format!(r#"{{"id":1,"params":[{}]}}"#, nest(depth)),
                nest(depth),
            ] {
                let plain = serde_json::from_slice::<Value>(line.as_bytes());
                let split = parse_client_line(line.as_bytes(), true);
                assert_eq!(plain.is_ok(), split.is_ok(), "{depth}: {line}");
                if let (Ok(p), Ok((s, _))) = (plain, split) {
                    assert_eq!(p, s);
                }
            }
            // Arguments are the child's to judge: passed on as they came.
            let deep = format!(r#"{{"id":1,"params":{{"arguments":{}}}}}"#, nest(depth));
            let (v, _) = parse_client_line(deep.as_bytes(), true).unwrap();
            assert_eq!(to_line(&v), format!("{deep}\n").into_bytes());
        }
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
        let out = response_line(&json!("client-1"), false, payload.get());
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
        // The owned parse gives a bad line back for the log.
        let (_, back) = parse_child_owned(b"not json".to_vec()).unwrap_err();
        assert_eq!(back, b"not json");
        // A payload is its own span of the line, whitespace and all.
        let Incoming::Response { payload, .. } =
            parse_child_owned(b" {\"id\":1, \"result\" : [ 1 ,2] } ".to_vec()).unwrap()
        else {
            panic!("not a response")
        };
        assert_eq!(payload.get(), "[ 1 ,2]");
    }
}
