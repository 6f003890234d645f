//! A scoped registration (the key API's `"servers"` and `"tools"`): checked
//! against the configured servers and the tool-filter syntax, then written as
//! `command="a,b"` and `environment="MCP_TOOLS=p1,p2"` on the key's line,
//! which must read back, through the server's own parser, as exactly that.

use super::PublicKey;
use super::options::KeyOptions;
use super::pattern::NameFilter;
use super::registry::KeyLine;
use std::collections::BTreeSet;

/// Longest tool pattern accepted (an MCP tool name is at most 128).
const MAX_PATTERN: usize = 129;

/// What a registration may use; `None` restricts nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    servers: Option<BTreeSet<String>>,
    tools: Option<Vec<String>>,
}

impl Scope {
    /// Checks `servers` (names of `configured` servers) and `tools` (the
    /// patterns of `MCP_TOOLS`: exposed tool names with `*` and `?`, `!` to
    /// exclude); the error says what is wrong.
    pub fn new(
        servers: Option<Vec<String>>,
        tools: Option<Vec<String>>,
        configured: &[String],
    ) -> Result<Scope, String> {
        let servers = match servers {
            None => None,
            Some(v) if v.is_empty() => return Err("servers must name at least one server".into()),
            Some(v) => Some(
                v.into_iter()
                    .map(|s| {
                        if configured.contains(&s) {
                            Ok(s)
                        } else {
                            Err(format!(
                                "servers: {:?} is not a configured server (configured: {})",
                                shown(&s),
                                configured.join(", ")
                            ))
                        }
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?,
            ),
        };
        if let Some(t) = &tools {
            if t.is_empty() {
                return Err("tools must hold at least one pattern".into());
            }
            if let Some(bad) = t.iter().find(|p| !is_pattern(p)) {
                return Err(format!(
                    "tools: {:?} is not a pattern: a tool name (letters, digits, '_', '.', \
                     '-') with '*' and '?' wildcards, at most {MAX_PATTERN} characters, \
                     '!' first to exclude",
                    shown(bad)
                ));
            }
            NameFilter::parse(&t.join(",")).map_err(|why| format!("tools: {why}"))?;
        }
        Ok(Scope { servers, tools })
    }

    /// True when it restricts nothing.
    pub fn is_empty(&self) -> bool {
        *self == Scope::default()
    }

    /// The options text, authorized_keys syntax ("" when unrestricted).
    pub fn options(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.servers {
            let names: Vec<&str> = s.iter().map(String::as_str).collect();
            parts.push(format!("command=\"{}\"", names.join(",")));
        }
        if let Some(t) = &self.tools {
            parts.push(format!("environment=\"MCP_TOOLS={}\"", t.join(",")));
        }
        parts.join(",")
    }

    /// The line to write for `key`: built, read back by the server's parser,
    /// and checked to grant exactly this scope.
    pub fn line(&self, key: &PublicKey) -> Result<KeyLine, String> {
        let line = KeyLine::new(key, &self.options())?;
        let tools = match &self.tools {
            Some(t) => Some(NameFilter::parse(&t.join(","))?),
            None => None,
        };
        let want = KeyOptions {
            servers: self.servers.clone(),
            tools,
            ..KeyOptions::default()
        };
        if *line.options() != want {
            return Err("the options do not read back as asked".into());
        }
        Ok(line)
    }
}

/// A tool pattern: an optional `!`, then 1 to 128 characters of MCP tool
/// names (`[A-Za-z0-9_.-]`) and wildcards. Nothing that could close a quote,
/// separate entries or break a line.
fn is_pattern(p: &str) -> bool {
    let body = p.strip_prefix('!').unwrap_or(p);
    !body.is_empty()
        && p.len() <= MAX_PATTERN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-*?".contains(&b))
}

/// At most 64 characters of untrusted input, for an error message.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate_ed25519, parse_line};

    fn configured() -> Vec<String> {
        vec!["time".into(), "everything".into(), "a.b-c_1".into()]
    }

    fn scope(servers: Option<&[&str]>, tools: Option<&[&str]>) -> Result<Scope, String> {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Scope::new(servers.map(owned), tools.map(owned), &configured())
    }

    #[test]
    fn writes_command_and_mcp_tools_that_read_back() {
        let (_, public) = generate_ed25519("me@host");
        let key = parse_line(&public).unwrap().0;
        let s = scope(
            Some(&["time", "a.b-c_1", "time"]),
            Some(&["get_*", "!get_secret"]),
        )
        .unwrap();
        assert_eq!(
            s.options(),
            r#"command="a.b-c_1,time",environment="MCP_TOOLS=get_*,!get_secret""#
        );
        let line = s.line(&key).unwrap();
        assert_eq!(line.text(), format!("{} {public}", s.options()));
        let o = line.options();
        assert!(o.allows_server("time") && !o.allows_server("everything"));
        assert!(o.allows_tool("get_time") && !o.allows_tool("get_secret"));
        assert!(o.allows_prompt("anything") && o.from.is_none() && o.expiry.is_none());
        // Either alone, or neither.
        assert_eq!(
            scope(None, Some(&["x"])).unwrap().options(),
            r#"environment="MCP_TOOLS=x""#
        );
        assert_eq!(
            scope(Some(&["time"]), None).unwrap().options(),
            r#"command="time""#
        );
        let none = scope(None, None).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.line(&key).unwrap().text(), public);
    }

    #[test]
    fn refuses_what_it_cannot_write_exactly() {
        for (servers, tools, why) in [
            (Some(&["nope"][..]), None, "not a configured server"),
            (Some(&[][..]), None, "at least one server"),
            (Some(&["time\"", "x"][..]), None, "not a configured server"),
            (None, Some(&[][..]), "at least one pattern"),
            (None, Some(&["a,b"][..]), "not a pattern"),
            (None, Some(&["a\"b"][..]), "not a pattern"),
            (None, Some(&["a\nb"][..]), "not a pattern"),
            (None, Some(&["a\0"][..]), "not a pattern"),
            (None, Some(&["a b"][..]), "not a pattern"),
            (None, Some(&["a\\"][..]), "not a pattern"),
            (None, Some(&["!"][..]), "not a pattern"),
            (None, Some(&["!!a"][..]), "not a pattern"),
            (None, Some(&[""][..]), "not a pattern"),
        ] {
            let e = scope(servers, tools).unwrap_err();
            assert!(e.contains(why), "{servers:?} {tools:?}: {e}");
        }
        let long = "x".repeat(MAX_PATTERN + 1);
        assert!(scope(None, Some(&[long.as_str()])).is_err());
        let e = scope(Some(&["x".repeat(500).as_str()]), None).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }
}
