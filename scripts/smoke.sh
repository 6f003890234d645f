#!/usr/bin/env bash
# Smoke test: the release binary on a temp copy of servers_config.json, driven
# by plain OpenSSH `ssh -T`, answers checked with grep. Exits non-zero on any
# failure. Needs scripts/install-mcp-servers.sh to have run.
#
# BIN=path runs that server binary instead of building the release one.
# RUNNER="qemu-aarch64-static -L SYSROOT" runs it under that command (an
# emulator: scripts/cross.sh --smoke does this); the MCP servers it spawns
# stay native. SMOKE_TIME_SCALE=N multiplies every wait and timeout by N for
# a slow (emulated) server. SMOKE_SKIP="audit shared" skips the ssh-audit
# step and the 50-session shared-server step (names separated by spaces).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --quiet
  BIN=$ROOT/target/release/m2m-mcp-server-ssh-server
fi
read -r -a RUN <<< "${RUNNER:-}"
S=${SMOKE_TIME_SCALE:-1}
[[ $S =~ ^[1-9][0-9]*$ ]] || { echo "SMOKE_TIME_SCALE must be a positive integer, not '$S'" >&2; exit 2; }
for s in ${SMOKE_SKIP:-}; do
  case $s in audit|shared) ;; *) echo "SMOKE_SKIP: unknown step '$s' (audit, shared)" >&2; exit 2 ;; esac
done
skipped() { [[ " ${SMOKE_SKIP:-} " == *" $1 "* ]]; }
T=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "SMOKE FAIL: $*" >&2; echo "--- server log" >&2; tail -n 30 "$T/server.log" >&2; exit 1; }
pass=0
skip=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }

ssh-keygen -q -t ed25519 -N '' -C smoke -f "$T/client"
cp "$T/client.pub" "$T/authorized_keys"
# Commands in the config are relative to the repository: run from there.
cp servers_config.json "$T/servers_config.json"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(freeport)
KPORT=$(freeport)
"${RUN[@]}" "$BIN" --port "$PORT" --run-key-server --key-server-port "$KPORT" --authorized-clients "$T/authorized_keys" --registered-clients "$T/registered" \
  --server-key "$T/host_key" --servers-config "$T/servers_config.json" --log-level DEBUG 2>"$T/server.log" &
PID=$!
for _ in $(seq 1 $((100 * S))); do grep -q "SSH server listening" "$T/server.log" && break; sleep 0.1; done
grep -q "SSH server listening" "$T/server.log" || fail "server did not start"
ok "server started on port $PORT"
[ "$(stat -c %a "$T/host_key")" = 600 ] || fail "host key mode is not 600"
ok "host key generated with mode 600"

SSH=(timeout $((60 * S)) ssh -T -p "$PORT" -i "$T/client" -o IdentitiesOnly=yes -o BatchMode=yes
     -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"smoke","version":"1"}}}'
INITED='{"jsonrpc":"2.0","method":"notifications/initialized"}'

out=$(printf '%s\n' "$INIT" "$INITED" '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' \
  '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_current_time","arguments":{"timezone":"UTC"}}}' \
  '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"message":"smoke-echo"}}}' \
  | "${SSH[@]}" mcp@127.0.0.1) || fail "ssh session failed"
echo "$out" | grep -q '"id":1,"result".*"serverInfo":{"name":"m2m-mcp-server-ssh-server"' || fail "initialize: $out"
ok "initialize answered by the gateway"
echo "$out" | grep '"id":2' | grep -q '"get_current_time"' || fail "tools/list lacks time's tool"
echo "$out" | grep '"id":2' | grep -q '"name":"echo"' || fail "tools/list lacks everything's echo"
ok "tools/list merges time and everything"
echo "$out" | grep '"id":3' | grep -q '"timezone' || fail "get_current_time: $(echo "$out" | grep '"id":3')"
ok "tools/call get_current_time through the gateway"
echo "$out" | grep '"id":4' | grep -q 'smoke-echo' || fail "echo: $(echo "$out" | grep '"id":4')"
ok "tools/call echo on server-everything"

out=$(printf '%s\n' "$INIT" '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' | "${SSH[@]}" mcp@127.0.0.1 time) || fail "exec time"
echo "$out" | grep '"id":2' | grep -q get_current_time || fail "exec time: no time tool"
echo "$out" | grep '"id":2' | grep -q '"name":"echo"' && fail "exec time exposed everything's tools"
ok "exec 'time' exposes only that server"

out=$(printf '%s\n' "$INIT" | "${SSH[@]}" -s mcp@127.0.0.1 mcp) || fail "subsystem mcp"
echo "$out" | grep -q '"id":1,"result"' || fail "subsystem mcp: $out"
ok "subsystem mcp"

set +e
err=$("${SSH[@]}" mcp@127.0.0.1 nosuchserver </dev/null 2>&1); rc=$?
set -e
[ "$rc" = 1 ] || fail "unknown exec name: exit $rc"
echo "$err" | grep -q "unknown MCP server(s): nosuchserver" || fail "unknown exec name: $err"
ok "unknown exec name: message and exit status 1"

for m in none password keyboard-interactive; do
  set +e
  err=$("${SSH[@]}" -o PreferredAuthentications=$m mcp@127.0.0.1 </dev/null 2>&1); rc=$?
  set -e
  [ "$rc" = 255 ] && echo "$err" | grep -q "Permission denied" || fail "$m auth was not refused (rc=$rc): $err"
  ok "$m auth refused"
done

out=$(printf '%s\n' 'not json' | "${SSH[@]}" mcp@127.0.0.1) || true
echo "$out" | grep -q '"code":-32700' || fail "malformed line: $out"
ok "malformed line gets -32700"

# ssh-audit (PyPI) on the running server: no algorithm it would fail.
if skipped audit; then
  echo "skip - ssh-audit (SMOKE_SKIP)"; skip=$((skip + 1))
else
  AUDIT_VENV=$ROOT/target/ssh-audit-venv
  if [ ! -x "$AUDIT_VENV/bin/ssh-audit" ]; then
    python3 -m venv "$AUDIT_VENV" && "$AUDIT_VENV/bin/pip" install -q --disable-pip-version-check ssh-audit
  fi
  audit=$(timeout $((60 * S)) "$AUDIT_VENV/bin/ssh-audit" -n -p "$PORT" 127.0.0.1 2>&1 || true)
  echo "$audit" | grep -q "software: libssh" || fail "ssh-audit did not run: $audit"
  if echo "$audit" | grep -q "\[fail\]"; then fail "ssh-audit: $(echo "$audit" | grep "\[fail\]")"; fi
  echo "$audit" | grep -q "compression: disabled" || fail "ssh-audit: compression not disabled"
  ok "ssh-audit: no failing algorithm, compression disabled"
fi

# Key API with curl: fetch the host key, register a fresh key, log in with
# strict host-key checking against a known_hosts built from the fetched key.
API="http://127.0.0.1:$KPORT"
curl -fsS "$API/health" | grep -q '"status":"healthy"' || fail "GET /health"
ok "key API /health"
hostkey=$(curl -fsS "$API/server_pub_key" | sed -E 's/.*"server_pub_key":"([^"]*)".*/\1/')
echo "$hostkey" | grep -q '^ssh-ed25519 AAAA' || fail "GET /server_pub_key: $hostkey"
ok "key API /server_pub_key"
echo "[127.0.0.1]:$PORT $hostkey" > "$T/known_hosts"
ssh-keygen -q -t ed25519 -N '' -C "fresh@smoke" -f "$T/fresh"
resp=$(curl -sS -X POST -H 'Content-Type: application/json' \
  -d "{\"client_pub_key\": \"$(cat "$T/fresh.pub")\"}" "$API/register")
[ "$resp" = '{"status":"success"}' ] || fail "POST /register: $resp"
ok "key API /register of a fresh ssh-keygen key"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d '{"client_pub_key": "command=\"sh\" ssh-ed25519 AAAA"}' "$API/register")
[ "$code" = 400 ] || fail "hostile key got $code"
ok "key API refuses an optioned key with 400"
out=$(printf '%s\n' "$INIT" | timeout $((60 * S)) ssh -T -p "$PORT" -i "$T/fresh" -o IdentitiesOnly=yes -o BatchMode=yes \
  -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$T/known_hosts" -o LogLevel=ERROR mcp@127.0.0.1) \
  || fail "login with the registered key"
echo "$out" | grep -q '"id":1,"result"' || fail "registered key session: $out"
ok "registered key logs in at once, host key verified strictly"

# A shared mcp-server-time ("scope": "shared", 2 processes): 50 sessions
# open at once hold two Python processes in all, and each gets its answer.
if skipped shared; then
  echo "skip - shared mcp-server-time, 50 sessions (SMOKE_SKIP)"; skip=$((skip + 1))
else
  SPORT=$(freeport)
  printf '{"mcpServers": {"time": {"command": "%s", "args": ["--local-timezone", "UTC"], "scope": "shared", "processes": 2}}}\n' \
    "$ROOT/.venv/bin/mcp-server-time" > "$T/shared.json"
  "${RUN[@]}" "$BIN" --port "$SPORT" --authorized-clients "$T/authorized_keys" --registered-clients "$T/registered" \
    --server-key "$T/host_key" --servers-config "$T/shared.json" --max-startups 20 --per-source-max-startups 20 \
    2>"$T/shared.log" &
  SPID=$!
  for _ in $(seq 1 $((100 * S))); do grep -q "SSH server listening" "$T/shared.log" && break; sleep 0.1; done
  SSH_S=(timeout $((90 * S)) ssh -T -p "$SPORT" -i "$T/client" -o IdentitiesOnly=yes -o BatchMode=yes
         -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
  CALL='{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_current_time","arguments":{"timezone":"UTC"}}}'
  # Paced: more than 20 handshakes at once are dropped (--max-startups 20),
  # and an emulated server's handshakes are S times slower.
  PACE=$(awk -v s="$S" 'BEGIN { print 0.2 * s }')
  jobs_=()
  for i in $(seq 1 50); do
    # Each session stays open until the last one has started (8 s).
    ( { printf '%s\n' "$INIT" "$INITED" "$CALL"; sleep $((8 * S)); } | "${SSH_S[@]}" mcp@127.0.0.1 > "$T/shared-$i.out" 2>&1 ) &
    jobs_+=($!)
    [ $((i % 5)) = 0 ] && sleep "$PACE"
  done
  peak=0
  for _ in $(seq 1 $((40 * S))); do
    n=$(ps --ppid "$SPID" -o comm= | wc -l)
    [ "$n" -gt "$peak" ] && peak=$n
    sleep 0.1
  done
  for j in "${jobs_[@]}"; do wait "$j" || true; done
  answered=$(grep -l '"id":3,"result".*timezone' "$T"/shared-*.out | wc -l)
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
  [ "$answered" = 50 ] || { tail -n 20 "$T/shared.log" >&2; fail "shared time: $answered of 50 sessions answered"; }
  [ "$peak" -le 2 ] || fail "shared time: $peak processes for 50 sessions"
  ok "shared mcp-server-time: 50 sessions answered by $peak Python processes"
fi

kill -TERM "$PID"
for _ in $(seq 1 $((100 * S))); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then fail "server ignored SIGTERM"; fi
wait "$PID"; rc=$?; PID=""
[ "$rc" = 0 ] || fail "server exit status $rc after SIGTERM"
ok "SIGTERM: clean exit 0"
echo "smoke: $pass passed, 0 failed, $skip skipped"
