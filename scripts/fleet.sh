#!/usr/bin/env bash
# Fleet test: HAProxy (Debian's) in TCP mode with send-proxy-v2 in front of
# two gateway instances that share a host key, a user CA, a revoked-keys
# file and a servers config (and no client keys: clients hold certificates),
# each with --proxy-protocol-from 127.0.0.1 and its own audit log. Driven by
# plain OpenSSH: a client with a certificate signed by the CA (ssh-keygen -s)
# reaches both instances, the audit logs name the client's address from the
# PROXY header (the client connects from 127.0.0.3 to HAProxy on 127.0.0.2;
# HAProxy reaches the gateways from 127.0.0.1) and its certificate, a
# certificate's source-address is checked against that address, the
# certificate revoked in the shared file is refused by both, a client that
# bypasses HAProxy from its address is refused, and with one instance killed
# the other serves every new session.
# Builds nothing: uses the release binary and the fixture MCP server built
# before (scripts/test.sh builds both). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET/release/m2m-mcp-server-ssh-server}
T=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FLEET FAIL: $*" >&2
  for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}
pass=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }

command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || scripts/install-deps.sh --for-tests
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$BIN" ] || fail "$BIN is not built (cargo build --release)"
FIXTURE=""
for f in "$TARGET/release/examples/fixture_mcp" "$TARGET/debug/examples/fixture_mcp"; do
  if [ -x "$f" ]; then FIXTURE=$f; break; fi
done
[ -n "$FIXTURE" ] || fail "fixture_mcp is not built (cargo test, or cargo build --release --examples)"

# Waits up to 10 s for a command to succeed.
wait_for() { for _ in $(seq 1 100); do "$@" && return 0; sleep 0.1; done; return 1; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# What both instances share: the host key (clients see one server behind
# HAProxy), the user CA, the revoked keys, the MCP servers; no client key.
ssh-keygen -q -t ed25519 -N '' -C fleet-host -f "$T/host_key"
ssh-keygen -q -t ed25519 -N '' -C fleet-user-ca -f "$T/ca"
cp "$T/ca.pub" "$T/user_ca_keys"
: >"$T/revoked_keys"
: >"$T/authorized_keys"
# Clients, each with a key of its own and a certificate for user mcp;
# alice's may be used from 127.0.0.3 only, carol's from 127.0.0.1 only
# (HAProxy's address: it must not count).
sign() { ssh-keygen -q -s "$T/ca" -I "$1@fleet" -n mcp -V -5m:+1h "${@:2}" "$T/$1.pub"; }
for who in alice bob carol; do ssh-keygen -q -t ed25519 -N '' -C "$who" -f "$T/$who"; done
sign alice -O source-address=127.0.0.3
sign bob
sign carol -O source-address=127.0.0.1
printf '{"mcpServers":{"alpha":{"command":"%s","args":["--name","alpha"]}}}\n' "$FIXTURE" >"$T/servers_config.json"

declare -A PORT GW
start_gateway() {
  local name=$1
  PORT[$name]=$(freeport)
  "$BIN" --port "${PORT[$name]}" --server-key "$T/host_key" --authorized-clients "$T/authorized_keys" \
    --registered-clients "$T/registered" --servers-config "$T/servers_config.json" \
    --trusted-user-ca-keys "$T/user_ca_keys" --revoked-keys "$T/revoked_keys" \
    --proxy-protocol-from 127.0.0.1 --audit-log "$T/audit-$name.jsonl" --log-level DEBUG \
    2>"$T/gateway-$name.log" &
  GW[$name]=$!
  PIDS+=("$!")
}
start_gateway a
start_gateway b
for n in a b; do
  wait_for grep -q "SSH server listening" "$T/gateway-$n.log" || fail "gateway $n did not start"
done
ok "two gateways on 127.0.0.1:${PORT[a]} and :${PORT[b]}, --proxy-protocol-from 127.0.0.1"

FPORT=$(freeport)
cat >"$T/haproxy.cfg" <<EOF
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch 1
frontend ssh
    bind 127.0.0.2:$FPORT
    default_backend gateways
backend gateways
    balance roundrobin
    server a 127.0.0.1:${PORT[a]} send-proxy-v2 check inter 1s fall 2 rise 1
    server b 127.0.0.1:${PORT[b]} send-proxy-v2 check inter 1s fall 2 rise 1
EOF
"$HAPROXY" -c -q -f "$T/haproxy.cfg" || fail "haproxy rejects its config"
"$HAPROXY" -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
HA=$!
PIDS+=("$HA")
listening() { (exec 3<>"/dev/tcp/127.0.0.2/$FPORT") 2>/dev/null; }
wait_for listening || fail "haproxy did not listen on 127.0.0.2:$FPORT"
ok "haproxy $("$HAPROXY" -v | head -1 | awk '{print $3}') on 127.0.0.2:$FPORT, send-proxy-v2 to both"

# Strict host key checking with one known_hosts line: both instances are
# the same server to the client.
echo "[127.0.0.2]:$FPORT $(cut -d' ' -f1,2 "$T/host_key.pub")" >"$T/known_hosts"
SSH=(timeout 30 ssh -T -b 127.0.0.3 -p "$FPORT" -o IdentitiesOnly=yes -o BatchMode=yes
     -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$T/known_hosts" -o LogLevel=ERROR)
INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"fleet","version":"1"}}}'
INITED='{"jsonrpc":"2.0","method":"notifications/initialized"}'
# One MCP session through HAProxy as $1 (its key and certificate): an echo
# of $2 comes back.
session() {
  local call="{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"text\":\"$2\"}}}"
  local out
  out=$(printf '%s\n' "$INIT" "$INITED" "$call" |
    "${SSH[@]}" -i "$T/$1" -o CertificateFile="$T/$1-cert.pub" mcp@127.0.0.2) || return 1
  echo "$out" | grep '"id":2' | grep -q "$2"
}
starts() { grep -c '"event":"session_start"' "$T/audit-$1.jsonl" 2>/dev/null || true; }
# Audit records are written as the session starts: wait for the count.
audited() { wait_for test "$(starts "$1")" -ge "$2"; }

for i in 1 2 3 4; do session alice "fleet-$i" || fail "session $i through haproxy"; done
ok "4 sessions through haproxy with OpenSSH and a CA-signed certificate (one host key, checked strictly)"
if ! audited a 1 || ! audited b 1; then fail "not both instances served: a=$(starts a) b=$(starts b)"; fi
ok "both instances served: a=$(starts a), b=$(starts b) sessions"
for n in a b; do
  grep '"event":"session_start"' "$T/audit-$n.jsonl" | grep -qv '"client":"127.0.0.3"' &&
    fail "gateway $n audited another client address: $(grep session_start "$T/audit-$n.jsonl")"
done
grep -q "127.0.0.1 relays 127.0.0.3:" "$T/gateway-a.log" || fail "gateway a did not log the relayed client"
ok "both audit logs name the client 127.0.0.3 from the PROXY header, not haproxy's 127.0.0.1"
for n in a b; do
  grep '"event":"session_start"' "$T/audit-$n.jsonl" | grep -qv '"cert_id":"alice@fleet"' &&
    fail "gateway $n audited a session without alice's certificate"
done
ok "both audit logs name the certificate (cert_id alice@fleet, whose source-address is 127.0.0.3)"
session carol "carol-1" 2>/dev/null && fail "carol's certificate, good from 127.0.0.1 only, got in"
grep -q "client address 127.0.0.3 is not in the certificate.s source-address" "$T/gateway-a.log" "$T/gateway-b.log" ||
  fail "no source-address refusal of 127.0.0.3 logged for carol"
ok "carol's certificate, limited to haproxy's own 127.0.0.1, is refused: the header's address counts"

# Revoke alice's key in the shared file: both instances refuse her now.
cat "$T/alice.pub" >>"$T/revoked_keys"
for i in 1 2 3 4; do
  session alice "revoked-$i" 2>/dev/null && fail "alice's revoked certificate got in (attempt $i)"
done
for n in a b; do
  grep -q "from 127.0.0.3: certified key SHA256:.* is revoked" "$T/gateway-$n.log" ||
    fail "gateway $n did not refuse alice as revoked"
done
ok "alice's certificate, revoked in the shared file, is refused by both instances (4 tries)"
session bob "bob-1" || fail "bob's certificate, not revoked"
ok "bob's certificate from the same CA still gets in"

set +e
err=$(timeout 30 ssh -T -p "${PORT[a]}" -i "$T/bob" -o IdentitiesOnly=yes -o BatchMode=yes \
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null mcp@127.0.0.1 </dev/null 2>&1)
rc=$?
set -e
[ "$rc" = 255 ] || fail "a client bypassing haproxy from its address got in (rc=$rc): $err"
grep -q "is a --proxy-protocol-from sender, but it sent an SSH banner, no PROXY header" "$T/gateway-a.log" ||
  fail "gateway a did not log the missing header"
ok "a client bypassing haproxy from 127.0.0.1 is refused: no PROXY header"

kill -TERM "${GW[a]}"
wait_for grep -q '^.*\] stopped$' "$T/gateway-a.log" || fail "gateway a did not stop"
before=$(starts b)
for i in 5 6 7; do session bob "fleet-$i" || fail "session $i with gateway a down"; done
audited b $((before + 3)) || fail "gateway b did not serve the 3 new sessions: $(starts b) (was $before)"
ok "gateway a stopped: 3 new sessions, all served by b ($before -> $(starts b))"

echo "fleet: $pass checks passed"
