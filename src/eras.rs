//! Each configured server's MCP era, found once (ERAS §2.2): a
//! `server/discover` probe with a short timeout; a discover result that
//! lists 2026-07-28 means modern, any error or silence means legacy (never
//! one specific code). `"protocol": "legacy"` is never probed; a
//! `"2026-07-28"` server is probed for its capabilities with no fallback.
//! The verdict is kept per configured server for as long as its pool lives
//! (a reload makes a new pool, and probes again).

use crate::child::ChildProc;
use crate::config::{Protocol, Scope, ServerSpec};
use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::{self, Incoming};
use crossbeam_channel::{Receiver, TryRecvError};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a probe waits for the answer to `server/discover`. It counts
/// from the spawn, so it covers an interpreter's start-up too (Python's
/// `mcp-server-time` takes over 2 s on a busy or small machine); the probe
/// runs on a warm spare in the pool's filler, so no session waits for it
/// unless it found no spare before the first verdict.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for a server configured `"2026-07-28"`, which has no fallback.
const MODERN_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const MODERN: &str = "2026-07-28";
const PROBE_ID: &str = "m2m-era-probe";

/// How the gateway talks to a server's processes.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildEra {
    Legacy,
    /// 2026-07-28, with the server's `server/discover` result.
    Modern(Arc<Value>),
}

/// The verdicts, one per configured server (None: not probed yet).
pub struct Eras {
    known: Mutex<Vec<Option<ChildEra>>>,
    /// A failed verdict: the server is left out until a reload, so its
    /// processes are not spawned and probed over and over.
    failed: Mutex<Vec<Option<String>>>,
}

impl Eras {
    pub fn new(servers: usize) -> Eras {
        Eras {
            known: Mutex::new(vec![None; servers]),
            failed: Mutex::new(vec![None; servers]),
        }
    }

    fn get(&self, i: usize) -> Option<ChildEra> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())[i].clone()
    }

    /// Why server `i` is left out: its probe failed.
    pub fn failed(&self, i: usize) -> Option<String> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())[i].clone()
    }

    /// Whether a new process of server `i` must be probed before use.
    pub fn needs_probe(&self, i: usize, spec: &ServerSpec) -> bool {
        fixed(spec).is_none() && self.get(i).is_none()
    }

    /// The era of server `i` for process `child`: the cached verdict, or
    /// the child is probed now and the verdict kept. Err: a server that
    /// must be modern did not answer as one (kept too), or `stop` was
    /// disconnected during the probe (not kept).
    pub fn settle(
        &self,
        i: usize,
        spec: &ServerSpec,
        child: &mut ChildProc,
        stop: &Receiver<()>,
    ) -> Result<ChildEra, String> {
        if let Some(e) = fixed(spec).or_else(|| self.get(i)) {
            return Ok(e);
        }
        if let Some(why) = self.failed(i) {
            return Err(why);
        }
        let era = self.probe(spec, child, stop);
        if let Err(why) = &era
            && !matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
        {
            self.failed.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(why.clone());
        }
        let era = era?;
        self.known.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(era.clone());
        Ok(era)
    }

    fn probe(
        &self,
        spec: &ServerSpec,
        child: &mut ChildProc,
        stop: &Receiver<()>,
    ) -> Result<ChildEra, String> {
        let timeout = probe_timeout(spec);
        let line = jsonrpc::to_line(&discover_request());
        let answer = child.probe(line, &json!(PROBE_ID), timeout, stop);
        if matches!(stop.try_recv(), Err(TryRecvError::Disconnected)) {
            return Err("stopped during the era probe".into());
        }
        let era = verdict(answer.as_ref());
        match (&era, spec.protocol) {
            (Verdict::Modern(_), _) | (_, Protocol::Auto) => {}
            (Verdict::Legacy(why), _) | (Verdict::Unusable(why), _) => {
                return Err(format!("configured \"protocol\": \"{MODERN}\" but {why}"));
            }
        }
        let era = match era {
            Verdict::Modern(r) => ChildEra::Modern(Arc::new(r)),
            Verdict::Legacy(why) => {
                log::info!("[{}] speaks the initialize era ({why})", spec.name);
                ChildEra::Legacy
            }
            Verdict::Unusable(why) => return Err(why),
        };
        if let ChildEra::Modern(_) = era {
            log::info!("[{}] speaks {MODERN}", spec.name);
        }
        Ok(era)
    }
}

/// How long a probe of `spec` waits, counted from the spawn.
pub fn probe_timeout(spec: &ServerSpec) -> Duration {
    match spec.protocol {
        Protocol::Modern => MODERN_PROBE_TIMEOUT,
        _ => PROBE_TIMEOUT,
    }
}

/// The era a server's config fixes without a probe here: a shared
/// server's is found by its mux (`shared/mux.rs`), not by the pool.
fn fixed(spec: &ServerSpec) -> Option<ChildEra> {
    match (spec.protocol, spec.scope) {
        (Protocol::Legacy, _) | (Protocol::Auto, Scope::Shared { .. }) => Some(ChildEra::Legacy),
        _ => None,
    }
}

/// The probe: the gateway as a 2026-07-28 client that declares nothing.
pub fn discover_request() -> Value {
    json!({"jsonrpc": "2.0", "id": PROBE_ID, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo":
            {"name": "m2m-mcp-server-ssh-server", "version": env!("CARGO_PKG_VERSION")},
    }}})
}

/// What a probe's answer says.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Modern(Value),
    /// Why it counts as legacy.
    Legacy(String),
    /// It speaks only versions of 2026 or later that the gateway does not.
    Unusable(String),
}

/// Reads a probe's answer (None: silence or an exit).
pub fn verdict(answer: Option<&Incoming>) -> Verdict {
    let Some(Incoming::Response {
        is_error, payload, ..
    }) = answer
    else {
        return Verdict::Legacy("no answer to server/discover".into());
    };
    let v: Value = serde_json::from_str(payload.get()).unwrap_or(Value::Null);
    verdict_of(*is_error, v)
}

/// Reads an answer to `server/discover`: its result, or its error object.
pub fn verdict_of(is_error: bool, v: Value) -> Verdict {
    if is_error {
        if v.get("code").and_then(Value::as_i64) == Some(-32022) {
            let supported = v.at("/data/supported").and_then(Value::as_array);
            // Only legacy versions listed: it is a legacy server after all.
            let legacy_only = supported
                .is_some_and(|s| s.iter().filter_map(Value::as_str).all(|x| x < "2026-01-01"));
            if !legacy_only {
                return Verdict::Unusable(format!(
                    "it does not speak {MODERN} (it supports {})",
                    v.at("/data/supported").unwrap_or(&Value::Null)
                ));
            }
        }
        return Verdict::Legacy(format!(
            "server/discover: {}",
            v.get("message").unwrap_or(&v)
        ));
    }
    let speaks = v
        .get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|x| x == MODERN));
    if speaks {
        Verdict::Modern(v)
    } else {
        Verdict::Legacy(format!("its discover result does not list {MODERN}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::jsonrpc::parse_child_line;

    fn answer(line: &str) -> Verdict {
        verdict(Some(&parse_child_line(line.as_bytes()).unwrap()))
    }

    #[test]
    fn any_error_or_silence_is_legacy_and_only_a_modern_discover_is_modern() {
        assert!(matches!(verdict(None), Verdict::Legacy(_)));
        for code in [-32601, -32600, -32602, -32603, -1] {
            let l =
                format!(r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":{code},"message":"m"}}}}"#);
            assert!(matches!(answer(&l), Verdict::Legacy(_)), "{code}");
        }
        let m = answer(
            r#"{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28"],"capabilities":{"tools":{}}}}"#,
        );
        let Verdict::Modern(r) = m else {
            panic!("{m:?}")
        };
        assert!(r["capabilities"]["tools"].is_object());
        let l = answer(r#"{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2027-01-01"]}}"#);
        assert!(matches!(l, Verdict::Legacy(_)));
        let u = answer(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"m","data":{"supported":["2027-01-01"]}}}"#,
        );
        assert!(matches!(u, Verdict::Unusable(_)), "{u:?}");
        let l = answer(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"m","data":{"supported":["2025-11-25"]}}}"#,
        );
        assert!(matches!(l, Verdict::Legacy(_)));
    }

    #[test]
    fn the_config_fixes_the_era_of_legacy_and_shared_servers() {
        let mut s = ServerSpec::new("a", "x", &[]);
        let eras = Eras::new(1);
        assert!(eras.needs_probe(0, &s));
        s.protocol = Protocol::Legacy;
        assert!(!eras.needs_probe(0, &s));
        s.protocol = Protocol::Auto;
        s.scope = Scope::Shared { processes: 1 };
        assert!(!eras.needs_probe(0, &s));
    }
}
