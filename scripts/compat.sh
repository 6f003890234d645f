#!/usr/bin/env bash
# Wire compatibility with the Python originals (PyPI 0.1.3), both directions,
# both with --use-key-server, with a real child (mcp-server-time):
#   A: their m2m-mcp-server-ssh-client  -> our m2m-mcp-server-ssh-server
#   B: our m2m-mcp-server-ssh-client    -> their m2m-mcp-server-ssh-server
# Their server runs only from the sdist with mcp<2 (DESIGN.md section 5).
# Exits non-zero on any failure. Needs scripts/install-mcp-servers.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
cargo build --release --locked --quiet
OURS=$ROOT/target/release
VENV=${COMPAT_VENV:-$ROOT/target/compat-venv}
if [ ! -x "$VENV/bin/m2m-mcp-server-ssh-client" ] || [ ! -d "$VENV/src/m2m_mcp_server_ssh_server-0.1.3" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'mcp<2' asyncssh anyio aiohttp m2m-mcp-server-ssh-client==0.1.3
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: m2m-mcp-server-ssh-server==0.1.3 -d "$VENV/src"
  tar xzf "$VENV/src/m2m_mcp_server_ssh_server-0.1.3.tar.gz" -C "$VENV/src"
fi
THEIR_SERVER_SRC=$VENV/src/m2m_mcp_server_ssh_server-0.1.3

T=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
export HOME=$T/home   # keep every default key path of both sides in the temp dir
mkdir -p "$HOME/.ssh"
pass=0
fail() { echo "COMPAT FAIL: $*" >&2; for f in "$T"/*.log; do echo "--- $f" >&2; tail -n 25 "$f" >&2; done; exit 1; }
ok() { echo "ok - $*"; pass=$((pass + 1)); }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cat > "$T/servers_config.json" <<JSON
{"mcpServers": {"time": {"command": "$ROOT/.venv/bin/mcp-server-time", "args": ["--local-timezone", "UTC"]}}}
JSON

INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"compat","version":"1"}}}'
INITED='{"jsonrpc":"2.0","method":"notifications/initialized"}'
LIST='{"jsonrpc":"2.0","id":3,"method":"tools/list"}'
CALL='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_current_time","arguments":{"timezone":"UTC"}}}'

# drive NAME CMD...: runs a stdio MCP client command, initializes, lists and
# calls the time tool, and checks the answer; stdin stays open until the answer came.
drive() {
  local name=$1; shift
  coproc CL { "$@" 2>"$T/$name-client.log"; }
  local line got_init="" got_call=""
  echo "$INIT" >&"${CL[1]}"
  while IFS= read -r -t 60 line <&"${CL[0]}"; do
    case "$line" in *'"id":1'*'"result"'*) got_init=1; break ;; esac
  done
  [ -n "$got_init" ] || { kill "${CL_PID:-}" 2>/dev/null; fail "$name: no initialize answer"; }
  echo "$INITED" >&"${CL[1]}"
  # List first: the Python server routes calls by the map its tools/list builds.
  echo "$LIST" >&"${CL[1]}"
  while IFS= read -r -t 60 line <&"${CL[0]}"; do
    case "$line" in *'"id":3'*) break ;; esac
  done
  echo "$line" | grep -q get_current_time || { kill "${CL_PID:-}" 2>/dev/null; fail "$name: tools/list: $line"; }
  echo "$CALL" >&"${CL[1]}"
  while IFS= read -r -t 60 line <&"${CL[0]}"; do
    case "$line" in *'"id":2'*) got_call=$line; break ;; esac
  done
  exec {CL[1]}>&-
  kill "${CL_PID:-}" 2>/dev/null || true
  wait "${CL_PID:-}" 2>/dev/null || true
  echo "$got_call" | grep -q '\\"timezone\\"' || fail "$name: tools/call answer: ${got_call:-none}"
  ok "$name: initialize + tools/call get_current_time"
}

# A: their client -> our server, through our key API.
PA=$(freeport); KA=$(freeport)
: > "$T/empty_authorized_keys"
"$OURS/m2m-mcp-server-ssh-server" --port "$PA" --run-key-server --key-server-port "$KA" \
  --servers-config "$T/servers_config.json" --authorized-clients "$T/empty_authorized_keys" \
  --log-level DEBUG 2>"$T/ours-server.log" &
PIDS+=($!)
waitport "$PA" && waitport "$KA" || fail "our server did not start"
drive "A (their client -> our server)" "$VENV/bin/m2m-mcp-server-ssh-client" --host 127.0.0.1 --port "$PA" \
  --use-key-server --key-server-port "$KA" --log-level DEBUG
grep -q "registered ssh-" "$T/ours-server.log" || fail "A: their client did not register through our key API"
ok "A: their client registered its key through our key API"

# B: our client -> their server, through their key server.
PB=$(freeport); KB=$(freeport)
(cd "$T" && PYTHONPATH="$THEIR_SERVER_SRC" exec "$VENV/bin/python" -m m2m_mcp_server_ssh_server --port "$PB" \
  --run-key-server --key-server-port "$KB" --servers-config "$T/servers_config.json" --log-level DEBUG) \
  2>"$T/their-server.log" >&2 &
PIDS+=($!)
waitport "$PB" && waitport "$KB" || fail "their server did not start"
drive "B (our client -> their server)" "$OURS/m2m-mcp-server-ssh-client" --host 127.0.0.1 --port "$PB" \
  --use-key-server --key-server-port "$KB" --known-hosts "$T/no_known_hosts" --log-level DEBUG
echo "compat: $pass passed, 0 failed"
