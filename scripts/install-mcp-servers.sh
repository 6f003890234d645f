#!/usr/bin/env bash
# Installs, at pinned versions, the MCP servers named in the default
# servers_config.json and the SDK peers of the e2e era tests (tests/peers/):
# mcp-server-time and the Python SDK `mcp` (PyPI) into .venv,
# server-everything and the TypeScript SDK (npm) into node_modules.
# Idempotent: a matching install is left alone, another version is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
PY_PINS=(mcp-server-time==2026.10.19 mcp==2.3.0)
NPM_PINS=(@modelcontextprotocol/server-everything@2026.8.31 @modelcontextprotocol/sdk@1.32.2)

# True if every pin in $@ ("name==version") is what .venv has.
py_pinned() {
  local have
  have=$(.venv/bin/pip freeze --disable-pip-version-check 2>/dev/null) || return 1
  for p in "$@"; do grep -qixF "$p" <<<"$have" || return 1; done
}
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! py_pinned "${PY_PINS[@]}"; then
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PINS[@]}"
fi

# True if node_modules has every "@scope/name@version" in $@.
npm_pinned() {
  local name version have
  for p in "$@"; do
    name=${p%@*}
    version=${p##*@}
    have=$(node -p "require('./node_modules/$name/package.json').version" 2>/dev/null) || return 1
    [ "$have" = "$version" ] || return 1
  done
}
if ! npm_pinned "${NPM_PINS[@]}"; then
  npm install --silent --no-audit --no-fund --no-save --prefix . "${NPM_PINS[@]}"
fi
