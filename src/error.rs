//! The crate's one error type. Each variant says which layer failed; its
//! message names what to fix (the file, the server, the field, the host), in
//! short lowercase text that the binaries print after `error: `.

use std::fmt;
use std::io;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A flag or `servers_config.json`: the message names the file, the
    /// server and the field.
    Config(String),
    /// A key file or key line: missing, unreadable, malformed, or with
    /// permissions that expose a private key.
    Key(String),
    /// An SSH operation (libssh on the server side, libssh2 on the client
    /// side) failed: `op` says which, `detail` is the library's own word
    /// (maybe empty).
    Ssh { op: String, detail: String },
    /// An MCP server could not be started.
    Spawn {
        server: String,
        command: String,
        source: io::Error,
    },
    /// A file, socket or thread operation failed; `what` says which.
    Io { what: String, source: io::Error },
    /// The key API: the server could not serve it, or the client could not
    /// fetch from or register with it.
    Http(String),
    /// The client could not verify the server's host key.
    HostKey(String),
}

impl Error {
    /// The process exit code for this error: 2 for what the user must fix
    /// in flags, config or keys before a retry can work; 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Key(_) => 2,
            _ => 1,
        }
    }

    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn ssh(op: impl Into<String>, detail: impl fmt::Display) -> Error {
        Error::Ssh {
            op: op.into(),
            detail: detail.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) | Error::Key(m) | Error::Http(m) | Error::HostKey(m) => f.write_str(m),
            Error::Ssh { op, detail } if detail.is_empty() => f.write_str(op),
            Error::Ssh { op, detail } => write!(f, "{op}: {detail}"),
            Error::Spawn {
                server,
                command,
                source,
            } if source.kind() == io::ErrorKind::NotFound => write!(
                f,
                "server {server} failed to start: command {command:?} not found (searched PATH)"
            ),
            Error::Spawn {
                server,
                command,
                source,
            } => write!(f, "server {server} failed to start: {command:?}: {source}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed_and_codes_separate_user_fixes() {
        let e = Error::Spawn {
            server: "time".into(),
            command: "uvx".into(),
            source: io::ErrorKind::NotFound.into(),
        };
        assert_eq!(
            e.to_string(),
            "server time failed to start: command \"uvx\" not found (searched PATH)"
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            Error::ssh("ssh_new failed", "").to_string(),
            "ssh_new failed"
        );
        assert_eq!(
            Error::ssh("listen on 127.0.0.1:22", "in use").to_string(),
            "listen on 127.0.0.1:22: in use"
        );
        assert_eq!(Error::Config("cfg.json: bad".into()).exit_code(), 2);
        assert_eq!(Error::Key("k: bad".into()).exit_code(), 2);
    }
}
