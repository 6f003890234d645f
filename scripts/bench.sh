#!/usr/bin/env bash
# Benchmark, in ONE run, for the same child MCP server:
#   (a) the child spawned directly, no SSH
#   (b) OpenSSH sshd on a private loopback port with ForceCommand = the child
#   (c) our server reached with OpenSSH `ssh -T`
#   (d) our server reached through our client
#   (e) as (c) with a 2026-07-28 client; and (c) against (e) paired: a
#       legacy and a 2026-07-28 session side by side, calls alternating
# Children: examples/echo_mcp (minimal, shows the transport's own cost) and
# mcp-server-time (PyPI, a real one). Writes docs/BENCHMARKS.md; exits
# non-zero if any path fails. Not part of the test suite.
# Knobs: CALLS (default 1000), TP_CALLS (calls per session in the
# throughput runs, default 200; TP_CALLS_ECHO for the echo child, 2000),
# HOLD (sessions held for RSS, default 50),
# BENCH_CPUS (a CPU list such as 0: run everything, servers, clients and
# children, under `taskset -c` on those CPUs and write
# docs/BENCHMARKS-cpus-<list>.md instead; shows the paths' costs without the
# scheduler's cross-CPU wake-ups).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -n "${BENCH_CPUS:-}" ] && [ -z "${BENCH_PINNED:-}" ]; then
  exec env BENCH_PINNED=1 taskset -c "$BENCH_CPUS" "$0" "$@"
fi
OUT=docs/BENCHMARKS.md
[ -n "${BENCH_CPUS:-}" ] && OUT="docs/BENCHMARKS-cpus-${BENCH_CPUS//[^0-9]/_}.md"
CALLS=${CALLS:-1000}
TP_CALLS=${TP_CALLS:-200}
TP_CALLS_ECHO=${TP_CALLS_ECHO:-2000} # the echo child is ~50x faster: keep its window long enough to measure
HOLD=${HOLD:-50}

scripts/install-deps.sh
if [ ! -x /usr/sbin/sshd ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -qq openssh-server >/dev/null
fi
scripts/install-mcp-servers.sh
cargo build --release --locked --quiet --bins --examples
BIN=$ROOT/target/release
DRV=$BIN/examples/mcp_bench

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_setup
RES=$T/results.jsonl
: > "$RES"
record() { # child path metric json
  python3 -c 'import json,sys; d=json.loads(sys.argv[4]); d.update(child=sys.argv[1], path=sys.argv[2], metric=sys.argv[3]); print(json.dumps(d))' "$@" >> "$RES"
}

client_key
ssh-keygen -q -t ed25519 -N '' -f "$T/sshd_host"
mkdir -p /run/sshd 2>/dev/null || true

for child in echo time; do
  case $child in
    echo) CMD="$BIN/examples/echo_mcp"; TOOL="echo"; ARGS='{"text":"hello"}'; TPN=$TP_CALLS_ECHO ;;
    time) CMD="$ROOT/.venv/bin/mcp-server-time --local-timezone UTC"; TOOL=get_current_time; ARGS='{"timezone":"UTC"}'; TPN=$TP_CALLS ;;
  esac
  # (b) private sshd with ForceCommand.
  SP=$(freeport)
  cp "$T/client.pub" "$T/authorized_keys"
  cat > "$T/sshd_config" <<EOF
Port $SP
ListenAddress 127.0.0.1
HostKey $T/sshd_host
AuthorizedKeysFile $T/authorized_keys
PidFile $T/sshd.pid
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
ForceCommand $CMD
EOF
  /usr/sbin/sshd -D -e -f "$T/sshd_config" 2>"$T/sshd-$child.log" &
  SSHD=$!; PIDS+=("$SSHD")
  # (c), (d) our server with this child only.
  OP=$(freeport)
  printf '{"mcpServers": {"%s": {"command": "sh", "args": ["-c", "exec %s"]}}}\n' "$child" "$CMD" > "$T/cfg-$child.json"
  start_ours() {
    start_server "$BIN/m2m-mcp-server-ssh-server" "$OP" "$T/cfg-$child.json" "$T/ours_host" "$T/ours-$child.log"
    OURS=$SERVER_PID
  }
  start_ours
  waitport "$SP" || fail "sshd did not start"
  echo "[127.0.0.1]:$OP $(cat "$T/ours_host.pub")" > "$T/known_hosts"
  IDLE=$(rss_kb "$OURS")
  record "$child" c rss "{\"idle_kb\": $IDLE}"

  declare -A P
  P[a]="$CMD"
  P[b]="ssh -T -p $SP $SSHOPTS root@127.0.0.1"
  P[c]="ssh -T -p $OP $SSHOPTS mcp@127.0.0.1"
  P[d]="$BIN/m2m-mcp-server-ssh-client --host 127.0.0.1 --port $OP --client-key $T/client --known-hosts $T/known_hosts --log-level ERROR"
  # Latency in 3 interleaved rounds (a b c d, a b c d, ...), median of the
  # rounds: noise from a busy neighbour then hits every path alike. Each run
  # starts a second after the last, so the previous session's teardown and
  # our replacement spare's start-up (a Python child's exit and start cost
  # about 0.5 s of CPU) do not land in its tail.
  # (e) is (c) with a 2026-07-28 client (MCP_BENCH_ERA): the same server
  # and child, the era translated by the gateway.
  for round in 1 2 3; do
    for p in a b c d e; do
      sleep 1
      if [ "$p" = e ]; then
        r=$(MCP_BENCH_ERA=2026-07-28 "$DRV" latency "${P[c]}" "$CALLS" "$TOOL" "$ARGS") || fail "$child $p latency"
      else
        r=$("$DRV" latency "${P[$p]}" "$CALLS" "$TOOL" "$ARGS") || fail "$child $p latency"
      fi
      record "$child" "$p" "latency#$round" "$r"
    done
    sleep 1
    # For the echo child a third session joins each pair: legacy, with its
    # messages lengthened to the 2026-07-28 sizes (mcp_bench same-bytes).
    SAME=; if [ "$child" = echo ]; then SAME="5 same-bytes"; fi
    # shellcheck disable=SC2086 # two words, or none
    r=$("$DRV" latency-eras "${P[c]}" "$CALLS" "$TOOL" "$ARGS" $SAME) || fail "$child eras latency"
    record "$child" ce "eras#$round" "$r"
  done
  for p in a b c d; do
    echo "== $child ($p)" >&2
    r=$("$DRV" connect "${P[$p]}" 3) || fail "$child $p connect"; record "$child" "$p" connect "$r"
    if [ "$child" = echo ]; then
      r=$("$DRV" big "${P[$p]}" 1048576) || fail "$child $p 1 MiB echo"; record "$child" "$p" big "$r"
    fi
  done
  # Throughput, also in 3 interleaved rounds with the median kept: one
  # 16-session run moves by +-30% here from run to run.
  for round in 1 2 3; do
    for n in 1 4 16; do
      for p in a b c d; do
        case $p in b) SRV=$SSHD ;; c | d) SRV=$OURS ;; *) SRV= ;; esac
        if [ "$n" = 16 ] && [ -n "$SRV" ]; then
          # Server-side CPU over the calls alone (set-up and teardown excluded).
          throughput_cpu "$DRV" "${P[$p]}" "$n" "$TPN" "$TOOL" "$ARGS" "$SRV"; r=$RESULT
        else
          r=$("$DRV" throughput "${P[$p]}" "$n" "$TPN" "$TOOL" "$ARGS") || fail "$child $p throughput $n"
        fi
        record "$child" "$p" "tp$n#$round" "$r"
      done
    done
  done
  # RSS with 1 and $HOLD open sessions (through ssh -T), on a restarted
  # server: memory malloc kept from the throughput runs would otherwise
  # count in the first figure and not in the per-session difference.
  stop_pids "$OURS"
  start_ours
  for n in 1 "$HOLD"; do
    hold_rss "$DRV" "${P[c]}" "$n" "$OURS"
    record "$child" c "hold$n" "$RESULT"
  done
  stop_pids "$SSHD" "$OURS"
  unset P
done

SIZE=$(stat -c %s "$BIN/m2m-mcp-server-ssh-server")
CSIZE=$(stat -c %s "$BIN/m2m-mcp-server-ssh-client")
mkdir -p docs
python3 - "$RES" "$SIZE" "$CSIZE" "$CALLS" "$TP_CALLS_ECHO/$TP_CALLS" "$HOLD" "${BENCH_CPUS:-}" > "$OUT" <<'PY'
import json, sys, platform, os, datetime, subprocess
res, size, csize, calls, tp_calls, hold, pinned = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
R = {}
rounds = {}
for l in open(res):
    d = json.loads(l); R[(d['child'], d['path'], d['metric'])] = d
    if '#' in d['metric']:
        rounds.setdefault((d['child'], d['path'], d['metric'].split('#')[0]), []).append(d)
for (c, p, m), rs in rounds.items():
    med = lambda k: sorted(x[k] for x in rs)[len(rs) // 2]
    R[(c, p, m)] = {k: med(k) for k in rs[0] if k not in ('child', 'path', 'metric') and not isinstance(rs[0][k], (list, dict))}
    R[(c, p, m)].update({k: v for k, v in rs[0].items() if isinstance(v, dict)})
def g(c, p, m, k): return R.get((c, p, m), {}).get(k)
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.machine())
names = {'a': '(a) child directly', 'b': '(b) OpenSSH sshd + ForceCommand', 'c': '(c) this server, `ssh -T`', 'd': '(d) this server, this client',
         'e': '(e) as (c), a 2026-07-28 client'}
print('# Benchmarks\n')
where = f', everything pinned to CPU {pinned} (`BENCH_CPUS={pinned}`)' if pinned else ''
try:  # a VM guest's idle polling decides what waking an idle CPU costs
    where += f', guest_halt_poll_ns={open("/sys/module/haltpoll/parameters/guest_halt_poll_ns").read().strip()}'
except OSError:
    pass
print(f'Measured by `scripts/bench.sh` on {datetime.date.today()}: {os.cpu_count()} cores ({cpu}){where}, Linux {platform.release()}. '
      f'One run; every figure in a table comes from that same run, so compare within it only. '
      f'{calls} sequential `tools/call` per latency run; latency runs go in 3 interleaved rounds over the four paths, each run a second after the last, and each figure is the median of the rounds; '
      f'{tp_calls.split("/")[0]} (echo) and {tp_calls.split("/")[1]} (mcp-server-time) calls per session in the throughput runs, also in 3 interleaved rounds with the median kept; connect time is the median of 3 sessions opened a second apart.\n')
for c, title in [('echo', 'Echo child (`examples/echo_mcp.rs`): the transport\'s own cost'), ('time', 'mcp-server-time (PyPI)')]:
    print(f'## {title}\n')
    print('| path | connect to `tools/list` ms | p50 us | p90 us | p99 us | overhead p50 us (vs a) | 1 MiB echo ms | calls/s x1 | x4 | x16 |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    a50 = g(c, 'a', 'latency', 'p50_us')
    for p in 'abcd':
        p50 = g(c, p, 'latency', 'p50_us')
        big = g(c, p, 'big', 'big_ms')
        row = [names[p], f"{g(c, p, 'connect', 'connect_ms'):.1f}", p50, g(c, p, 'latency', 'p90_us'), g(c, p, 'latency', 'p99_us'),
               (p50 - a50) if p != 'a' else '-', f'{big:.1f}' if big else '-'] + \
              [f"{g(c, p, f'tp{n}', 'calls_per_s'):.0f}" for n in (1, 4, 16)]
        print('| ' + ' | '.join(str(x) for x in row) + ' |')
    e50 = g(c, 'e', 'latency', 'p50_us')
    print('| ' + ' | '.join(str(x) for x in [names['e'], '-', e50, g(c, 'e', 'latency', 'p90_us'), g(c, 'e', 'latency', 'p99_us'), e50 - a50, '-', '-', '-', '-']) + ' |')
    b50, c50, d50 = (g(c, p, 'latency', 'p50_us') for p in 'bcd')
    ob, oc, od = b50 - a50, c50 - a50, d50 - a50
    print()
    print('Targets, as ratios from this run:\n')
    print(f'- per-call overhead, ours (c) / OpenSSH (b): {oc} / {ob} us = {oc / ob if ob > 0 else float("nan"):.2f} (target <= 1); through our client (d): {od} us')
    pe = R.get((c, 'ce', 'eras'), {})
    pr = sorted(r for d in rounds.get((c, 'ce', 'eras'), []) for r in d.get('pair_ratios', []))
    spread = f'; the {len(pr)} pairs\' ratios run from {pr[0]:.2f} to {pr[-1]:.2f}' if pr else ''
    print(f'- p50 of a 2026-07-28 client / a legacy one, same server and child (target <= 1): the two sessions side by side, calls alternating, '
          f'{pe.get("modern_p50_us")} / {pe.get("legacy_p50_us")} us = {pe.get("ratio_p50", float("nan")):.2f} '
          f'(each round the median over 5 fresh session pairs, then the median of the rounds{spread}); '
          f'run apart, (e) / (c): {e50} / {c50} us = {e50 / c50:.2f}')
    if 'ratio_same_bytes_p50' in pe:
        sr = sorted(r for d in rounds.get((c, 'ce', 'eras'), []) for r in d.get('same_bytes_pair_ratios', []))
        b = pe.get('bytes', {})
        cm = b.get('child_more', ['?', '?'])
        print(f'- the same 2026-07-28 client / a legacy one whose request and answer are as long over SSH '
              f'(request/answer bytes legacy {b.get("legacy")}, 2026-07-28 {b.get("modern")}, this one {b.get("same_bytes")}: '
              f'the request lengthened by spaces the gateway does not forward, the answer by the child, so only this session also moves {cm[0]} and {cm[1]} more bytes over the child\'s pipes), '
              f'a third session in each of those pairs: {pe.get("modern_p50_us")} / {pe.get("same_bytes_p50_us")} us = {pe["ratio_same_bytes_p50"]:.2f}, '
              f'the pairs\' ratios from {sr[0]:.2f} to {sr[-1]:.2f}: with the bytes over SSH equal, what is left is the gateway\'s own era work')
    cc, cb = g(c, 'c', 'connect', 'connect_ms'), g(c, 'b', 'connect', 'connect_ms')
    print(f'- connect to `tools/list`, ours (c) / OpenSSH (b): {cc:.1f} / {cb:.1f} ms = {cc / cb:.2f} (target <= 0.25 with warm children, for mcp-server-time)')
    t16c, t16b = g(c, 'c', 'tp16', 'calls_per_s'), g(c, 'b', 'tp16', 'calls_per_s')
    print(f'- calls/s at 16 sessions, ours (c) / OpenSSH (b): {t16c:.0f} / {t16b:.0f} = {t16c / t16b:.2f} (target >= 1)')
    cpu = {p: g(c, p, 'tp16', 'server_cpu_ms_per_1000') for p in 'bcd'}
    print(f'- server-side CPU per 1000 calls in the 16-session runs (between the first and the last call: the server process and its children; sshd with its session processes and theirs): '
          f'ours (c) {cpu["c"]:.0f} ms, through our client (d) {cpu["d"]:.0f} ms, OpenSSH (b) {cpu["b"]:.0f} ms; ratio (c) / (b) {cpu["c"] / cpu["b"]:.2f}')
    if c == 'echo':
        bc, bb = g(c, 'c', 'big', 'big_ms'), g(c, 'b', 'big', 'big_ms')
        print(f'- 1 MiB echo, ours (c) / OpenSSH (b): {bc:.1f} / {bb:.1f} ms = {bc / bb:.2f} (target <= 2)')
    idle = g(c, 'c', 'rss', 'idle_kb'); h1 = R[(c, 'c', 'hold1')]; hn = R[(c, 'c', f'hold{hold}')]
    per = (hn['server_kb'] - h1['server_kb']) / (int(hold) - 1)
    print(f'- server RSS: idle {idle} KiB (target <= 8192); 1 session {h1["server_kb"]} KiB; {hold} sessions {hn["server_kb"]} KiB, '
          f'so {per:.0f} KiB per added session, children excluded (target <= 256); with children: {h1["tree_kb"]} KiB and {hn["tree_kb"]} KiB; '
          f'{hn["threads"]} server threads at {hold} sessions')
    print()
print(f'Release binaries: server {size / 1048576:.2f} MiB, client {csize / 1048576:.2f} MiB (stripped, fat LTO, opt-level s).')
PY
cat "$OUT"
# The features' costs (audit log, shared servers) in a run of their own:
# FEATURES=0 skips it.
if [ "${FEATURES:-1}" != 0 ] && [ -z "${BENCH_CPUS:-}" ]; then
  scripts/bench-features.sh
fi
