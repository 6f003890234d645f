//! JSON-RPC 2.0 messages: error codes, builders, and the classification of
//! a child's lines that lets a large result pass through as text.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
