//! What the audit log records of a request: which one, on which server,
//! how long it took, how it ended, and the bytes each way; never its
//! arguments or its result. The router fills a [`Record`] when a tracked
//! request ends; the session adds who asked and writes it.

use crate::mcp::jsonrpc::{self, At as _};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The methods that are recorded.
pub fn tracked(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A JSON-RPC error, from the child or the gateway.
    Error(i64),
    Timeout,
    Cancelled,
    /// Refused by the key's tool or prompt filter.
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error(_) => "error",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Denied => "denied",
        }
    }
}

/// One finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub method: String,
    /// The server it went to; None when the gateway refused it.
    pub server: Option<String>,
    /// The tool or prompt name as the client sent it, or the URI.
    pub target: Option<String>,
    pub duration: Duration,
    pub outcome: Outcome,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

/// A tracked request in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    method: String,
    target: Option<String>,
    started: Instant,
    bytes_in: usize,
}

impl Open {
    /// Starts tracking `msg` if its method is tracked; `bytes`: the length
    /// of the line it came in, when it is known.
    pub fn start(method: &str, msg: &Value, bytes: Option<usize>, now: Instant) -> Option<Open> {
        if !tracked(method) {
            return None;
        }
        let at = if method == "resources/read" {
            "/params/uri"
        } else {
            "/params/name"
        };
        Some(Open {
            method: method.to_owned(),
            target: msg.at(at).and_then(Value::as_str).map(str::to_owned),
            started: now,
            bytes_in: bytes.unwrap_or_else(|| jsonrpc::to_line(msg).len()),
        })
    }

    pub fn end(
        self,
        server: Option<&str>,
        outcome: Outcome,
        bytes_out: usize,
        now: Instant,
    ) -> Record {
        Record {
            method: self.method,
            server: server.map(str::to_owned),
            target: self.target,
            duration: now.saturating_duration_since(self.started),
            outcome,
            bytes_in: self.bytes_in,
            bytes_out,
        }
    }
}

/// The outcome of a response with this payload (`error` or `result`).
pub fn outcome_of(is_error: bool, payload: &str) -> Outcome {
    if !is_error {
        return Outcome::Ok;
    }
    outcome_of_error(serde_json::from_str::<Value>(payload).ok().as_ref())
}

/// The outcome of a response whose `error` member is `error` (None: ok).
/// An error without a readable code counts as code 0.
pub fn outcome_of_error(error: Option<&Value>) -> Outcome {
    match error {
        None => Outcome::Ok,
        Some(e) => Outcome::Error(e.get("code").and_then(Value::as_i64).unwrap_or(0)),
    }
}
