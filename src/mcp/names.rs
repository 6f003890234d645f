//! Exposed names for merged lists and the reverse maps that route calls.
//!
//! Duplicate rule (the Python original's, made deterministic and valid):
//! children are merged in config order, items in the order each child lists
//! them; the first item keeps its name, a later item with a taken name
//! becomes `name_1`, then `name_2`, ... (the first free one). Base names are
//! shortened so the result stays within the MCP 2025-11-25 tool-name rule
//! (1 to 128 characters of `[A-Za-z0-9_.-]`).

use std::collections::HashMap;

pub const MAX_NAME: usize = 128;

/// Exposed name -> (child index, the child's own name).
#[derive(Debug, Default, Clone)]
pub struct NameMap {
    map: HashMap<String, (usize, String)>,
}

impl NameMap {
    /// Picks the exposed name for `name` from `child` and records it.
    pub fn insert(&mut self, child: usize, name: &str) -> String {
        self.insert_prefixed(child, "", name)
    }

    /// Like [`NameMap::insert`], exposing `prefix` + `name` (the server's
    /// `namePrefix`); the duplicate rule applies to the prefixed name.
    pub fn insert_prefixed(&mut self, child: usize, prefix: &str, name: &str) -> String {
        let mut wanted = format!("{prefix}{name}");
        if wanted.len() > MAX_NAME {
            let mut cut = MAX_NAME;
            while !wanted.is_char_boundary(cut) {
                cut -= 1;
            }
            wanted.truncate(cut);
        }
        let exposed = if self.map.contains_key(&wanted) {
            (1..)
                .map(|n| suffixed(&wanted, n))
                .find(|c| !self.map.contains_key(c))
                .unwrap_or_default()
        } else {
            wanted
        };
        self.map.insert(exposed.clone(), (child, name.to_owned()));
        exposed
    }

    pub fn get(&self, exposed: &str) -> Option<(usize, &str)> {
        self.map.get(exposed).map(|(c, n)| (*c, n.as_str()))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// `name_n`, shortening `name` so the whole stays within [`MAX_NAME`].
fn suffixed(name: &str, n: usize) -> String {
    let suffix = format!("_{n}");
    let mut base: String = name.to_owned();
    while base.len() + suffix.len() > MAX_NAME {
        base.pop();
    }
    base + &suffix
}

/// True for a `namePrefix` value: name-rule characters, at most 64 of them.
pub fn is_valid_prefix(s: &str) -> bool {
    s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// True for names that satisfy the 2025-11-25 tool-name rule.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Routes resource URIs: exact URIs from `resources/list` first (first child
/// wins), then templates by the longest literal prefix (before the first `{`).
#[derive(Debug, Default, Clone)]
pub struct UriMap {
    exact: HashMap<String, usize>,
    templates: Vec<(String, String, usize)>, // (template, literal prefix, child)
}

impl UriMap {
    /// Records a URI; false if another child already claimed it.
    pub fn insert_uri(&mut self, child: usize, uri: &str) -> bool {
        if self.exact.contains_key(uri) {
            return false;
        }
        self.exact.insert(uri.to_owned(), child);
        true
    }

    /// Records a URI template; false if the same template was already claimed.
    pub fn insert_template(&mut self, child: usize, template: &str) -> bool {
        if self.templates.iter().any(|(t, _, _)| t == template) {
            return false;
        }
        let prefix = template.split('{').next().unwrap_or("").to_owned();
        self.templates.push((template.to_owned(), prefix, child));
        true
    }

    /// The child that serves `uri`.
    pub fn route(&self, uri: &str) -> Option<usize> {
        if let Some(c) = self.exact.get(uri) {
            return Some(*c);
        }
        if let Some((_, _, c)) = self.templates.iter().find(|(t, _, _)| t == uri) {
            return Some(*c);
        }
        let mut best: Option<(usize, usize)> = None; // (prefix len, child)
        for (_, prefix, c) in &self.templates {
            if uri.starts_with(prefix.as_str()) && best.is_none_or(|(l, _)| prefix.len() > l) {
                best = Some((prefix.len(), *c));
            }
        }
        best.map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_get_numbered_suffixes_in_order() {
        let mut m = NameMap::default();
        assert_eq!(m.insert(0, "echo"), "echo");
        assert_eq!(m.insert(1, "echo"), "echo_1");
        assert_eq!(m.insert(2, "echo_1"), "echo_1_1");
        assert_eq!(m.insert(2, "echo"), "echo_2");
        assert_eq!(m.get("echo_1"), Some((1, "echo")));
        assert_eq!(m.get("echo_2"), Some((2, "echo")));
        assert_eq!(m.get("echo_1_1"), Some((2, "echo_1")));
        assert_eq!(m.get("nope"), None);
    }

    #[test]
    fn prefixes_apply_before_the_duplicate_rule() {
        let mut m = NameMap::default();
        assert_eq!(m.insert_prefixed(0, "time.", "now"), "time.now");
        assert_eq!(m.insert_prefixed(1, "time.", "now"), "time.now_1");
        assert_eq!(m.insert(2, "now"), "now");
        assert_eq!(m.get("time.now_1"), Some((1, "now")));
        let long = m.insert_prefixed(3, "p.", &"x".repeat(200));
        assert_eq!(long.len(), MAX_NAME);
        assert_eq!(m.get(&long).map(|(_, n)| n.len()), Some(200));
        assert!(is_valid_prefix("srv-1."));
        assert!(!is_valid_prefix("a b"));
    }

    #[test]
    fn suffixed_names_stay_valid() {
        let long = "a".repeat(128);
        let mut m = NameMap::default();
        m.insert(0, &long);
        let second = m.insert(1, &long);
        assert_eq!(second.len(), 128);
        assert!(second.ends_with("_1"));
        assert!(is_valid_name(&second));
        assert!(!is_valid_name("has space"));
        assert!(!is_valid_name(""));
    }

    #[test]
    fn uris_route_exact_then_longest_template_prefix() {
        let mut u = UriMap::default();
        assert!(u.insert_uri(0, "test://a"));
        assert!(!u.insert_uri(1, "test://a"));
        u.insert_template(1, "test://{x}");
        u.insert_template(2, "test://items/{id}");
        assert_eq!(u.route("test://a"), Some(0));
        assert_eq!(u.route("test://items/7"), Some(2));
        assert_eq!(u.route("test://other"), Some(1));
        assert_eq!(u.route("test://items/{id}"), Some(2));
        assert_eq!(u.route("file:///x"), None);
    }
}
