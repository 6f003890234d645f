#!/usr/bin/env bash
# What the features cost, in ONE run of the current build, as ratios within
# the run (interleaved rounds, medians):
#   - the audit log: echo-child p50 through `ssh -T` with --audit-log on and
#     off (target: at most 5 us more);
#   - a shared server: echo-child p50 on a shared process against one of the
#     session's own (target: within 10 us);
#   both as the difference of two sessions side by side, calls alternating
#   (mcp_bench latency-ab), and as runs apart;
#   - mcp-server-time shared over 2 processes against session scope: calls/s
#     with 16 sessions (target: at least as many) and the RSS of the server
#     and its children with 50 sessions open (target: at most 1/20).
# Writes docs/BENCHMARKS-features.md. Not part of the test suite.
# Knobs: ROUNDS (3), CALLS (2000), TP_CALLS (200), HOLD (50).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
CALLS=${CALLS:-2000}
TP_CALLS=${TP_CALLS:-200}
HOLD=${HOLD:-50}
OUT=docs/BENCHMARKS-features.md
FAIL_WHAT=FEATURES
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

scripts/install-deps.sh
scripts/install-mcp-servers.sh
cargo build --release --locked --quiet --bins --examples
BIN=$ROOT/target/release
DRV=$BIN/examples/mcp_bench
ECHO=$BIN/examples/echo_mcp
TIME="$ROOT/.venv/bin/mcp-server-time"

bench_setup
client_key
RES=$T/results.jsonl
: > "$RES"
record() { # name metric json
  python3 -c 'import json,sys; d=json.loads(sys.argv[3]); d.update(name=sys.argv[1], metric=sys.argv[2]); print(json.dumps(d))' "$@" >> "$RES"
}

# One server per variant: name, config, extra flags.
declare -A PORT PID CFG
variant() { # name command-json scope-json extra...
  local name=$1 cmd=$2 scope=$3; shift 3
  CFG[$name]=$T/cfg-$name.json
  printf '{"mcpServers": {"s": {"command": "sh", "args": ["-c", "exec %s"]%s}}}\n' "$cmd" "$scope" > "${CFG[$name]}"
  PORT[$name]=$(freeport)
  "$BIN/m2m-mcp-server-ssh-server" --port "${PORT[$name]}" --authorized-clients "$T/client.pub" \
    --registered-clients "$T/none" --server-key "$T/host-$name" --servers-config "${CFG[$name]}" \
    --log-level WARNING "$@" 2>>"$T/$name.log" &
  PID[$name]=$!
  PIDS+=("${PID[$name]}")
  waitport "${PORT[$name]}" || fail "server $name did not start"
}
ssh_cmd() { echo "ssh -T -p ${PORT[$1]} $SSHOPTS mcp@127.0.0.1"; }

variant plain "$ECHO" ''
variant audit "$ECHO" '' --audit-log "$T/audit.log"
variant shared "$ECHO" ', "scope": "shared"'
variant time "$TIME --local-timezone UTC" ''
variant time_shared "$TIME --local-timezone UTC" ', "scope": "shared", "processes": 2'
sleep 3 # warm spares and shared processes start

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS" >&2
  for v in plain audit shared; do
    sleep 1
    r=$("$DRV" latency "$(ssh_cmd $v)" "$CALLS" echo '{"text":"hello"}') || fail "$v latency"
    record "$v" "latency#$round" "$r"
  done
  for v in audit shared; do
    sleep 1
    r=$("$DRV" latency-ab "$(ssh_cmd plain)" "$(ssh_cmd $v)" "$CALLS" echo '{"text":"hello"}') || fail "$v paired latency"
    record "$v" "paired#$round" "$r"
  done
  for v in time time_shared; do
    sleep 1
    throughput_cpu "$DRV" "$(ssh_cmd $v)" 16 "$TP_CALLS" get_current_time '{"timezone":"UTC"}' "${PID[$v]}"
    record "$v" "tp16#$round" "$RESULT"
  done
done
for v in time time_shared; do
  echo "== $HOLD sessions on $v" >&2
  hold_rss "$DRV" "$(ssh_cmd $v)" "$HOLD" "${PID[$v]}"
  record "$v" hold "$RESULT"
done

mkdir -p docs
python3 - "$RES" "$ROUNDS" "$CALLS" "$TP_CALLS" "$HOLD" > "$OUT" <<'PY'
import json, sys, os, platform, datetime
res, rounds, calls, tp, hold = sys.argv[1:6]
R, runs = {}, {}
for l in open(res):
    d = json.loads(l)
    if '#' in d['metric']:
        runs.setdefault((d['name'], d['metric'].split('#')[0]), []).append(d)
    else:
        R[(d['name'], d['metric'])] = d
def med(name, metric, key):
    xs = sorted(x[key] for x in runs[(name, metric)])
    return xs[len(xs) // 2]
def all_(name, metric, key):
    return ' / '.join(f'{x[key]:.0f}' for x in runs[(name, metric)])
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.machine())
print('# What the features cost\n')
print(f'Measured by `scripts/bench-features.sh` on {datetime.date.today()}: {os.cpu_count()} cores ({cpu}), Linux {platform.release()}. '
      f'One run, {rounds} interleaved rounds, medians; per-round figures after the slash-separated lists. '
      f'Latency: {calls} sequential `tools/call` of the echo child through OpenSSH `ssh -T`. Throughput: 16 sessions x {tp} calls of mcp-server-time. '
      f'Memory: {hold} sessions held open, the server and all its children.\n')
p = {v: med(v, 'latency', 'p50_us') for v in ('plain', 'audit', 'shared')}
print('| echo child, runs apart | p50 us (rounds) | median p50 us | vs session scope, no audit log |')
print('|---|---|---|---|')
for v, label in (('plain', 'session scope'), ('audit', 'session scope, --audit-log'), ('shared', '"scope": "shared"')):
    print(f"| {label} | {all_(v, 'latency', 'p50_us')} | {p[v]} | {p[v] - p['plain']:+} us |")
print()
t = {v: med(v, 'tp16', 'calls_per_s') for v in ('time', 'time_shared')}
h = {v: R[(v, 'hold')] for v in ('time', 'time_shared')}
print('| mcp-server-time | calls/s x16 (rounds) | median | RSS with children, ' + hold + ' sessions |')
print('|---|---|---|---|')
for v, label in (('time', 'session scope'), ('time_shared', 'shared, 2 processes')):
    print(f"| {label} | {all_(v, 'tp16', 'calls_per_s')} | {t[v]:.0f} | {h[v]['tree_kb'] / 1024:.0f} MiB |")
print()
print('Targets, as ratios from this run:\n')
def paired(v, what, against, target):
    d = med(v, 'paired', 'diff_p50_us')
    pd = sorted(x for r in runs[(v, 'paired')] for x in r['pair_diffs'])
    print(f"- {what}: {d:+.0f} us at p50 against {against}, the two sessions side by side with calls alternating "
          f"(median over {rounds} rounds of 5 session pairs; the {len(pd)} pairs from {pd[0]:+.0f} to {pd[-1]:+.0f} us); "
          f"run apart {p[v] - p['plain']:+} us (target {target})")
paired('audit', 'audit log', 'the same server without it', '<= 5 us')
paired('shared', 'shared echo child', "a session's own echo child", 'within 10 us')
print(f"- mcp-server-time calls/s at 16 sessions, shared / session: {t['time_shared'] / t['time']:.2f} (target >= 1)")
print(f"- mcp-server-time RSS with {hold} sessions, shared / session: {h['time_shared']['tree_kb'] / h['time']['tree_kb']:.3f} "
      f"({h['time_shared']['tree_kb'] / 1024:.0f} MiB against {h['time']['tree_kb'] / 1024:.0f} MiB; target <= 0.05 and under 170 MB)")
PY
cat "$OUT"
