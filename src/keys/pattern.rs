//! Pattern lists of authorized_keys options: the `from=` address list, with
//! sshd's meaning, and the tool/prompt name filters of `environment=`.
//!
//! Parsing returns the reason as text; [`super::options`] wraps it into its
//! error, naming the option.

use std::net::IpAddr;

/// True when `text` matches `pattern`, where `*` matches any run of
/// characters (also none) and `?` any one character; nothing else is special.
/// Backtracks only to the last `*`: at most pattern × text steps, so no
/// pattern can blow up.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and the text position it is currently eating to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Splits a comma-separated list into `(negated, entry)` pairs, each entry
/// trimmed first when `trim`; an empty entry (or a lone `!`) is an error, as
/// sshd rejects it.
fn entries(list: &str, trim: bool) -> Result<Vec<(bool, &str)>, String> {
    list.split(',')
        .map(|raw| {
            let raw = if trim { raw.trim() } else { raw };
            let (negated, body) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, raw),
            };
            if body.is_empty() {
                Err("empty entry in the list (doubled, leading or trailing comma)".to_owned())
            } else {
                Ok((negated, body))
            }
        })
        .collect()
}

/// One `from=` entry: a network (a CIDR block; a bare address is a full-length
/// block) or a wildcard over the address's text form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Addr {
    Net(IpAddr, u8),
    Wild(String),
}

/// A parsed `from=` list. sshd's `match_host_and_ip`: a client matches when
/// some entry matches and no negated entry does (a negated match anywhere
/// wins, whatever its position).
///
/// This server does no reverse DNS (like sshd's default `UseDNS no`), so
/// wildcards are matched against the client IP's text form only (`10.1.2.3`,
/// RFC 5952 IPv6 such as `2001:db8::1`, case-insensitively); a host-name
/// pattern never matches. An IPv4-mapped client (`::ffff:1.2.3.4`) is
/// matched as its IPv4 address, as sshd does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrPatterns(Vec<(bool, Addr)>);

impl AddrPatterns {
    /// Parses the value of `from=`. Stricter than sshd where sshd would
    /// silently never match: any entry with `/` must be a valid CIDR block
    /// (sshd falls back to a wildcard that matches nothing), a negated entry
    /// must be able to match an address (a host name cannot be checked
    /// without DNS, so `!host` would silently deny nothing), and an IPv4-mapped
    /// IPv6 entry must be written as IPv4 (clients are matched as IPv4).
    pub(crate) fn parse(list: &str) -> Result<AddrPatterns, String> {
        let mut out = Vec::new();
        for (negated, body) in entries(list, false)? {
            if body.contains(char::is_whitespace) {
                return Err(format!("entry {body:?} contains a space"));
            }
            let addr = if let Some((ip, len)) = body.split_once('/') {
                cidr(ip, len).map_err(|why| format!("{body:?} is not a CIDR block: {why}"))?
            } else if let Ok(ip) = body.parse::<IpAddr>() {
                let full = if ip.is_ipv4() { 32 } else { 128 };
                Addr::Net(ip, full)
            } else if negated && !could_match_an_address(body) {
                return Err(format!(
                    "negated entry \"!{body}\" can never match: this server does no reverse \
                     DNS, so only addresses, CIDR blocks and wildcards over them are checked"
                ));
            } else {
                Addr::Wild(body.to_ascii_lowercase())
            };
            if is_mapped(&addr) {
                return Err(format!(
                    "{body:?} is an IPv4-mapped IPv6 address: clients from such addresses \
                     are matched as IPv4, write the IPv4 form"
                ));
            }
            out.push((negated, addr));
        }
        Ok(AddrPatterns(out))
    }

    /// Parses a certificate's `source-address` (sshd's
    /// `addr_match_cidr_list`): comma-separated addresses and CIDR blocks,
    /// no wildcards or negation.
    pub(crate) fn parse_cidr_list(list: &str) -> Result<AddrPatterns, String> {
        let mut out = Vec::new();
        for (negated, body) in entries(list, false)? {
            let addr = match body.split_once('/') {
                _ if negated => return Err(format!("\"!{body}\": negation is not allowed here")),
                Some((ip, len)) => {
                    cidr(ip, len).map_err(|why| format!("{body:?} is not a CIDR block: {why}"))?
                }
                None => match body.parse::<IpAddr>() {
                    Ok(ip) => Addr::Net(ip, if ip.is_ipv4() { 32 } else { 128 }),
                    Err(_) => return Err(format!("{body:?} is not an address or CIDR block")),
                },
            };
            if is_mapped(&addr) {
                return Err(format!("{body:?} is an IPv4-mapped IPv6 address"));
            }
            out.push((false, addr));
        }
        Ok(AddrPatterns(out))
    }

    /// Whether a client at `ip` passes this list.
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let text = ip.to_string();
        let mut positive = false;
        for (negated, addr) in &self.0 {
            let hit = match addr {
                Addr::Net(net, len) => in_net(ip, *net, *len),
                Addr::Wild(p) => wildcard(p, &text),
            };
            if hit && *negated {
                return false;
            }
            positive |= hit;
        }
        positive
    }
}

/// Whether a wildcard entry can match some address's text form: it has a
/// wildcard (else it would have parsed as an address) and only characters
/// that addresses are written with.
fn could_match_an_address(body: &str) -> bool {
    body.contains(['*', '?'])
        && body
            .chars()
            .all(|c| c.is_ascii_hexdigit() || ".:*?".contains(c))
}

/// A CIDR block `ip/len`: a decimal length within the family's width and no
/// bits set past it (sshd refuses `10.1.2.3/8` as inconsistent).
fn cidr(ip: &str, len: &str) -> Result<Addr, String> {
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len.parse() {
        Ok(n) if len.bytes().all(|b| b.is_ascii_digit()) && n <= width => n,
        _ => return Err(format!("prefix length must be 0 to {width}")),
    };
    if masked(ip, len) != ip {
        return Err(format!("address has bits set past /{len}"));
    }
    Ok(Addr::Net(ip, len))
}

/// `ip` with every bit past the first `len` cleared.
fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Whether `ip` lies in `net/len` (never across address families).
fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    ip.is_ipv4() == net.is_ipv4() && masked(ip, len) == net
}

/// An entry that can only ever match IPv4-mapped IPv6 clients, which are
/// matched as IPv4 and so never reach it.
fn is_mapped(addr: &Addr) -> bool {
    match addr {
        Addr::Net(IpAddr::V6(a), len) => *len >= 96 && a.to_ipv4_mapped().is_some(),
        Addr::Net(IpAddr::V4(_), _) => false,
        Addr::Wild(p) => p.starts_with("::ffff:"),
    }
}

/// The tools or prompts a key may use (`environment="MCP_TOOLS=..."`):
/// comma-separated wildcards (`*`, `?`), case-sensitive as MCP names are,
/// entries trimmed, `!` for a negated entry.
///
/// A name is allowed when it matches no negated entry and either matches a
/// positive entry or the list has no positive entry at all. So `!admin_*`
/// alone means "everything but admin_*" (as a deny list reads), and a list
/// with positives is an allow list; the order of entries does not matter
/// and a negation always wins, as in sshd's pattern lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameFilter {
    allow: Vec<String>,
    deny: Vec<String>,
}

impl NameFilter {
    pub fn parse(list: &str) -> Result<NameFilter, String> {
        let (mut allow, mut deny) = (Vec::new(), Vec::new());
        for (negated, body) in entries(list, true)? {
            if body.starts_with(|c: char| c == '!' || c.is_whitespace()) {
                return Err(format!(
                    "bad entry {body:?}: a name may not start with `!` or a space"
                ));
            }
            if body.chars().any(char::is_control) {
                return Err(format!("entry {body:?} contains a control character"));
            }
            if negated { &mut deny } else { &mut allow }.push(body.to_owned());
        }
        Ok(NameFilter { allow, deny })
    }

    /// Whether `name` passes the filter (see the type's doc).
    pub fn allows(&self, name: &str) -> bool {
        !self.deny.iter().any(|p| wildcard(p, name))
            && (self.allow.is_empty() || self.allow.iter().any(|p| wildcard(p, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts, for each `(address, expected)`, whether `list` lets it in.
    fn check(list: &str, cases: &[(&str, bool)]) {
        let p = AddrPatterns::parse(list).unwrap();
        for (ip, want) in cases {
            assert_eq!(p.matches(ip.parse().unwrap()), *want, "{list} vs {ip}");
        }
    }

    fn refused(lists: &[&str]) {
        for list in lists {
            assert!(AddrPatterns::parse(list).is_err(), "{list:?}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*", ""));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "ac"));
        assert!(wildcard("a*b*c", "aXXbYYc"));
        assert!(wildcard("a*b*c", "abbbc"));
        assert!(!wildcard("a*b*c", "aXXbYY"));
        assert!(wildcard("", ""));
        assert!(!wildcard("", "a"));
        assert!(!wildcard("abc", "abcd"));
        assert!(wildcard("*.*.*.*", "10.0.0.1"));
        // Many stars against a long non-match stays fast (no exponential backtracking).
        let text = "a".repeat(5000);
        assert!(!wildcard(&format!("{}b", "*a".repeat(50)), &text));
    }

    #[test]
    fn addresses_and_wildcards() {
        let list = "10.0.0.1,192.168.*,2001:db8::?";
        check(
            list,
            &[
                ("10.0.0.1", true),
                ("10.0.0.2", false),
                ("192.168.7.9", true),
                ("2001:db8::5", true),
                ("2001:db8::15", false),
            ],
        );
        // A bare address compares as an address, not as text.
        check("2001:DB8:0::1", &[("2001:db8::1", true)]);
        // Wildcards compare case-insensitively against RFC 5952 text.
        check("FE80::*", &[("fe80::1", true)]);
        // Host names never match: no reverse DNS.
        check("*.example.com,localhost", &[("127.0.0.1", false)]);
    }

    #[test]
    fn cidr_v4_and_v6() {
        check(
            "10.0.0.0/8,::1/128,2001:db8::/32",
            &[
                ("10.255.0.1", true),
                ("11.0.0.1", false),
                ("::1", true),
                ("::2", false),
                ("2001:db8:ffff::1", true),
                ("2001:db9::1", false),
            ],
        );
        check("0.0.0.0/0", &[("203.0.113.9", true), ("::1", false)]);
        check("::/0", &[("2001:db8::1", true), ("10.0.0.1", false)]);
        check("192.0.2.5/32", &[("192.0.2.5", true), ("192.0.2.4", false)]);
    }

    #[test]
    fn bad_cidr_is_an_error() {
        refused(&[
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/+8",
            "10.1.2.3/8",
            "2001:db8::1/32",
            "10.0.0/8",
            "host/8",
            "10.0.0.0/8/8",
        ]);
    }

    #[test]
    fn negation_anywhere_wins() {
        check(
            "10.0.0.0/8,!10.0.0.5",
            &[("10.0.0.4", true), ("10.0.0.5", false)],
        );
        check(
            "!10.0.0.5,10.0.0.0/8",
            &[("10.0.0.5", false), ("10.0.0.6", true)],
        );
        // Only negations: nothing matches positively, so nobody passes.
        check("!10.0.0.5", &[("192.0.2.1", false)]);
        check("*,!192.0.2.*", &[("192.0.2.1", false), ("192.0.3.1", true)]);
        check("*,!2001:db8::/32", &[("2001:db8::7", false), ("::1", true)]);
    }

    #[test]
    fn mapped_v4_matches_as_v4() {
        let mapped = "::ffff:10.1.2.3";
        check("10.0.0.0/8", &[(mapped, true)]);
        check("10.1.2.3", &[(mapped, true)]);
        check("10.1.*", &[(mapped, true)]);
        check("*,!10.0.0.0/8", &[(mapped, false)]);
        // ::1 is not mapped: it stays IPv6.
        check("0.0.0.1", &[("::1", false)]);
        refused(&["::ffff:10.1.2.3", "::ffff:10.0.0.0/104", "!::ffff:10.*"]);
    }

    #[test]
    fn malformed_lists() {
        refused(&[
            "",
            ",",
            "10.0.0.1,",
            ",10.0.0.1",
            "10.0.0.1,,*",
            "!",
            "10.0.0.1, 10.0.0.2",
        ]);
        // A negated host name cannot be checked without DNS.
        refused(&["*,!evil.example.com", "*,!10.1", "*,!localhost"]);
        check("*,!10.0.0.*", &[("10.0.0.1", false)]);
    }

    #[test]
    fn name_filters() {
        let f = NameFilter::parse("get_*, search , !get_secret").unwrap();
        assert!(f.allows("get_time"));
        assert!(f.allows("search"));
        assert!(!f.allows("get_secret"));
        assert!(!f.allows("delete"));
        assert!(!f.allows("Search"), "case-sensitive");
        // Only negations: everything else is allowed.
        let f = NameFilter::parse("!admin_*,!rm").unwrap();
        assert!(f.allows("read"));
        assert!(!f.allows("admin_reset"));
        assert!(!f.allows("rm"));
        // Negation wins over an earlier positive.
        assert!(!NameFilter::parse("*,!x").unwrap().allows("x"));
        assert!(NameFilter::parse("?").unwrap().allows("a"));
        for bad in [
            "", "a,", ",a", "a, ,b", "!", "a, !", "! b", "!!b", "a\u{7}b",
        ] {
            assert!(NameFilter::parse(bad).is_err(), "{bad:?}");
        }
    }
}
