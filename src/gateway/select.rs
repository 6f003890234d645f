//! Which configured MCP servers a session gets, from the channel request:
//! a shell, the `mcp` subsystem or an empty exec string means all of them;
//! `exec "a,b"` means only those (the string is never run).

use crate::config::ServerSpec;

/// What the client asked for on its session channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// All configured servers (shell, subsystem mcp, empty exec).
    All,
    /// `exec "a,b"`: only these servers.
    Only(Vec<String>),
}

impl Start {
    /// Reads an exec string: comma-separated server names, blanks ignored.
    pub fn from_exec(cmd: &str) -> Start {
        let names: Vec<String> = cmd
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if names.is_empty() {
            Start::All
        } else {
            Start::Only(names)
        }
    }
}

/// The servers to start, in config order, or the line to show the client
/// when it named a server that is not configured. Only servers that
/// `allowed` admits (a key's `command=`) count as configured, so a key
/// cannot tell a forbidden server from a missing one.
pub fn servers(
    configured: &[ServerSpec],
    start: &Start,
    allowed: impl Fn(&str) -> bool,
) -> Result<Vec<ServerSpec>, String> {
    let configured: Vec<&ServerSpec> = configured.iter().filter(|s| allowed(&s.name)).collect();
    let Start::Only(names) = start else {
        return Ok(configured.into_iter().cloned().collect());
    };
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !configured.iter().any(|s| &s.name == *n))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let all: Vec<&str> = configured.iter().map(|s| s.name.as_str()).collect();
        return Err(format!(
            "unknown MCP server(s): {}; configured: {}\n",
            unknown.join(", "),
            all.join(", ")
        ));
    }
    Ok(configured
        .into_iter()
        .filter(|s| names.contains(&s.name))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ServerSpec {
        ServerSpec::new(name, "true", &[])
    }

    fn names(v: &[ServerSpec]) -> Vec<&str> {
        v.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn exec_strings_pick_servers_in_config_order() {
        let cfg = [spec("a"), spec("b"), spec("c")];
        let any = |_: &str| true;
        assert_eq!(Start::from_exec(" , "), Start::All);
        assert_eq!(
            names(&servers(&cfg, &Start::All, any).unwrap()),
            ["a", "b", "c"]
        );
        let only = Start::from_exec("c, a");
        assert_eq!(names(&servers(&cfg, &only, any).unwrap()), ["a", "c"]);
        assert_eq!(
            servers(&cfg, &Start::from_exec("a,x,y"), any).unwrap_err(),
            "unknown MCP server(s): x, y; configured: a, b, c\n"
        );
    }

    #[test]
    fn a_keys_command_option_hides_the_other_servers() {
        let cfg = [spec("a"), spec("b"), spec("c")];
        let only_c = |n: &str| n == "c";
        assert_eq!(names(&servers(&cfg, &Start::All, only_c).unwrap()), ["c"]);
        assert_eq!(
            servers(&cfg, &Start::from_exec("a"), only_c).unwrap_err(),
            "unknown MCP server(s): a; configured: c\n",
            "a forbidden server reads as a missing one"
        );
    }
}
