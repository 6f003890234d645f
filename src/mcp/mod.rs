//! MCP over newline-delimited JSON-RPC: framing, messages, names, and the
//! router.

pub mod framing;
pub mod jsonrpc;
pub mod names;
pub mod router;
