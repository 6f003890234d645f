//! The SSH side of the server, on libssh: the safe binding (`sys`, the
//! crate's only libssh `unsafe`), the accept loop, the per-source limits,
//! the PROXY protocol header, and each connection's handshake up to its MCP
//! channel.

pub mod conn;
pub mod listener;
pub mod persource;
pub mod proxy;
pub mod sys;
