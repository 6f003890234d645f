//! MCP over newline-delimited JSON-RPC: framing, names, and the router.

pub mod jsonrpc;
pub mod names;
pub mod router;
