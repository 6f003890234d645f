//! An SSH gateway for MCP servers: a Rust rewrite of the Python
//! `m2m-mcp-server-ssh-server` / `m2m-mcp-server-ssh-client` packages.
//!
//! Crate map:
//! - [`config`]: `servers_config.json` -> server specs.
//! - [`keys`]: host and client keys, the authorized-keys trust store.
//! - [`ssh`]: the libssh server (the only `unsafe` lives in `ssh::sys`), the
//!   accept loop, one thread per connection, the eventfd wake-up.
//! - [`mcp`]: JSON-RPC framing and the sans-IO router that merges children.
//! - [`child`]: child processes and their reader/writer/stderr threads.
//! - [`pool`]: warm spare children handed to new sessions.
//! - [`keyapi`]: the key-management HTTP API (rouille).
//! - [`client`]: the stdio-to-SSH client binary's bridge (ssh2).
//! - [`server`]: wires the parts together for the server binary.

pub mod child;
pub mod client;
pub mod config;
pub mod keyapi;
pub mod keys;
pub mod logging;
pub mod mcp;
pub mod os;
pub mod pool;
pub mod server;
pub mod ssh;
