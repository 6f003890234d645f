#!/usr/bin/env bash
# Installs the MCP servers named in the default servers_config.json into the
# repository: mcp-server-time (PyPI) into .venv, server-everything (npm) into
# node_modules. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/mcp-server-time ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check mcp-server-time
fi
if [ ! -x node_modules/.bin/mcp-server-everything ]; then
  npm install --silent --no-audit --no-fund --no-save --prefix . @modelcontextprotocol/server-everything
fi
