#!/usr/bin/env bash
# Interleaved A/B benchmark of the server between two revisions, to show that
# a change (a refactor) did not cost performance:
#   scripts/ab.sh BASE_REV [NEW_REV]
# A is BASE_REV; B is NEW_REV, or the work tree as it is (uncommitted changes
# included) when NEW_REV is not given. Both servers run at once, each on its
# own loopback port with the same client key and the same config (the echo
# child, examples/echo_mcp); in ROUNDS rounds, A then B each time:
#   - latency through OpenSSH `ssh -T` (mcp_bench latency, CALLS calls,
#     each run a second after the last), p50/p90/p99;
#   - 16 sessions' throughput (TP_CALLS calls each, timed from a second after
#     the sessions are set up), calls/s and the server's CPU per 1000 calls;
#   - both servers restarted, then the server's RSS idle, with 1 and with
#     HOLD sessions held open.
# Prints a markdown table (per-round figures, medians, B vs A) and writes it
# to docs/AB.md. The driver (mcp_bench) and the echo child are B's for both
# sides, so only the server differs. Revisions are built in a temporary git
# worktree (removed at exit) into one persistent target dir, AB_TARGET
# (default ${CARGO_TARGET_DIR:-target}/ab-base), so a rerun rebuilds only
# this crate; the work tree builds into its usual target dir. Not part of the
# test suite.
# Knobs: ROUNDS (3), CALLS (2000), TP_CALLS (2000), HOLD (50), AB_TARGET,
# BUILD_NICE (niceness of the builds, 10).
set -euo pipefail
usage() { echo "usage: scripts/ab.sh BASE_REV [NEW_REV]   (NEW_REV: default the work tree as it is)" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
case $1 in -h | --help) usage ;; esac
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
CALLS=${CALLS:-2000}
TP_CALLS=${TP_CALLS:-2000}
HOLD=${HOLD:-50}
NEW_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AB_TARGET=${AB_TARGET:-$NEW_TARGET/ab-base}
BUILD_NICE=${BUILD_NICE:-10}
OUT=docs/AB.md
FAIL_WHAT=AB
for k in ROUNDS CALLS TP_CALLS HOLD; do
  [[ ${!k} =~ ^[1-9][0-9]*$ ]] || { echo "AB FAIL: $k must be a whole number above 0, not '${!k}'" >&2; exit 2; }
done
[ "$HOLD" -ge 2 ] || { echo "AB FAIL: HOLD must be 2 or more" >&2; exit 2; }

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_setup
WORKTREES=()
bench_cleanup_more() {
  local w
  for w in "${WORKTREES[@]}"; do git -C "$ROOT" worktree remove --force "$w" >/dev/null 2>&1 || true; done
  git -C "$ROOT" worktree prune >/dev/null 2>&1 || true
}

scripts/install-deps.sh
rev() { git rev-parse --verify --quiet "$1^{commit}" || fail "not a revision: $1"; }
A_REV=$(rev "$1")
A_NAME="$(git rev-parse --short "$A_REV") ($1)"
if [ $# -eq 2 ]; then
  B_REV=$(rev "$2")
  B_NAME="$(git rev-parse --short "$B_REV") ($2)"
else
  B_REV=
  B_NAME="$(git rev-parse --short HEAD) (work tree)"
  git diff --quiet HEAD -- || B_NAME="$(git rev-parse --short HEAD)+changes (work tree)"
fi

# build NAME DIR TARGET_DIR: the server and the two examples of the checkout
# in DIR, built into TARGET_DIR and copied to $T/NAME (so a later build in the
# same target dir cannot replace them).
build() {
  echo "== building $1 in $2" >&2
  (cd "$2" && CARGO_TARGET_DIR=$3 timeout 3600 nice -n "$BUILD_NICE" cargo build --release --locked --quiet \
    --bin m2m-mcp-server-ssh-server --example mcp_bench --example echo_mcp) >"$T/build-$1.log" 2>&1 ||
    fail "building $1 failed (in $2, target $3)"
  mkdir -p "$T/$1"
  cp "$3/release/m2m-mcp-server-ssh-server" "$3/release/examples/mcp_bench" "$3/release/examples/echo_mcp" "$T/$1/" ||
    fail "building $1: the binaries are missing from $3/release"
}
# build_rev NAME REV: build() in a temporary worktree at REV.
build_rev() {
  local dir=$T/src-$1
  git worktree add --quiet --detach "$dir" "$2" >"$T/worktree-$1.log" 2>&1 || fail "git worktree add for $1 ($2) failed"
  WORKTREES+=("$dir")
  build "$1" "$dir" "$AB_TARGET"
  git worktree remove --force "$dir" >/dev/null 2>&1 || true
}
build_rev A "$A_REV"
if [ -n "$B_REV" ]; then build_rev B "$B_REV"; else build B "$ROOT" "$NEW_TARGET"; fi
rm -f "$T"/build-*.log "$T"/worktree-*.log
DRV=$T/B/mcp_bench

client_key
printf '{"mcpServers": {"echo": {"command": "sh", "args": ["-c", "exec %s"]}}}\n' "$T/B/echo_mcp" > "$T/config.json"
declare -A PORT SRV CMD
# start SIDE: (re)starts that side's server on a fresh port.
start() {
  PORT[$1]=$(freeport)
  start_server "$T/$1/m2m-mcp-server-ssh-server" "${PORT[$1]}" "$T/config.json" "$T/host_$1" "$T/server-$1.log"
  SRV[$1]=$SERVER_PID
  CMD[$1]="ssh -T -p ${PORT[$1]} $SSHOPTS mcp@127.0.0.1"
}
RES=$T/results.jsonl
: > "$RES"
record() { # side round metric json
  python3 -c 'import json,sys; d=json.loads(sys.argv[4]); d.update(side=sys.argv[1], round=int(sys.argv[2]), metric=sys.argv[3]); print(json.dumps(d))' "$@" >> "$RES" ||
    fail "side $1 round $2 $3: not a result: $4"
}
start A
start B
TOOL="echo"
ARGS='{"text":"hello"}'
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS: latency, throughput" >&2
  for s in A B; do
    sleep 1 # the previous session's teardown and a replacement spare's start-up stay out of this run
    r=$(timeout -k 5 300 "$DRV" latency "${CMD[$s]}" "$CALLS" "$TOOL" "$ARGS") || fail "$s latency (round $round)"
    record "$s" "$round" latency "$r"
  done
  for s in A B; do
    throughput_cpu "$DRV" "${CMD[$s]}" 16 "$TP_CALLS" "$TOOL" "$ARGS" "${SRV[$s]}"
    record "$s" "$round" tp16 "$RESULT"
  done
done
# Memory on restarted servers: what malloc kept from the runs above would
# otherwise count in the idle figure.
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS: memory" >&2
  for s in A B; do stop_pids "${SRV[$s]}"; start "$s"; done
  for s in A B; do
    record "$s" "$round" idle "{\"server_kb\": $(rss_kb "${SRV[$s]}")}"
    for n in 1 "$HOLD"; do
      hold_rss "$DRV" "${CMD[$s]}" "$n" "${SRV[$s]}"
      record "$s" "$round" "hold$n" "$RESULT"
    done
  done
done
stop_pids "${SRV[A]}" "${SRV[B]}"

mkdir -p docs
python3 - "$RES" "$A_NAME" "$B_NAME" "$ROUNDS" "$CALLS" "$TP_CALLS" "$HOLD" "$*" > "$T/AB.md" <<'PY' || fail "report"
import json, sys, os, platform, datetime, statistics
res, a_name, b_name, rounds, calls, tp_calls, hold, argv = sys.argv[1:]
rounds, hold = int(rounds), int(hold)
V = {}
for l in open(res):
    d = json.loads(l); V[(d['side'], d['round'], d['metric'])] = d
def val(side, r, metric, key):
    if key == 'per_session_kb':
        return (V[(side, r, f'hold{hold}')]['server_kb'] - V[(side, r, 'hold1')]['server_kb']) / (hold - 1)
    return V[(side, r, metric)][key]
rows = [  # label, metric, key, format, comparison
    ('latency p50 us', 'latency', 'p50_us', '{:.0f}', 'diff'),
    ('latency p90 us', 'latency', 'p90_us', '{:.0f}', 'diff'),
    ('latency p99 us', 'latency', 'p99_us', '{:.0f}', 'diff'),
    ('16 sessions, calls/s', 'tp16', 'calls_per_s', '{:.0f}', 'ratio'),
    ('16 sessions, server CPU ms per 1000 calls', 'tp16', 'server_cpu_ms_per_1000', '{:.1f}', 'ratio'),
    ('server RSS idle KiB', 'idle', 'server_kb', '{:.0f}', 'diff'),
    ('server RSS, 1 session KiB', 'hold1', 'server_kb', '{:.0f}', 'diff'),
    (f'server RSS, {hold} sessions KiB', f'hold{hold}', 'server_kb', '{:.0f}', 'diff'),
    ('KiB per added session', None, 'per_session_kb', '{:.0f}', 'diff'),
    (f'RSS with children, {hold} sessions KiB', f'hold{hold}', 'tree_kb', '{:.0f}', 'diff'),
]
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.machine())
print('# A/B benchmark\n')
print(f'`scripts/ab.sh {argv}` on {datetime.date.today()}: A = {a_name}, B = {b_name}. '
      f'Machine: {os.cpu_count()} cores ({cpu}), Linux {platform.release()}.\n')
print(f'{rounds} interleaved round{"s" if rounds > 1 else ""}, A then B each time. Echo child behind each server, reached with OpenSSH `ssh -T`; '
      f'latency over {calls} sequential `tools/call` per run, each run a second after the last; '
      f'16 sessions x {tp_calls} calls, timed from a second after they are set up; '
      f'memory on both servers restarted, the server process alone unless said. '
      f'Medians over the rounds; B vs A is B - A for times and sizes (negative is better for B), B / A for calls/s (above 1 is better for B) and CPU (below 1 is better).\n')
head = ['metric'] + [f'round {r} A / B' for r in range(1, rounds + 1)] + ['median A', 'median B', 'B vs A']
print('| ' + ' | '.join(head) + ' |')
print('|' + '---|' * len(head))
for label, metric, key, fmt, cmp in rows:
    a = [val('A', r, metric, key) for r in range(1, rounds + 1)]
    b = [val('B', r, metric, key) for r in range(1, rounds + 1)]
    ma, mb = statistics.median(a), statistics.median(b)
    if cmp == 'diff':
        d = mb - ma
        vs = f'{d:+.0f}' + (' us' if key.endswith('_us') else ' KiB')
    else:
        vs = f'{mb / ma:.3f}' if ma else '-'
    cells = [label] + [f'{fmt.format(x)} / {fmt.format(y)}' for x, y in zip(a, b)] + [fmt.format(ma), fmt.format(mb), vs]
    print('| ' + ' | '.join(cells) + ' |')
PY
cp "$T/AB.md" "$OUT"
cat "$OUT"
