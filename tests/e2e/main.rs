//! The end-to-end tests: the real server and client binaries, real SSH
//! clients (the ssh2 crate and OpenSSH), real child processes (the fixture
//! MCP server, `examples/fixture_mcp.rs`).
//!
//! One test binary, not one per file: the shared fixtures in [`common`]
//! compile once (with no unused-code warnings, since every helper has a
//! user here) and every test shares the same pool of test threads.

mod common;

mod access;
mod audit;
mod certs;
mod channels;
mod cli;
mod client;
mod clients;
mod eras;
mod eras_core;
mod flow;
mod gateway;
mod isolation;
mod keyapi;
mod keyapi_limits;
mod keys_command;
mod lifecycle;
mod login;
mod persource;
mod proxy;
mod reload;
mod shared;
mod supervise;
mod tasks;
