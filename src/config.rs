//! `servers_config.json` -> the list of MCP servers to start per session.
//!
//! The format is Claude Desktop's: `{"mcpServers": {name: {"command", "args",
//! "env", "cwd", "disabled"}}}`. Config order is kept: it decides which
//! server keeps a duplicate tool name. Every error names the file, the server
//! and the field, so a user can fix it without reading code.

use crate::error::Error;
use crate::keys::pattern::NameFilter;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One configured MCP server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    /// Set on top of the server's inherited environment.
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Deadline for each request forwarded to this server (`requestTimeoutSecs`).
    pub request_timeout: Option<Duration>,
    /// Warm spares to keep for this server (`warmSpares`); None: the flag's value.
    pub warm_spares: Option<usize>,
    /// Put before this server's tool and prompt names (`namePrefix`), e.g. `time.`.
    pub name_prefix: String,
    /// Which of this server's tools and prompts anyone may list and call
    /// (`"tools"` / `"prompts"`: patterns on the server's own names).
    pub tools: Option<NameFilter>,
    pub prompts: Option<NameFilter>,
    /// One process set per session, or processes shared by every session.
    pub scope: Scope,
    /// The MCP era the server speaks (`"protocol"`).
    pub protocol: Protocol,
}

/// `"protocol"`: how the gateway talks to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Probed once with `server/discover` (the default; a shared server
    /// by its mux, on its first process).
    Auto,
    /// `initialize` and the legacy rules, never probed.
    Legacy,
    /// 2026-07-28: no `initialize`, `_meta` on every request.
    Modern,
}

/// `"scope"`: who a server's processes belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each session starts its own process (the default).
    Session,
    /// `processes` processes, started once, serve every session.
    Shared { processes: usize },
}

impl ServerSpec {
    /// A server that runs `command` with `args`, every option at its default.
    pub fn new(name: &str, command: &str, args: &[&str]) -> ServerSpec {
        ServerSpec {
            name: name.to_owned(),
            command: command.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: None,
            request_timeout: None,
            warm_spares: None,
            name_prefix: String::new(),
            tools: None,
            prompts: None,
            scope: Scope::Session,
            protocol: Protocol::Auto,
        }
    }
}

/// Reads and validates the config file. Disabled servers are left out.
pub fn load(path: &Path) -> Result<Vec<ServerSpec>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "{}: cannot read servers config: {e}",
            path.display()
        ))
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses config text; `file` is only used in messages.
pub fn parse(text: &str, file: &str) -> Result<Vec<ServerSpec>, Error> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        Error::Config(format!(
            "{file}: invalid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let servers = root
        .get("mcpServers")
        .ok_or_else(|| Error::Config(format!("{file}: missing top-level field \"mcpServers\"")))?
        .as_object()
        .ok_or_else(|| Error::Config(format!("{file}: \"mcpServers\" must be an object")))?;
    let mut out = Vec::new();
    for (name, v) in servers {
        let err = |field: &str, what: &str| {
            Error::Config(format!(
                "{file}: server \"{name}\": field \"{field}\" {what}"
            ))
        };
        let obj = v
            .as_object()
            .ok_or_else(|| Error::Config(format!("{file}: server \"{name}\" must be an object")))?;
        if name.is_empty() || name.contains(',') || name.chars().any(char::is_whitespace) {
            return Err(Error::Config(format!(
                "{file}: server name {name:?} must be non-empty, without commas or spaces"
            )));
        }
        if get_bool(obj, "disabled").map_err(|w| err("disabled", w))? {
            continue;
        }
        let command = match obj.get("command") {
            None => return Err(err("command", "is missing")),
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(err("command", "is empty")),
            Some(_) => return Err(err("command", "must be a string")),
        };
        let args = match obj.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| err("args", "must be an array of strings"))?,
            Some(_) => return Err(err("args", "must be an array of strings")),
        };
        let mut env = BTreeMap::new();
        match obj.get("env") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .ok_or_else(|| err(&format!("env.{k}"), "must be a string"))?;
                    env.insert(k.clone(), v.to_owned());
                }
            }
            Some(_) => return Err(err("env", "must be an object of strings")),
        }
        let cwd = match obj.get("cwd") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(PathBuf::from(s)),
            Some(_) => return Err(err("cwd", "must be a string")),
        };
        let request_timeout = match obj.get("requestTimeoutSecs") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(s) if s > 0.0 && s < 1e7 => Some(Duration::from_secs_f64(s)),
                _ => return Err(err("requestTimeoutSecs", "must be a positive number")),
            },
        };
        let warm_spares = match obj.get("warmSpares") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n <= 16 => Some(n as usize),
                _ => return Err(err("warmSpares", "must be a whole number from 0 to 16")),
            },
        };
        let name_prefix = match obj.get("namePrefix") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(p)) if crate::mcp::names::is_valid_prefix(p) => p.clone(),
            Some(_) => {
                return Err(err(
                    "namePrefix",
                    "must be up to 64 characters of letters, digits, '_', '-' and '.'",
                ));
            }
        };
        let scope = scope(obj).map_err(|(field, w)| err(field, &w))?;
        if scope != Scope::Session && warm_spares.is_some() {
            return Err(err("warmSpares", "applies to \"scope\": \"session\" only"));
        }
        let protocol = match obj.get("protocol") {
            None => Protocol::Auto,
            Some(Value::String(p)) if p == "auto" => Protocol::Auto,
            Some(Value::String(p)) if p == "legacy" => Protocol::Legacy,
            Some(Value::String(p)) if p == "2026-07-28" => Protocol::Modern,
            Some(_) => {
                return Err(err(
                    "protocol",
                    "must be \"auto\", \"legacy\" or \"2026-07-28\"",
                ));
            }
        };
        let tools = name_filter(obj, "tools").map_err(|w| err("tools", &w))?;
        let prompts = name_filter(obj, "prompts").map_err(|w| err("prompts", &w))?;
        out.push(ServerSpec {
            name: name.clone(),
            command,
            args,
            env,
            cwd,
            request_timeout,
            warm_spares,
            name_prefix,
            tools,
            prompts,
            scope,
            protocol,
        });
    }
    Ok(out)
}

/// `"scope"` and `"processes"`; the error names the field.
fn scope(obj: &Map<String, Value>) -> Result<Scope, (&'static str, String)> {
    let processes = match obj.get("processes") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=64) => Some(n as usize),
            _ => return Err(("processes", "must be a whole number from 1 to 64".into())),
        },
    };
    match obj.get("scope") {
        None | Some(Value::Null) => match processes {
            None => Ok(Scope::Session),
            Some(_) => Err(("processes", "needs \"scope\": \"shared\"".into())),
        },
        Some(Value::String(s)) if s == "session" => match processes {
            None => Ok(Scope::Session),
            Some(_) => Err(("processes", "needs \"scope\": \"shared\"".into())),
        },
        Some(Value::String(s)) if s == "shared" => Ok(Scope::Shared {
            processes: processes.unwrap_or(1),
        }),
        Some(other) => Err((
            "scope",
            format!("must be \"session\" or \"shared\", not {other}"),
        )),
    }
}

/// `["pattern", "!pattern"]`: `*` and `?` wildcards, `!` excludes.
fn name_filter(obj: &Map<String, Value>, key: &str) -> Result<Option<NameFilter>, String> {
    const WHAT: &str = "must be an array of name patterns such as \"get_*\" or \"!delete_*\"";
    let list = match obj.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(WHAT.into()),
    };
    let mut entries = Vec::with_capacity(list.len());
    for v in list {
        match v.as_str() {
            Some(e) if !e.contains(',') => entries.push(e),
            Some(e) => return Err(format!("entry {e:?} contains a comma")),
            None => return Err(WHAT.into()),
        }
    }
    if entries.is_empty() {
        return Err("is empty: leave it out to allow every name".into());
    }
    NameFilter::parse(&entries.join(",")).map(Some)
}

fn get_bool(obj: &Map<String, Value>, key: &str) -> Result<bool, &'static str> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err("must be true or false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_in_config_order() {
        let t = r#"{"mcpServers": {
            "zeta": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
            "alpha": {"command": "npx", "cwd": "/tmp", "requestTimeoutSecs": 5, "warmSpares": 0, "namePrefix": "a."},
            "off": {"command": "x", "disabled": true}
        }}"#;
        let s = parse(t, "c.json").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "zeta");
        assert_eq!(s[0].args, vec!["mcp-server-time"]);
        assert_eq!(s[0].env.get("TZ").map(String::as_str), Some("UTC"));
        assert_eq!(s[1].name, "alpha");
        assert_eq!(s[1].cwd.as_deref(), Some(Path::new("/tmp")));
        assert_eq!(s[1].request_timeout, Some(Duration::from_secs(5)));
        assert_eq!(s[1].warm_spares, Some(0));
        assert_eq!(s[0].warm_spares, None);
        assert_eq!(s[1].name_prefix, "a.");
        let e = parse(
            r#"{"mcpServers": {"a": {"command": "x", "namePrefix": "a b"}}}"#,
            "c.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("namePrefix"));
        let e = parse(
            r#"{"mcpServers": {"a": {"command": "x", "warmSpares": -1}}}"#,
            "c.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("warmSpares"));
    }

    #[test]
    fn errors_name_file_server_and_field() {
        let e = parse(r#"{"mcpServers": {"a": {"args": []}}}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "c.json: server \"a\": field \"command\" is missing");
        let e = parse(r#"{"mcpServers": {"a": {"command": 3}}}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"a\"") && e.contains("\"command\" must be a string"));
        let e = parse(
            r#"{"mcpServers": {"a": {"command": "x", "args": [1]}}}"#,
            "c.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"args\""));
        let e = parse(
            r#"{"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}"#,
            "c.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("env.K"));
        let e = parse("{\n  \"mcpServers\": {,}\n}", "c.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.json: invalid JSON at line 2, column"),
            "{}",
            e
        );
        let e = parse("{}", "c.json").unwrap_err().to_string();
        assert!(e.contains("mcpServers"));
        let e = parse(r#"{"mcpServers": {"a b": {"command": "x"}}}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"a b\""));
    }

    #[test]
    fn tool_and_prompt_filters_are_pattern_lists() {
        let s = parse(
            r#"{"mcpServers": {"a": {"command": "x", "tools": ["get_*", "!get_secret"], "prompts": ["!*"]}}}"#,
            "c.json",
        )
        .unwrap();
        let t = s[0].tools.as_ref().unwrap();
        assert!(t.allows("get_time") && !t.allows("get_secret") && !t.allows("delete"));
        assert!(!s[0].prompts.as_ref().unwrap().allows("greet"));
        for (bad, why) in [
            (r#""tools": "get_*""#, "must be an array"),
            (r#""tools": [1]"#, "must be an array"),
            (r#""tools": []"#, "is empty"),
            (r#""tools": ["a,b"]"#, "comma"),
            (r#""prompts": ["!"]"#, "prompts"),
        ] {
            let e = parse(
                &format!(r#"{{"mcpServers": {{"a": {{"command": "x", {bad}}}}}}}"#),
                "c.json",
            )
            .unwrap_err()
            .to_string();
            assert!(e.starts_with("c.json: server \"a\": field"), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn scope_and_processes_are_checked() {
        let one = |extra: &str| {
            parse(
                &format!(r#"{{"mcpServers": {{"a": {{"command": "x"{extra}}}}}}}"#),
                "c.json",
            )
        };
        assert_eq!(one("").unwrap()[0].scope, Scope::Session);
        assert_eq!(one("").unwrap()[0].protocol, Protocol::Auto);
        for (p, want) in [
            ("auto", Protocol::Auto),
            ("legacy", Protocol::Legacy),
            ("2026-07-28", Protocol::Modern),
        ] {
            let extra = format!(r#", "protocol": "{p}""#);
            assert_eq!(one(&extra).unwrap()[0].protocol, want);
        }
        assert_eq!(
            one(r#", "scope": "shared""#).unwrap()[0].scope,
            Scope::Shared { processes: 1 }
        );
        assert_eq!(
            one(r#", "scope": "shared", "processes": 2"#).unwrap()[0].scope,
            Scope::Shared { processes: 2 }
        );
        for p in ["auto", "legacy", "2026-07-28"] {
            let extra = format!(r#", "scope": "shared", "protocol": "{p}""#);
            assert_eq!(
                one(&extra).unwrap()[0].scope,
                Scope::Shared { processes: 1 },
                "{p}"
            );
        }
        for (bad, field) in [
            (r#", "scope": "shared", "processes": 0"#, "processes"),
            (r#", "scope": "global""#, "scope"),
            (r#", "processes": 2"#, "processes"),
            (r#", "scope": "session", "processes": 2"#, "processes"),
            (r#", "scope": "shared", "warmSpares": 1"#, "warmSpares"),
            (r#", "protocol": "2025-11-25""#, "protocol"),
            (r#", "protocol": true"#, "protocol"),
        ] {
            let e = one(bad).unwrap_err().to_string();
            let want = format!("c.json: server \"a\": field \"{field}\"");
            assert!(e.starts_with(&want), "{bad}: {e}");
        }
    }
}
