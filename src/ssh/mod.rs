//! The SSH side of the server, on libssh.

pub mod listener;
pub mod session;
pub mod sys;
pub mod wake;
