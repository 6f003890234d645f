#!/usr/bin/env bash
# Stress: thousands of short sessions (initialize + tools/list) through our
# client and through OpenSSH `ssh -T`, several at a time, against the release
# server with two fixture children. Every session must finish (a stalled one
# fails the run within 10 s), and afterwards the server's threads, open fds
# and children must return to their idle counts. Part of scripts/test.sh.
# Knobs: N (sessions through our client, default 1500; a third of that
# through OpenSSH), P (at a time, default 4).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1500}
P=${P:-4}
cargo build --release --locked --quiet --bins --examples
BIN=$PWD/target/release
DRV=$BIN/examples/mcp_bench
T=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "STRESS FAIL: $*" >&2; echo "--- server log" >&2; tail -n 30 "$T/server.log" >&2; exit 1; }

ssh-keygen -q -t ed25519 -N '' -C stress -f "$T/client"
FX=$BIN/examples/fixture_mcp
printf '{"mcpServers": {"alpha": {"command": "%s", "args": ["--name", "alpha"]}, "beta": {"command": "%s", "args": ["--name", "beta"]}}}\n' "$FX" "$FX" >"$T/servers_config.json"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/m2m-mcp-server-ssh-server" --port "$PORT" --authorized-clients "$T/client.pub" --registered-clients "$T/registered" \
  --server-key "$T/host_key" --servers-config "$T/servers_config.json" --log-level WARNING 2>"$T/server.log" &
PID=$!
for _ in $(seq 1 100); do ssh-keyscan -p "$PORT" 127.0.0.1 >"$T/scan" 2>/dev/null && [ -s "$T/scan" ] && break; sleep 0.1; done
[ -s "$T/scan" ] || fail "server did not start"
sed "s/^127.0.0.1/[127.0.0.1]:$PORT/" "$T/scan" >"$T/known_hosts"

OURS="$BIN/m2m-mcp-server-ssh-client --host 127.0.0.1 --port $PORT --client-key $T/client --known-hosts $T/known_hosts"
OSSH="ssh -T -p $PORT -i $T/client -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR mcp@127.0.0.1"
counts() { echo "$(ls /proc/$PID/task | wc -l) threads, $(ls /proc/$PID/fd | wc -l) fds, $(grep -lE "^PPid:\s+$PID$" /proc/[0-9]*/status 2>/dev/null | wc -l) children"; }
# Idle counts once a first session has come and gone (warm spares refilled).
"$DRV" sessions "$OURS" 1 1 >/dev/null || fail "first session"
settle() { local want=$1 now; for _ in $(seq 1 100); do now=$(counts); [ "$now" = "$want" ] && return 0; sleep 0.1; done; echo "$now"; return 1; }
prev=""; for _ in $(seq 1 30); do now=$(counts); [ "$now" = "$prev" ] && break; prev=$now; sleep 0.2; done
IDLE=$(counts)

r=$("$DRV" sessions "$OURS" "$N" "$P") || fail "sessions through our client: $r"
echo "ok - $N sessions through our client, $P at a time: $r"
M=$((N / 3))
r=$("$DRV" sessions "$OSSH" "$M" "$P") || fail "sessions through OpenSSH: $r"
echo "ok - $M sessions through OpenSSH: $r"
left=$(settle "$IDLE") || fail "after the sessions: $left (idle was $IDLE)"
echo "ok - back to idle: $IDLE"
grep -E "\[(ERROR|WARN)\]" "$T/server.log" | grep -v "no client key" | head -5 | sed 's/^/  server: /' || true
echo "stress: 3 passed, 0 failed"
