//! The options field of an authorized_keys line, with sshd(8)'s syntax:
//! comma-separated, names case-insensitive, values in double quotes where
//! `\"` is a quote (any other backslash is kept as is), no space outside
//! quotes. No NUL, CR or LF anywhere.
//!
//! The rule: an option this server cannot honour is an error, never
//! silently ignored, so a line written for sshd never gets more here than
//! it would there. An error leaves the whole key line out.
//!
//! | option | here |
//! |---|---|
//! | `from="pattern-list"` | client address must pass (see [`AddrPatterns`]) |
//! | `expiry-time="YYYYMMDD[HHMM[SS]][Z]"` | key refused after that time: local time, or UTC with `Z` (or `UTC`) |
//! | `command="name,name"` | the only MCP servers (config names) the key may use |
//! | `environment="MCP_TOOLS=pattern,..."`, `environment="MCP_PROMPTS=..."` | tool / prompt filters (see [`NameFilter`]) |
//! | `environment=` with any other variable | error: no environment reaches the MCP servers |
//! | `restrict`, `no-pty`, `no-port-forwarding`, `no-agent-forwarding`, `no-x11-forwarding`, `no-user-rc` | accepted: they forbid what this server never offers (pty, forwarding, `~/.ssh/rc`) |
//! | `pty`, `port-forwarding`, `agent-forwarding`, `x11-forwarding`, `user-rc` | accepted: they re-enable those, which grants nothing here |
//! | `no-touch-required`, `no-verify-required` | accepted: they relax FIDO checks this server does not make |
//! | `touch-required`, `verify-required` | error: they demand FIDO presence/verification flags this server does not check |
//! | `cert-authority`, `principals=` | error in authorized_keys: certificate authorities go in `--trusted-user-ca-keys`, where a line may carry `principals=` (below) |
//! | `permitopen=`, `permitlisten=`, `tunnel=` | error: such a line is meant for a forwarding key, not an MCP one |
//! | anything else | error |
//!
//! A line of the `--trusted-user-ca-keys` file ([`KeyOptions::parse_ca`])
//! takes the same options, which then apply to every certificate that CA
//! signs, plus `principals="name,..."`: the certificate must name one of
//! these principals instead of the SSH user name; `principals="*"` accepts
//! any principal (the certificate must still list one). `cert-authority`
//! is accepted there and changes nothing.
//!
//! Where this is stricter than sshd: every single-valued option (`from`,
//! `command`, `expiry-time`, each environment variable) may appear once
//! (sshd keeps the earliest expiry and the first environment value); the
//! date must be a real calendar date (sshd lets `mktime` roll 0231 over).
//! Local time follows the zone's daylight-saving rules for that date (sshd
//! passes `tm_isdst = 0`, which can be an hour off in summer).

use super::pattern::{AddrPatterns, NameFilter};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why an options field was refused; the message names the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError {
    /// A NUL, CR or LF somewhere in the options.
    ForbiddenChar(char),
    /// A space or tab outside double quotes.
    UnquotedSpace,
    /// An empty name: a doubled, leading or trailing comma.
    EmptyName,
    /// A quoted value with no closing quote.
    Unterminated(String),
    /// An option (or a `no-` form) this server does not implement.
    Unsupported { name: String, why: &'static str },
    /// An `environment=` variable other than `MCP_TOOLS` / `MCP_PROMPTS`.
    UnsupportedEnv(String),
    /// A single-valued option given twice.
    Duplicate(String),
    /// A value that does not parse, or a value missing or out of place.
    BadValue { name: String, why: String },
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::ForbiddenChar(c) => {
                let what = if *c == '\0' {
                    "a NUL byte"
                } else {
                    "a line break"
                };
                write!(f, "options contain {what}")
            }
            OptionError::UnquotedSpace => {
                f.write_str("options contain a space outside double quotes")
            }
            OptionError::EmptyName => {
                f.write_str("empty option name (a doubled, leading or trailing comma)")
            }
            OptionError::Unterminated(n) => write!(f, "option {n:?}: no closing double quote"),
            OptionError::Unsupported { name, why } => {
                write!(f, "option {name:?} is not supported: {why}")
            }
            OptionError::UnsupportedEnv(v) => write!(
                f,
                "environment variable {v:?} is not supported: only MCP_TOOLS and MCP_PROMPTS \
                 (no environment is passed to MCP servers)"
            ),
            OptionError::Duplicate(n) => write!(f, "option {n:?} is given more than once"),
            OptionError::BadValue { name, why } => write!(f, "option {name:?}: {why}"),
        }
    }
}

impl std::error::Error for OptionError {}

/// What one authorized_keys line allows; `None` fields restrict nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOptions {
    /// `from=`: client addresses allowed.
    pub from: Option<AddrPatterns>,
    /// `expiry-time=`, in Unix seconds: the key is refused after it.
    pub expiry: Option<i64>,
    /// `command=`: the MCP server names this key may use.
    pub servers: Option<BTreeSet<String>>,
    /// `environment="MCP_TOOLS=..."`.
    pub tools: Option<NameFilter>,
    /// `environment="MCP_PROMPTS=..."`.
    pub prompts: Option<NameFilter>,
    /// `principals=`, on a CA line only: which certificate principals the
    /// CA's certificates are accepted for.
    pub principals: Option<Principals>,
}

/// A CA line's `principals=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principals {
    /// `principals="*"`: any principal the certificate lists.
    Any,
    /// The certificate must list one of these.
    Names(BTreeSet<String>),
}

impl Principals {
    fn parse(v: &str) -> Result<Principals, String> {
        if v.trim() == "*" {
            return Ok(Principals::Any);
        }
        v.split(',')
            .map(str::trim)
            .map(|n| {
                if n.is_empty() {
                    Err("empty principal (a doubled, leading or trailing comma)".to_owned())
                } else if n.contains(['*', '?']) || n.chars().any(char::is_control) {
                    Err(format!(
                        "{n:?} is not a principal name: write names, or \"*\" alone for any"
                    ))
                } else {
                    Ok(n.to_owned())
                }
            })
            .collect::<Result<_, _>>()
            .map(Principals::Names)
    }

    /// Whether a certificate listing `names` passes.
    pub fn admits(&self, names: &[String]) -> bool {
        match self {
            Principals::Any => !names.is_empty(),
            Principals::Names(allowed) => names.iter().any(|n| allowed.contains(n)),
        }
    }
}

/// Flags accepted and ignored (see the module table).
const HARMLESS: [&str; 13] = [
    "restrict",
    "no-pty",
    "no-port-forwarding",
    "no-agent-forwarding",
    "no-x11-forwarding",
    "no-user-rc",
    "pty",
    "port-forwarding",
    "agent-forwarding",
    "x11-forwarding",
    "user-rc",
    "no-touch-required",
    "no-verify-required",
];

/// Longest option name quoted back in an error.
const SHOWN: usize = 64;

impl KeyOptions {
    /// Parses the options field (the text before the key type; may be empty).
    pub fn parse(text: &str) -> Result<KeyOptions, OptionError> {
        Self::parse_as(text, false)
    }

    /// Parses the options of a `--trusted-user-ca-keys` line: the same
    /// options, plus `principals=` and a harmless `cert-authority`.
    pub fn parse_ca(text: &str) -> Result<KeyOptions, OptionError> {
        Self::parse_as(text, true)
    }

    fn parse_as(text: &str, ca: bool) -> Result<KeyOptions, OptionError> {
        if let Some(c) = text.chars().find(|c| matches!(c, '\0' | '\r' | '\n')) {
            return Err(OptionError::ForbiddenChar(c));
        }
        let mut opts = KeyOptions::default();
        let mut rest = text;
        while !rest.is_empty() {
            let end = rest.find([',', '=']).unwrap_or(rest.len());
            let name = &rest[..end];
            if name.is_empty() {
                return Err(OptionError::EmptyName);
            }
            if name.contains([' ', '\t']) {
                return Err(OptionError::UnquotedSpace);
            }
            let name = name.chars().take(SHOWN).collect::<String>();
            rest = &rest[end..];
            let value = match rest.strip_prefix('=') {
                Some(quoted) => {
                    let (value, after) = dequote(&name, quoted)?;
                    rest = after;
                    Some(value)
                }
                None => None,
            };
            opts.apply(&name, value, ca)?;
            rest = match rest.strip_prefix(',') {
                Some("") => return Err(OptionError::EmptyName),
                Some(next) => next,
                None if rest.is_empty() => rest,
                None if rest.starts_with([' ', '\t']) => return Err(OptionError::UnquotedSpace),
                None => {
                    return Err(OptionError::BadValue {
                        name,
                        why: "text after the closing quote (a comma is missing)".into(),
                    });
                }
            };
        }
        Ok(opts)
    }

    /// One option; `name` as written (matched case-insensitively).
    fn apply(&mut self, name: &str, value: Option<String>, ca: bool) -> Result<(), OptionError> {
        let lower = name.to_ascii_lowercase();
        let unsupported = |why| {
            Err(OptionError::Unsupported {
                name: name.to_owned(),
                why,
            })
        };
        let bad = |why: &str| {
            Err(OptionError::BadValue {
                name: name.to_owned(),
                why: why.to_owned(),
            })
        };
        match (lower.as_str(), value) {
            (flag, None) if HARMLESS.contains(&flag) => Ok(()),
            ("touch-required" | "verify-required", _) => {
                unsupported("this server does not check FIDO user presence or verification")
            }
            ("cert-authority", None) if ca => Ok(()),
            ("principals", Some(v)) if ca => {
                let p = Principals::parse(&v).map_err(|why| OptionError::BadValue {
                    name: name.to_owned(),
                    why,
                })?;
                set_once(&mut self.principals, p, name)
            }
            ("principals", None) if ca => bad("needs a value in double quotes"),
            ("cert-authority" | "principals", _) => unsupported(
                "certificate authorities are listed in the --trusted-user-ca-keys file, \
                 not in authorized_keys",
            ),
            ("permitopen" | "permitlisten" | "tunnel", _) => {
                unsupported("this server forwards nothing; this line is meant for another use")
            }
            ("from", Some(v)) => {
                let list = AddrPatterns::parse(&v).map_err(|why| OptionError::BadValue {
                    name: name.to_owned(),
                    why,
                })?;
                set_once(&mut self.from, list, name)
            }
            ("expiry-time", Some(v)) => {
                let Some(t) = expiry(&v) else {
                    return bad(&format!(
                        "{v:?} is not a time: write YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS \
                         (local time), with a trailing Z for UTC"
                    ));
                };
                set_once(&mut self.expiry, t, name)
            }
            ("command", Some(v)) => {
                let names = server_names(&v).map_err(|why| OptionError::BadValue {
                    name: name.to_owned(),
                    why,
                })?;
                set_once(&mut self.servers, names, name)
            }
            ("environment", Some(v)) => self.environment(name, &v),
            (flag, Some(_)) if HARMLESS.contains(&flag) => bad("takes no value"),
            ("from" | "expiry-time" | "command" | "environment", None) => {
                bad("needs a value in double quotes")
            }
            _ => unsupported("unknown option"),
        }
    }

    /// `environment="NAME=value"`: only the two filter variables.
    fn environment(&mut self, name: &str, v: &str) -> Result<(), OptionError> {
        let Some((var, list)) = v.split_once('=') else {
            return Err(OptionError::BadValue {
                name: name.to_owned(),
                why: format!("{v:?} is not NAME=value"),
            });
        };
        let slot = match var {
            "MCP_TOOLS" => &mut self.tools,
            "MCP_PROMPTS" => &mut self.prompts,
            _ => return Err(OptionError::UnsupportedEnv(var.to_owned())),
        };
        let filter = NameFilter::parse(list).map_err(|why| OptionError::BadValue {
            name: format!("{name}={var}"),
            why,
        })?;
        set_once(slot, filter, &format!("{name}={var}"))
    }

    /// True when the line restricts nothing this server enforces.
    pub fn is_unrestricted(&self) -> bool {
        *self == KeyOptions::default()
    }

    /// Whether a client at `ip` passes `from=` (true without one).
    pub fn allows_from(&self, ip: IpAddr) -> bool {
        self.from.as_ref().is_none_or(|p| p.matches(ip))
    }

    /// Whether the key is past its `expiry-time` at `now` (as sshd, whole
    /// seconds: still valid during the named second).
    pub fn expired_at(&self, now: SystemTime) -> bool {
        let secs = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
        };
        self.expiry.is_some_and(|t| secs > t)
    }

    /// Whether `command=` lets this key use the MCP server `name`.
    pub fn allows_server(&self, name: &str) -> bool {
        self.servers.as_ref().is_none_or(|s| s.contains(name))
    }

    /// Whether `MCP_TOOLS` lets this key see and call the tool `name`.
    pub fn allows_tool(&self, name: &str) -> bool {
        self.tools.as_ref().is_none_or(|f| f.allows(name))
    }

    /// Whether `MCP_PROMPTS` lets this key see and get the prompt `name`.
    pub fn allows_prompt(&self, name: &str) -> bool {
        self.prompts.as_ref().is_none_or(|f| f.allows(name))
    }
}

/// Stores a single-valued option, refusing a second one.
fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), OptionError> {
    if slot.is_some() {
        return Err(OptionError::Duplicate(name.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

/// A double-quoted value at the start of `s` (sshd's `opt_dequote`): returns
/// it unescaped and the text after the closing quote.
fn dequote<'a>(name: &str, s: &'a str) -> Result<(String, &'a str), OptionError> {
    let Some(body) = s.strip_prefix('"') else {
        return Err(OptionError::BadValue {
            name: name.to_owned(),
            why: "the value must be in double quotes".into(),
        });
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' if body[i + 1..].starts_with('"') => {
                chars.next();
                out.push('"');
            }
            c => out.push(c),
        }
    }
    Err(OptionError::Unterminated(name.to_owned()))
}

/// `command=`: comma-separated server names, trimmed, each non-empty and of
/// `[A-Za-z0-9._-]` (so a shell command written for sshd is refused).
pub(crate) fn server_names(v: &str) -> Result<BTreeSet<String>, String> {
    v.split(',')
        .map(str::trim)
        .map(|n| {
            let ok = n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if n.is_empty() {
                Err("empty server name (a doubled, leading or trailing comma)".to_owned())
            } else if !ok {
                Err(format!(
                    "{n:?} is not an MCP server name: list config names separated by commas, \
                     using only letters, digits, '.', '_' and '-'"
                ))
            } else {
                Ok(n.to_owned())
            }
        })
        .collect()
}

/// `expiry-time`'s value in Unix seconds: `YYYYMMDD[HHMM[SS]]`, local time,
/// or UTC with a trailing `Z` or `UTC` (any case), as sshd's
/// `parse_absolute_time`. None when it is not a valid calendar time.
fn expiry(v: &str) -> Option<i64> {
    let upper = v.to_ascii_uppercase();
    let (digits, utc) = match upper.strip_suffix('Z').or(upper.strip_suffix("UTC")) {
        Some(d) => (d, true),
        None => (upper.as_str(), false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All ASCII digits, so every slice is on a char boundary and parses.
    let field = |at: usize, len: usize| -> Option<u32> { digits.get(at..at + len)?.parse().ok() };
    let y = i32::try_from(field(0, 4)?).ok()?;
    let [mo, d] = [field(4, 2)?, field(6, 2)?];
    let [h, mi, s] = [
        field(8, 2).unwrap_or(0),
        field(10, 2).unwrap_or(0),
        field(12, 2).unwrap_or(0),
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    if utc {
        let days = days_from_civil(i64::from(y), mo, d);
        Some(days * 86_400 + i64::from(h * 3600 + mi * 60 + s))
    } else {
        crate::os::localtime::local_to_unix(y, mo, d, h, mi, s)
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`), so UTC needs no libc.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * i64::from((m + 9) % 12) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(s: &str) -> Result<KeyOptions, OptionError> {
        KeyOptions::parse(s)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn unsupported(s: &str) -> bool {
        matches!(parse(s), Err(OptionError::Unsupported { .. }))
    }

    fn bad_value(s: &str) -> bool {
        matches!(parse(s), Err(OptionError::BadValue { .. }))
    }

    #[test]
    fn empty_restricts_nothing() {
        let o = parse("").unwrap();
        assert!(o.is_unrestricted());
        assert!(o.allows_from("192.0.2.1".parse().unwrap()));
        assert!(!o.expired_at(SystemTime::now()));
        assert!(o.allows_server("any") && o.allows_tool("any") && o.allows_prompt("any"));
    }

    #[test]
    fn harmless_flags_accepted_in_any_case() {
        for flag in HARMLESS {
            assert!(parse(flag).unwrap().is_unrestricted(), "{flag}");
        }
        let o = parse("RESTRICT,No-Pty,no-X11-forwarding,PTY,no-user-rc").unwrap();
        assert!(o.is_unrestricted());
        assert!(bad_value("no-pty=\"x\""));
        assert!(bad_value("restrict=\"\""));
    }

    #[test]
    fn refused_options() {
        for o in [
            "touch-required",
            "verify-required",
            "no-pty,VERIFY-REQUIRED",
            "cert-authority",
            "principals=\"a\"",
            "permitopen=\"host:80\"",
            "permitlisten=\"8080\"",
            "tunnel=\"0\"",
            "no-restrict",
            "no-cert-authority",
            "foo",
            "foo=\"bar\"",
            "restrictx",
            "no-ptyx",
        ] {
            assert!(unsupported(o), "{o}");
        }
        assert_eq!(
            parse("foo").unwrap_err().to_string(),
            "option \"foo\" is not supported: unknown option"
        );
    }

    #[test]
    fn ca_lines_take_principals_and_cert_authority() {
        let o =
            KeyOptions::parse_ca("cert-authority,principals=\" ops, dev \",command=\"a\"").unwrap();
        let p = o.principals.clone().unwrap();
        assert!(p.admits(&["x".into(), "dev".into()]));
        assert!(!p.admits(&["mcp".into()]));
        assert!(o.allows_server("a") && !o.allows_server("b"));
        let any = KeyOptions::parse_ca("principals=\"*\"")
            .unwrap()
            .principals
            .unwrap();
        assert!(any.admits(&["x".into()]) && !any.admits(&[]));
        for bad in [
            "principals=\"\"",
            "principals=\"a,,b\"",
            "principals=\"a*\"",
            "principals",
            "principals=\"a\",principals=\"b\"",
            "cert-authority=\"x\"",
        ] {
            assert!(KeyOptions::parse_ca(bad).is_err(), "{bad}");
        }
        // Not on a key line.
        assert!(unsupported("cert-authority"));
        assert!(unsupported("principals=\"a\""));
    }

    #[test]
    fn from_option() {
        let o = parse("from=\"10.0.0.0/8,!10.0.0.1\",no-pty").unwrap();
        assert!(!o.is_unrestricted());
        assert!(o.allows_from("10.2.3.4".parse().unwrap()));
        assert!(!o.allows_from("10.0.0.1".parse().unwrap()));
        assert!(!o.allows_from("192.0.2.1".parse().unwrap()));
        assert!(
            parse("FROM=\"::1\"")
                .unwrap()
                .allows_from("::1".parse().unwrap())
        );
        assert!(bad_value("from=\"10.0.0.0/40\""));
        assert!(bad_value("from=\"\""));
        assert!(bad_value("from"));
        assert!(bad_value("from=10.0.0.1"));
        assert_eq!(
            parse("from=\"*\",from=\"*\""),
            Err(OptionError::Duplicate("from".into()))
        );
        let e = parse("from=\"10.0.0.0/33\"").unwrap_err().to_string();
        assert!(
            e.starts_with("option \"from\": \"10.0.0.0/33\" is not a CIDR block"),
            "{e}"
        );
    }

    #[test]
    fn command_lists_servers() {
        let o = parse("command=\" time , everything,a.b_c-1\"").unwrap();
        let names: Vec<_> = o.servers.iter().flatten().collect();
        assert_eq!(names, ["a.b_c-1", "everything", "time"]);
        assert!(o.allows_server("time"));
        assert!(!o.allows_server("other"));
        for bad in [
            "command=\"\"",
            "command=\"a,,b\"",
            "command=\"a,\"",
            "command=\"/usr/bin/backup\"",
            "command=\"dump /home\"",
            "command=\"a;b\"",
        ] {
            assert!(bad_value(bad), "{bad}");
        }
        assert!(matches!(
            parse("command=\"a\",Command=\"b\""),
            Err(OptionError::Duplicate(_))
        ));
    }

    #[test]
    fn environment_filters() {
        let o = parse(
            "environment=\"MCP_TOOLS=get_*,!get_secret\",environment=\"MCP_PROMPTS=!draft_*\"",
        )
        .unwrap();
        assert!(o.allows_tool("get_time"));
        assert!(!o.allows_tool("get_secret"));
        assert!(!o.allows_tool("delete"));
        assert!(o.allows_prompt("summary"));
        assert!(!o.allows_prompt("draft_1"));
        assert_eq!(
            parse("environment=\"PATH=/bin\""),
            Err(OptionError::UnsupportedEnv("PATH".into()))
        );
        assert!(matches!(
            parse("environment=\"mcp_tools=x\""),
            Err(OptionError::UnsupportedEnv(_))
        ));
        assert!(bad_value("environment=\"MCP_TOOLS\""));
        assert!(bad_value("environment=\"MCP_TOOLS=\""));
        assert!(bad_value("environment=\"MCP_TOOLS=a,,b\""));
        assert!(matches!(
            parse("environment=\"MCP_TOOLS=a\",environment=\"MCP_TOOLS=b\""),
            Err(OptionError::Duplicate(_))
        ));
        let e = parse("environment=\"LD_PRELOAD=x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"LD_PRELOAD\" is not supported"), "{e}");
    }

    #[test]
    fn quoting_and_escapes() {
        // `\"` is a quote; commas and spaces inside quotes are part of the value.
        let o = parse(r#"environment="MCP_TOOLS=a b,\"q\"""#).unwrap();
        assert!(o.allows_tool("a b"));
        assert!(o.allows_tool("\"q\""));
        // Any other backslash is literal.
        let o = parse(r#"environment="MCP_TOOLS=a\b""#).unwrap();
        assert!(o.allows_tool("a\\b"));
        // `\\"` is a literal backslash then an escaped quote: unterminated, as in sshd.
        assert_eq!(
            parse(r#"command="a\\""#),
            Err(OptionError::Unterminated("command".into()))
        );
        assert_eq!(
            parse("from=\"10.0.0.1"),
            Err(OptionError::Unterminated("from".into()))
        );
        assert!(bad_value("from=\"10.0.0.1\"x"));
        assert_eq!(parse("from=\"*\" no-pty"), Err(OptionError::UnquotedSpace));
        assert_eq!(parse("no-pty restrict"), Err(OptionError::UnquotedSpace));
    }

    #[test]
    fn malformed_fields() {
        assert_eq!(parse("no-pty\0"), Err(OptionError::ForbiddenChar('\0')));
        assert_eq!(
            parse("command=\"a\nb\""),
            Err(OptionError::ForbiddenChar('\n'))
        );
        assert_eq!(parse("no-pty,\rpty"), Err(OptionError::ForbiddenChar('\r')));
        for empty in [",", "no-pty,", ",no-pty", "no-pty,,pty", "=\"x\""] {
            assert_eq!(parse(empty), Err(OptionError::EmptyName), "{empty}");
        }
        let long = "x".repeat(500);
        let e = parse(&long).unwrap_err().to_string();
        assert!(e.len() < 140, "{e}");
    }

    #[test]
    fn expiry_utc() {
        let o = parse("expiry-time=\"20300102Z\"").unwrap();
        assert_eq!(o.expiry, Some(1_893_542_400));
        assert_eq!(
            expiry("203001020304z"),
            Some(1_893_542_400 + 3 * 3600 + 4 * 60)
        );
        assert_eq!(expiry("20300102030405UTC"), Some(1_893_553_445));
        assert_eq!(expiry("19700101Z"), Some(0));
        assert_eq!(expiry("19691231235959Z"), Some(-1));
        assert_eq!(expiry("20240229Z"), Some(1_709_164_800));
        // Refused after the named second, not during it.
        assert!(!o.expired_at(at(1_893_542_400)));
        assert!(o.expired_at(at(1_893_542_401)));
        assert!(!o.expired_at(at(0)));
        let past = parse("expiry-time=\"20200101Z\"").unwrap();
        assert!(past.expired_at(SystemTime::now()));
        assert!(!o.expired_at(SystemTime::now()));
    }

    #[test]
    fn expiry_local() {
        // Local time is within a day of the same wall clock read as UTC.
        for v in ["20300102", "203001021530", "20300702153045"] {
            let local = expiry(v).unwrap();
            let utc = expiry(&format!("{v}Z")).unwrap();
            assert!((local - utc).abs() <= 26 * 3600, "{v}: {local} vs {utc}");
        }
        assert!(
            parse("expiry-time=\"20000101\"")
                .unwrap()
                .expired_at(SystemTime::now())
        );
        assert!(
            !parse("expiry-time=\"29991231\"")
                .unwrap()
                .expired_at(SystemTime::now())
        );
    }

    #[test]
    fn bad_dates() {
        for v in [
            "2030010",
            "203001021",
            "2030010203",
            "203001020304050",
            "",
            "Z",
            "2030-01-02",
            "20301301",
            "20300001",
            "20300100",
            "20300230",
            "20230229",
            "20300431",
            "203001022400",
            "203001020060",
            "20300102000060",
            "+0300102",
            "20300102 ",
            "20300102ZZ",
            "２０３００１０２",
        ] {
            assert_eq!(expiry(v), None, "{v:?}");
            assert_eq!(expiry(&format!("{v}Z")), None, "{v:?}Z");
        }
        assert!(bad_value("expiry-time=\"2030\""));
        assert!(bad_value("expiry-time"));
        assert!(matches!(
            parse("expiry-time=\"20300101\",expiry-time=\"20310101\""),
            Err(OptionError::Duplicate(_))
        ));
        let e = parse("expiry-time=\"tomorrow\"").unwrap_err().to_string();
        assert!(e.contains("YYYYMMDD"), "{e}");
    }
}
