//! An SSH gateway for MCP servers: a Rust rewrite of the Python
//! `m2m-mcp-server-ssh-server` / `m2m-mcp-server-ssh-client` packages.
//!
//! Crate map, in the order a request meets it:
//! - [`ssh`]: the libssh binding (`ssh::sys`), the accept loop, and each
//!   connection's handshake up to its MCP channel (`ssh::conn`).
//! - [`gateway`]: one MCP session: the loop that bridges the channel, the
//!   router and the children, on the connection's thread.
//! - [`mcp`]: JSON-line framing, JSON-RPC messages, and the sans-IO router
//!   that merges the children into one MCP server.
//! - [`child`]: a child process and its reader, writer and stderr threads.
//! - [`pool`]: warm spare children handed to new sessions.
//! - [`relay`]: the one shortcut past a thread hop: a reader runs an idle
//!   owner's turn itself (sessions and shared servers).
//! - [`eras`]: each configured server's MCP era, probed once.
//! - [`supervise`]: the restart backoff rule.
//! - [`shared`]: `"scope": "shared"` servers, one set of processes for every session.
//! - [`config`]: `servers_config.json` -> server specs.
//! - [`keys`]: host and client keys, the authorized-keys trust store, user
//!   certificates and their CAs, the revocation list, the AuthorizedKeysCommand.
//! - [`keyapi`]: the key-management HTTP API (rouille).
//! - [`client`]: the stdio-to-SSH client binary's bridge (ssh2).
//! - [`server`]: wires the parts together for the server binary.
//! - [`os`]: eventfd, poll, signals, process groups: with `ssh::sys`, the
//!   only `unsafe` in the crate.
//! - [`audit`]: the audit log (`--audit-log`).
//! - [`error`]: the one error type.

pub mod audit;
pub mod child;
pub mod client;
pub mod config;
pub mod eras;
pub mod error;
pub mod gateway;
pub mod keyapi;
pub mod keys;
pub mod logging;
pub mod mcp;
pub mod os;
pub mod pool;
pub mod relay;
pub mod server;
pub mod shared;
pub mod ssh;
pub mod supervise;

pub use error::Error;
