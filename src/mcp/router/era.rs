//! Which MCP era the client speaks, locked per connection, and the rules
//! of 2026-07-28 (`docs/ERAS.md` §1-2): the per-request `_meta` check, the
//! methods that era removed, and the stamps every modern result carries
//! (`resultType`, the gateway's `serverInfo`, the cache hints).
//!
//! `initialize` first locks the legacy era, as before; a request whose
//! `_meta` names a protocol version (or `server/discover`) locks the modern
//! one. The other era's entry point is refused for the rest of the
//! connection, with an error that says which era it is locked to.

use crate::mcp::jsonrpc::At as _;
use crate::mcp::jsonrpc::{INTERNAL_ERROR, SERVER_UNAVAILABLE};
use crate::mcp::jsonrpc::{INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, REQUEST_TIMEOUT};
use serde_json::{Map, Value, json};

/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// `_meta` keys of a modern request (`schema.ts` `RequestMetaObject`).
pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// Keys of 2026-07-28 that a legacy peer must not see; other
/// `io.modelcontextprotocol/*` keys (the 2025 tasks' `related-task`) are
/// legacy ones and pass.
const MODERN_KEYS: [&str; 4] = [
    PROTOCOL_VERSION,
    CLIENT_CAPABILITIES,
    CLIENT_INFO,
    LOG_LEVEL,
];
/// Unsupported protocol version (`schema.ts` `UnsupportedProtocolVersionError`).
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// The client requests of 2026-07-28 (`schema.ts` `ClientRequest`).
const MODERN_METHODS: [&str; 10] = [
    "server/discover",
    "completion/complete",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "subscriptions/listen",
    "tools/call",
    "tools/list",
];

/// Requests that 2026-07-28 removed (`changelog.mdx`).
const REMOVED: [&str; 8] = [
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
];

/// `LoggingLevel`, least severe first.
const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// A log level's rank (0 = debug), or None for an unknown name.
pub fn level_rank(name: &str) -> Option<u8> {
    LEVELS.iter().position(|l| *l == name).map(|i| i as u8)
}

pub fn level_name(rank: u8) -> &'static str {
    LEVELS[usize::from(rank).min(LEVELS.len() - 1)]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Nothing but `ping` yet.
    Unlocked,
    /// `initialize` came first.
    Legacy,
    /// A request with 2026-07-28 `_meta` came first.
    Modern,
}

/// How a forwarded request's result is stamped for a modern client.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// A `resources/read`: it carries the cache hints.
    pub cacheable: bool,
    /// The request's `logLevel` rank: the child's log messages reach the
    /// client while it is in flight, at or above this level.
    pub level: Option<u8>,
    /// It may be answered `input_required` (`tools/call`, `prompts/get`,
    /// `resources/read`).
    pub input: Option<Box<InputCall>>,
}

/// A call that may be answered `input_required`: what its retry must
/// repeat, and the input capabilities it declared.
#[derive(Debug, Clone, PartialEq)]
pub struct InputCall {
    pub method: &'static str,
    /// The client's `params.name` or `params.uri`.
    pub target: Value,
    pub inputs: Inputs,
}

/// The methods whose answer may be `input_required`, as the static name
/// an [`InputCall`] keeps.
pub fn input_method(method: &str) -> Option<&'static str> {
    ["tools/call", "prompts/get", "resources/read"]
        .into_iter()
        .find(|m| *m == method)
}

/// Which client input capabilities a request declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inputs {
    pub elicitation: bool,
    pub sampling: bool,
    pub roots: bool,
}

impl Inputs {
    pub fn of(caps: &Map<String, Value>) -> Inputs {
        Inputs {
            elicitation: caps.contains_key("elicitation"),
            sampling: caps.contains_key("sampling"),
            roots: caps.contains_key("roots"),
        }
    }

    /// The capability a server request needs, if this one lacks it; Err
    /// for a method that is no input request.
    pub fn lacks(self, method: &str) -> Result<Option<&'static str>, ()> {
        let (has, cap) = match method {
            "elicitation/create" => (self.elicitation, "elicitation"),
            "sampling/createMessage" => (self.sampling, "sampling"),
            "roots/list" => (self.roots, "roots"),
            _ => return Err(()),
        };
        Ok((!has).then_some(cap))
    }
}

/// A request refused before it is routed: code, message, optional data.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl Refusal {
    fn new(code: i64, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The error response to request `id`.
    pub fn response(self, id: Value) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(d) = self.data {
            error["data"] = d;
        }
        json!({"jsonrpc": "2.0", "id": id, "error": error})
    }
}

/// What the modern `_meta` of one valid request says, borrowed from the
/// request: it is read on every call and copied only when it locks the era.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meta<'a> {
    pub capabilities: &'a Map<String, Value>,
    pub client_info: Option<&'a Value>,
    pub level: Option<u8>,
}

/// The last `_meta` that passed the check, as the client's text, and what
/// it says. A 2026-07-28 client repeats the same `_meta` on every request;
/// a line whose `_meta` text is identical skips the parse and the check.
/// Only a `_meta` of the four keys of the revision is kept: one with
/// anything per request (`progressToken`) is parsed as usual.
pub struct MetaCache {
    pub text: Box<str>,
    /// The parsed `_meta`, put back on a request that must carry it (to a
    /// modern child, or deferred for later).
    pub map: Map<String, Value>,
    pub inputs: Inputs,
    pub level: Option<u8>,
    /// It declares the tasks extension.
    pub tasks: bool,
}

/// How a client line's `params._meta` reaches the router.
#[derive(Debug, Clone, PartialEq)]
pub enum LineMeta {
    /// In the tree as parsed, or absent.
    InTree,
    /// In the tree, and this is its text: kept if it passes the check.
    Text(Box<str>),
    /// Left out of the tree: its text is the cached one.
    Cached,
}

/// `_meta` texts longer than this are not kept (a few hundred bytes is usual).
const META_CACHE_MAX: usize = 16 * 1024;

impl MetaCache {
    /// A cache entry for `text`, the `_meta` a request just passed the
    /// check with; None if it holds other keys or is too long to keep.
    pub fn of(text: Box<str>, map: &Map<String, Value>, meta: Meta) -> Option<MetaCache> {
        if text.len() > META_CACHE_MAX || !map.keys().all(|k| MODERN_KEYS.contains(&k.as_str())) {
            return None;
        }
        Some(MetaCache {
            text,
            map: map.clone(),
            inputs: Inputs::of(meta.capabilities),
            level: meta.level,
            tasks: meta.declares_tasks(),
        })
    }
}

impl Meta<'_> {
    /// It declares the `io.modelcontextprotocol/tasks` extension.
    pub fn declares_tasks(&self) -> bool {
        self.capabilities
            .get("extensions")
            .is_some_and(|e| e.get(super::tasks::EXTENSION).is_some())
    }
}

/// The per-connection era state.
pub struct EraState {
    pub era: Era,
    /// See [`MetaCache`].
    pub meta_cache: Option<MetaCache>,
    /// The gateway's `serverInfo`, as JSON text (spliced into results).
    server_info: String,
    /// The stamp of the modern request being routed, until it is
    /// forwarded (like the audit's `opening`).
    pub current: Option<Reply>,
    /// A retry of a modern child's `input_required`: our handle, and the
    /// child it must reach.
    pub pin: Option<(String, usize)>,
    /// Per child: the id of the gateway's own listen on a modern child
    /// (its list changes, for the whole session).
    pub child_listen: Vec<Option<u64>>,
    /// A legacy client's `resources/subscribe` to a modern child: the
    /// child listen that serves it, by (child, uri).
    pub child_subs: std::collections::HashMap<(usize, String), u64>,
    /// A modern client's streams' tasks at modern children: the child
    /// listen that follows each, by (child, the child's task id).
    pub child_tasks: std::collections::HashMap<(usize, String), u64>,
    /// A legacy client's `resources/subscribe` passed to a legacy child:
    /// sent again when that child is restarted (at most
    /// `listen::MAX_CHILD_SUBS` kept).
    pub client_subs: std::collections::HashSet<(usize, String)>,
    /// Per child: the last `logging/setLevel` rank sent to it.
    pub sent_level: Vec<Option<u8>>,
    /// Open `subscriptions/listen` streams: the client's id and filter.
    pub listens: Vec<Listen>,
    /// The `_meta` the gateway puts on requests of its own to modern
    /// children (list fan-outs) and on a legacy client's requests to them.
    client_meta: Map<String, Value>,
}

/// One open `subscriptions/listen`.
pub struct Listen {
    pub id: Value,
    /// `toolsListChanged`, `promptsListChanged`, `resourcesListChanged`.
    pub lists: [bool; 3],
    /// The resources it named that a child serves: (child, uri).
    pub subs: Vec<(usize, String)>,
    /// The tasks it named (tasks extension): (child, the child's task id).
    pub tasks: Vec<(usize, String)>,
}

impl EraState {
    pub fn new(server_name: &str, server_version: &str, children: usize) -> EraState {
        let info = json!({"name": server_name, "version": server_version});
        EraState {
            era: Era::Unlocked,
            meta_cache: None,
            server_info: info.to_string(),
            current: None,
            pin: None,
            sent_level: vec![None; children],
            child_listen: vec![None; children],
            child_subs: std::collections::HashMap::new(),
            client_subs: std::collections::HashSet::new(),
            child_tasks: std::collections::HashMap::new(),
            listens: Vec::new(),
            client_meta: Map::from_iter([
                (PROTOCOL_VERSION.to_owned(), json!(MODERN)),
                (CLIENT_CAPABILITIES.to_owned(), json!({})),
                (CLIENT_INFO.to_owned(), info),
            ]),
        }
    }

    /// Whether an open stream names resource `uri` of `child`.
    pub fn subscribed(&self, child: usize, uri: &str) -> bool {
        self.listens
            .iter()
            .any(|l| l.subs.iter().any(|(c, u)| *c == child && u == uri))
    }

    /// Records a legacy client's subscribe (or unsubscribe) of `uri` at
    /// legacy child `child`.
    pub fn client_sub(&mut self, child: usize, uri: &str, subscribe: bool) {
        let key = (child, uri.to_owned());
        if !subscribe {
            self.client_subs.remove(&key);
        } else if self.client_subs.len() < super::listen::MAX_CHILD_SUBS {
            self.client_subs.insert(key);
        } else {
            log::debug!(
                "subscription to {uri} not kept for a restart: {} kept",
                self.client_subs.len()
            );
        }
    }

    /// Child `child` ended: the tasks streams follow there are gone (a
    /// restarted process counts its ids anew, so a new task may reuse an
    /// old id; only a stream that names it afterwards follows it).
    pub fn forget_tasks(&mut self, child: usize) {
        self.child_tasks.retain(|(c, _), _| *c != child);
        for l in &mut self.listens {
            l.tasks.retain(|(c, _)| *c != child);
        }
    }

    pub fn client_meta(&self) -> &Map<String, Value> {
        &self.client_meta
    }

    /// A modern client locked the era with this request's `_meta`.
    pub fn modern_client(&mut self, meta: Meta) {
        self.client_meta.insert(
            CLIENT_CAPABILITIES.into(),
            Value::Object(meta.capabilities.clone()),
        );
        if let Some(info) = meta.client_info {
            self.client_meta.insert(CLIENT_INFO.into(), info.clone());
        }
    }

    /// A legacy client's `initialize` params, mapped to the `_meta` of
    /// 2026-07-28 (ERAS §4 column B): `roots.listChanged` and `tasks` go.
    pub fn legacy_client(&mut self, init: &Value) {
        let mut caps = init
            .get("capabilities")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        caps.remove("tasks");
        // A legacy client cannot follow a modern task (ERAS §3).
        if let Some(e) = caps.get_mut("extensions").and_then(Value::as_object_mut) {
            e.remove(super::tasks::EXTENSION);
        }
        if caps.contains_key("roots") {
            caps.insert("roots".into(), json!({}));
        }
        self.client_meta
            .insert(CLIENT_CAPABILITIES.into(), Value::Object(caps));
        if let Some(info) = init.get("clientInfo").filter(|v| v.is_object()) {
            self.client_meta.insert(CLIENT_INFO.into(), info.clone());
        }
    }

    /// A legacy client's `logging/setLevel`: stamped on its later
    /// requests to modern children.
    pub fn legacy_level(&mut self, level: Option<&str>) {
        match level.filter(|l| level_rank(l).is_some()) {
            Some(l) => self.client_meta.insert(LOG_LEVEL.into(), json!(l)),
            None => self.client_meta.remove(LOG_LEVEL),
        };
    }

    pub fn modern(&self) -> bool {
        self.era == Era::Modern
    }

    /// Stamps a complete result for a modern client: `resultType` if the
    /// child left it out, the gateway's `serverInfo`, and for a cacheable
    /// one the hints (`0`/`"private"`: lists differ per key, ERAS §5.7).
    pub fn stamp(&self, result: &mut Value, cacheable: bool) {
        let Some(obj) = result.as_object_mut() else {
            return;
        };
        obj.entry("resultType")
            .or_insert_with(|| Value::String("complete".into()));
        if !obj.get("_meta").is_some_and(Value::is_object) {
            obj.insert("_meta".into(), json!({}));
        }
        if let Some(Value::Object(meta)) = obj.get_mut("_meta") {
            let info = serde_json::from_str(&self.server_info).unwrap_or(Value::Null);
            meta.insert(SERVER_INFO.into(), info);
        }
        if cacheable && obj.get("resultType").and_then(Value::as_str) == Some("complete") {
            obj.entry("ttlMs").or_insert(json!(0));
            obj.entry("cacheScope")
                .or_insert_with(|| Value::String("private".into()));
        }
    }

    /// A child's raw result text stamped as [`EraState::stamp`] does,
    /// appended to `out`. A result that names none of the stamped keys is
    /// spliced as text (a large tool result is not rebuilt); anything else
    /// is parsed.
    pub fn stamp_into(&self, out: &mut Vec<u8>, payload: &str, cacheable: bool) {
        let body = payload.trim_start();
        let plain = body.starts_with('{') && !names_a_stamped_key(body.as_bytes());
        if !plain {
            let mut v: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
            self.stamp(&mut v, cacheable);
            let _ = serde_json::to_writer(&mut *out, &v); // a Vec never fails
            return;
        }
        let rest = &body[1..];
        out.reserve(payload.len() + self.server_info.len() + 100);
        out.extend_from_slice(b"{\"resultType\":\"complete\",\"_meta\":{\"");
        out.extend_from_slice(SERVER_INFO.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(self.server_info.as_bytes());
        out.push(b'}');
        if cacheable {
            out.extend_from_slice(b",\"ttlMs\":0,\"cacheScope\":\"private\"");
        }
        if !rest.trim_start().starts_with('}') {
            out.push(b',');
        }
        out.extend_from_slice(rest.as_bytes());
    }
}

/// Whether JSON text has a string equal to a key [`EraState::stamp`]
/// sets, at any depth: one pass over its quotes.
fn names_a_stamped_key(text: &[u8]) -> bool {
    let at = |i: usize| {
        let rest = &text[i + 1..];
        // One key per first byte: one comparison per string, not four.
        let key: &[u8] = match rest.first() {
            Some(b'r') => b"resultType\"",
            Some(b'_') => b"_meta\"",
            Some(b't') => b"ttlMs\"",
            Some(b'c') => b"cacheScope\"",
            _ => return false,
        };
        rest.starts_with(key)
    };
    // A usual result is short: a byte loop beats a SIMD search per quote.
    if text.len() <= 512 {
        (0..text.len()).any(|i| text[i] == b'"' && at(i))
    } else {
        memchr::memchr_iter(b'"', text).any(at)
    }
}

/// Whether a request is a 2026-07-28 one: a modern-only method, or a
/// `_meta` with the modern version or capabilities keys. Cheap on the
/// legacy path: two map lookups when `_meta` exists.
pub fn is_modern_request(method: &str, msg: &Value) -> bool {
    if method == "server/discover" || method == "subscriptions/listen" {
        return true;
    }
    msg.get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key(PROTOCOL_VERSION) || m.contains_key(CLIENT_CAPABILITIES))
}

/// Checks the `_meta` every modern request must carry (ERAS §2.1), in
/// order: version present, version spoken, capabilities, log level.
/// `locked`: the connection is already modern, so -32022 lists only the
/// modern version; before the lock it lists the legacy ones too, so a
/// client that speaks only those knows to send `initialize`.
pub fn check_meta(msg: &Value, locked: bool) -> Result<Meta<'_>, Refusal> {
    let meta = match msg.get("params") {
        None => return Err(Refusal::new(INVALID_PARAMS, missing(PROTOCOL_VERSION))),
        Some(Value::Object(p)) => match p.get("_meta") {
            Some(Value::Object(m)) => m,
            None => return Err(Refusal::new(INVALID_PARAMS, missing(PROTOCOL_VERSION))),
            Some(_) => {
                return Err(Refusal::new(
                    INVALID_PARAMS,
                    "params._meta must be an object",
                ));
            }
        },
        Some(_) => return Err(Refusal::new(INVALID_PARAMS, "params must be an object")),
    };
    // One pass over the few keys: no key is hashed (SipHash of these long
    // names costs more than comparing them).
    let (mut version, mut caps, mut info, mut level) = (None, None, None, None);
    for (k, v) in meta {
        match k.as_str() {
            PROTOCOL_VERSION => version = Some(v),
            CLIENT_CAPABILITIES => caps = Some(v),
            CLIENT_INFO => info = Some(v),
            LOG_LEVEL => level = Some(v),
            _ => {}
        }
    }
    let version = match version {
        Some(Value::String(v)) => v,
        Some(_) => {
            return Err(Refusal::new(
                INVALID_PARAMS,
                format!("params._meta[\"{PROTOCOL_VERSION}\"] must be a string"),
            ));
        }
        None => return Err(Refusal::new(INVALID_PARAMS, missing(PROTOCOL_VERSION))),
    };
    if version != MODERN {
        let mut supported = vec![MODERN];
        if !locked {
            supported.extend(super::init::SUPPORTED_VERSIONS);
        }
        return Err(Refusal {
            code: UNSUPPORTED_VERSION,
            message: format!("Unsupported protocol version {version}"),
            data: Some(json!({"supported": supported, "requested": version})),
        });
    }
    let capabilities = match caps {
        Some(Value::Object(c)) => c,
        Some(_) => {
            return Err(Refusal::new(
                INVALID_PARAMS,
                format!("params._meta[\"{CLIENT_CAPABILITIES}\"] must be an object"),
            ));
        }
        None => return Err(Refusal::new(INVALID_PARAMS, missing(CLIENT_CAPABILITIES))),
    };
    let level = match level {
        None => None,
        Some(v) => match v.as_str().and_then(level_rank) {
            Some(r) => Some(r),
            None => {
                return Err(Refusal::new(
                    INVALID_PARAMS,
                    format!(
                        "params._meta[\"{LOG_LEVEL}\"] must be one of {}",
                        LEVELS.join(", ")
                    ),
                ));
            }
        },
    };
    Ok(Meta {
        capabilities,
        client_info: info.filter(|v| v.is_object()),
        level,
    })
}

fn missing(key: &str) -> String {
    format!("missing params._meta[\"{key}\"]: every 2026-07-28 request carries it")
}

/// The refusal of a method a modern client may not call.
pub fn not_modern(method: &str) -> Option<Refusal> {
    if MODERN_METHODS.contains(&method) {
        return None;
    }
    let why = if REMOVED.contains(&method) {
        format!("method not found: {method} was removed in 2026-07-28")
    } else {
        format!("method not found: {method}")
    };
    Some(Refusal::new(METHOD_NOT_FOUND, why))
}

/// `initialize` on a connection locked to 2026-07-28 (-32022, as a
/// modern-only server answers it: ERAS §5.4).
pub fn initialize_when_modern(msg: &Value) -> Refusal {
    let requested = msg
        .at("/params/protocolVersion")
        .cloned()
        .unwrap_or(Value::Null);
    Refusal {
        code: UNSUPPORTED_VERSION,
        message: format!(
            "Unsupported protocol version: this connection is locked to {MODERN} \
             (its first request carried 2026-07-28 _meta); initialize needs a new connection"
        ),
        data: Some(json!({"supported": [MODERN], "requested": requested})),
    }
}

/// A modern request on a connection locked to the legacy era.
pub fn modern_when_legacy(method: &str, version: &str) -> Refusal {
    Refusal::new(
        INVALID_REQUEST,
        format!(
            "{method}: this connection is locked to the initialize era ({version}); \
             2026-07-28 requests need a new connection"
        ),
    )
}

/// A request before either era was chosen.
pub fn unlocked(method: &str) -> Refusal {
    Refusal::new(
        INVALID_REQUEST,
        format!(
            "{method}: the session is not initialized; send initialize first, \
             or give every request params._meta for {MODERN}"
        ),
    )
}

/// Removes the 2026-07-28 keys from a request's `params._meta` before it
/// goes to a legacy child (a dual-era child locked to legacy refuses them);
/// an emptied `_meta` goes too.
pub fn strip_meta(msg: &mut Value) {
    let params = msg
        .as_object_mut()
        .and_then(|m| crate::mcp::jsonrpc::field_mut(m, "params"));
    let Some(params) = params.and_then(Value::as_object_mut) else {
        return;
    };
    let empty = match crate::mcp::jsonrpc::field_mut(params, "_meta").and_then(Value::as_object_mut)
    {
        // Usually nothing else is there: the whole `_meta` goes at once.
        Some(meta) if meta.keys().all(|k| MODERN_KEYS.contains(&k.as_str())) => true,
        Some(meta) => {
            // `retain` keeps each key's stored hash: no key is hashed again.
            meta.retain(|k, _| !MODERN_KEYS.contains(&k.as_str()));
            meta.is_empty()
        }
        None => false,
    };
    if empty {
        params.remove("_meta");
    }
}

/// Puts `meta` into `params._meta` (a request to a modern child), keeping
/// what is there (`progressToken`).
pub fn add_meta(params: &mut Value, meta: &Map<String, Value>) {
    if !params.is_object() {
        *params = json!({});
    }
    let Some(p) = params.as_object_mut() else {
        return;
    };
    let slot = p.entry("_meta").or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    if let Some(m) = slot.as_object_mut() {
        for (k, v) in meta {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// A legacy child's `initialize` params for a modern client: its
/// capabilities (minus `extensions`, which legacy lacks) and its info.
pub fn legacy_init_params(meta: Meta, server_name: &str, server_version: &str) -> Value {
    let mut caps = meta.capabilities.clone();
    caps.remove("extensions");
    caps.remove("tasks");
    let info = meta
        .client_info
        .cloned()
        .unwrap_or_else(|| json!({"name": server_name, "version": server_version}));
    json!({"protocolVersion": super::init::SUPPORTED_VERSIONS[0],
           "capabilities": caps, "clientInfo": info})
}

/// The gateway's own error codes in the legacy sub-range become -32603 with
/// the reason in `data` for a modern client (ERAS §5.14); a child's -32002
/// (resource not found) becomes -32602.
pub fn modern_code(code: i64) -> (i64, Option<&'static str>) {
    match code {
        REQUEST_TIMEOUT => (INTERNAL_ERROR, Some("timeout")),
        SERVER_UNAVAILABLE => (INTERNAL_ERROR, Some("unavailable")),
        c => (c, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(meta: Value) -> Value {
        json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":meta}})
    }

    #[test]
    fn meta_is_checked_in_order_with_the_codes_of_the_spec() {
        let ok = json!({PROTOCOL_VERSION: MODERN, CLIENT_CAPABILITIES: {"sampling":{}},
                        CLIENT_INFO: {"name":"c","version":"1"}, LOG_LEVEL: "warning"});
        let ok = req(ok);
        let m = check_meta(&ok, true).unwrap();
        assert_eq!(m.level, Some(3));
        assert!(m.capabilities.contains_key("sampling"));
        let code = |v: Value| check_meta(&v, false).unwrap_err().code;
        assert_eq!(code(json!({"jsonrpc":"2.0","id":1,"method":"x"})), -32602);
        assert_eq!(code(req(json!({CLIENT_CAPABILITIES: {}}))), -32602);
        assert_eq!(code(req(json!({PROTOCOL_VERSION: 7}))), -32602);
        assert_eq!(code(req(json!({PROTOCOL_VERSION: MODERN}))), -32602);
        assert_eq!(
            code(req(
                json!({PROTOCOL_VERSION: MODERN, CLIENT_CAPABILITIES: {}, LOG_LEVEL: "loud"})
            )),
            -32602
        );
        let e = check_meta(&req(json!({PROTOCOL_VERSION: "1900-01-01"})), false).unwrap_err();
        assert_eq!(e.code, UNSUPPORTED_VERSION);
        let data = e.data.unwrap();
        assert_eq!(data["requested"], "1900-01-01");
        assert_eq!(data["supported"][0], MODERN);
        assert!(
            data["supported"].as_array().unwrap().len() > 1,
            "legacy too"
        );
        let e = check_meta(&req(json!({PROTOCOL_VERSION: "2025-11-25"})), true).unwrap_err();
        assert_eq!(e.data.unwrap()["supported"], json!([MODERN]), "locked");
    }

    #[test]
    fn results_are_stamped_as_text_or_as_a_tree_alike() {
        let st = EraState::new("gw", "1", 0);
        for (payload, cacheable) in [
            (r#"{"content":[{"type":"text","text":"x"}]}"#, false),
            (r#"{ }"#, true),
            (r#"{"contents":[],"_meta":{"k":1}}"#, true),
            (r#"{"resultType":"complete","ttlMs":5}"#, true),
            (r#"{"cacheScope":"public","c":"cacheScopes"}"#, true),
            (
                r#"{"content":[{"text":"ttlMs","_metadata":"resultType"}]}"#,
                false,
            ),
        ] {
            let mut out = Vec::new();
            st.stamp_into(&mut out, payload, cacheable);
            let text: Value = serde_json::from_slice(&out).unwrap();
            let mut tree: Value = serde_json::from_str(payload).unwrap();
            st.stamp(&mut tree, cacheable);
            assert_eq!(text, tree, "{payload}");
            assert_eq!(tree["resultType"], "complete");
            assert_eq!(tree["_meta"][SERVER_INFO]["name"], "gw");
            assert_eq!(tree.get("ttlMs").is_some(), cacheable);
        }
        for (text, named) in [
            (&br#"{"a":{"b":[{"_meta":1}]}}"#[..], true),
            (br#"{"cacheScope":1}"#, true),
            (br#"{"ttlMs":1}"#, true),
            (br#"{"resultType":1}"#, true),
            (
                br#"{"resultTypes":1,"_metas":2,"ttl":"cacheScop","t":"c"}"#,
                false,
            ),
            (br#"{"r":"_","x":""}"#, false),
            (br#"""#, false),
        ] {
            let long = [text, &[b' '; 600][..]].concat();
            assert_eq!(names_a_stamped_key(&long), named, "long");
            assert_eq!(
                names_a_stamped_key(text),
                named,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        let mut v = json!({"resultType":"complete","ttlMs":5,"cacheScope":"public"});
        st.stamp(&mut v, true);
        assert_eq!(
            (v["ttlMs"].clone(), v["cacheScope"].clone()),
            (json!(5), json!("public"))
        );
    }

    #[test]
    fn modern_keys_are_stripped_for_a_legacy_child_and_others_kept() {
        let mut m = json!({"params":{"name":"t","_meta":{PROTOCOL_VERSION: MODERN, CLIENT_CAPABILITIES:{},
            "progressToken": 3, "io.modelcontextprotocol/related-task": {"taskId":"x"}}}});
        strip_meta(&mut m);
        assert_eq!(
            m["params"]["_meta"],
            json!({"progressToken":3, "io.modelcontextprotocol/related-task": {"taskId":"x"}})
        );
        let mut m = json!({"params":{"_meta":{PROTOCOL_VERSION: MODERN}}});
        strip_meta(&mut m);
        assert_eq!(m["params"], json!({}));
    }

    #[test]
    fn methods_removed_in_2026_get_method_not_found_naming_the_revision() {
        assert!(not_modern("tools/call").is_none());
        let e = not_modern("ping").unwrap();
        assert_eq!(e.code, -32601);
        assert!(e.message.contains("removed in 2026-07-28"));
        assert!(!not_modern("foo/bar").unwrap().message.contains("removed"));
    }
}
