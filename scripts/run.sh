#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu checkout to a running server:
# system packages, release build, the default MCP servers, then the server
# on the default config (127.0.0.1:8022). Extra arguments go to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked
scripts/install-mcp-servers.sh
exec target/release/m2m-mcp-server-ssh-server --servers-config servers_config.json "$@"
