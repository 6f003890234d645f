# Helpers shared by scripts/bench.sh and scripts/ab.sh; sourced, not run.
# bench_setup makes the temp dir $T and the list PIDS of processes to stop at
# exit; FAIL_WHAT names the script in failure messages (default BENCH).
# shellcheck shell=bash

# Temp dir $T, PIDS, and an exit trap that stops PIDS, calls
# bench_cleanup_more if the caller defined it, and removes $T.
bench_setup() {
  T=$(mktemp -d)
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
bench_cleanup() {
  stop_pids "${PIDS[@]}"
  if declare -F bench_cleanup_more >/dev/null; then bench_cleanup_more || true; fi
  rm -rf "$T"
}
fail() { echo "${FAIL_WHAT:-BENCH} FAIL: $*" >&2; for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done; exit 1; }

# alive PID: the process exists and is not a zombie.
alive() { local s; s=$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null) && [ -n "$s" ] && [ "$s" != Z ]; }
# wait_for PID SECS: waits at most SECS for PID (a child of this shell) to end,
# then kills it; returns its exit status.
wait_for() {
  local end=$((SECONDS + $2))
  while alive "$1" && [ $SECONDS -lt $end ]; do sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1"
}
# stop_pids PID...: SIGTERM, up to 5 s to exit, then SIGKILL; reaps them and
# drops them from PIDS.
stop_pids() {
  local p keep=() end=$((SECONDS + 5))
  [ $# -gt 0 ] || return 0
  kill "$@" 2>/dev/null || true
  for p; do while alive "$p" && [ $SECONDS -lt $end ]; do sleep 0.1; done; done
  kill -9 "$@" 2>/dev/null || true
  for p; do wait "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do [[ " $* " == *" $p "* ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
tree_sum() { # PID rss|cpu: VmRSS KiB, or CPU ms (with reaped children), of the process and all its descendants
  python3 - "$1" "$2" <<'PY'
import os, sys
root, what = int(sys.argv[1]), sys.argv[2]; kids = {}; hz = os.sysconf('SC_CLK_TCK')
for p in os.listdir('/proc'):
    if not p.isdigit(): continue
    try:
        st = open(f'/proc/{p}/stat').read(); ppid = int(st.rsplit(')', 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(p))
    except Exception: pass
total, todo = 0, [root]
while todo:
    p = todo.pop(); todo += kids.get(p, [])
    try:
        if what == 'rss':
            total += sum(int(l.split()[1]) for l in open(f'/proc/{p}/status') if l.startswith('VmRSS'))
        else:  # utime stime cutime cstime
            total += sum(int(x) for x in open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[11:15])
    except Exception: pass
print(total if what == 'rss' else total * 1000 // hz)
PY
}
tree_rss_kb() { tree_sum "$1" rss; }
tree_cpu_ms() { tree_sum "$1" cpu; }

# The client key $T/client and SSHOPTS, the OpenSSH options that log in with it.
client_key() {
  ssh-keygen -q -t ed25519 -N '' -f "$T/client"
  # shellcheck disable=SC2034 # for the caller
  SSHOPTS="-o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i $T/client"
}

# start_server BIN PORT CONFIG HOST_KEY LOG: our server on 127.0.0.1:PORT,
# letting in $T/client.pub only; sets SERVER_PID (also in PIDS).
start_server() {
  "$1" --port "$2" --authorized-clients "$T/client.pub" --registered-clients "$T/none" \
    --server-key "$4" --servers-config "$3" --log-level WARNING 2>>"$5" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  waitport "$2" || fail "our server ($1) did not start on port $2"
  sleep 1 # let warm spares start, as they would on a long-running server
}

# coproc_start CMD...: runs CMD as a coprocess under a 900 s timeout; sets
# CO_CHILD, CO_IN (its output, to read) and CO_OUT (its input, to write), the
# last two as copies of bash's own descriptors, which bash closes and unsets
# as soon as it reaps the coprocess (a result not read yet would be lost).
coproc_start() {
  coproc CO { exec timeout -k 5 900 "$@"; }
  CO_CHILD=$CO_PID
  exec {CO_IN}<&"${CO[0]}" {CO_OUT}>&"${CO[1]}"
  local w=${CO[1]} r=${CO[0]}
  exec {w}>&- {r}<&-
}
# coproc_end SECS: closes the coprocess's input and waits at most SECS for it
# to end; returns its exit status.
coproc_end() {
  exec {CO_OUT}>&-
  local rc=0
  wait_for "$CO_CHILD" "$1" 2>/dev/null || rc=$?
  exec {CO_IN}<&-
  return $rc
}

# throughput_cpu DRV CMD SESSIONS CALLS TOOL ARGS SERVER_PID: one
# `mcp_bench throughput` run whose timed calls start a second after its
# sessions are set up (a replacement warm spare's start-up is not counted);
# sets RESULT to its JSON with server_cpu_ms_per_1000, the CPU of the server's process
# tree per 1000 calls between the first and the last call.
throughput_cpu() {
  local cmd=$2 n=$3 calls=$4 srv=$7 line r before after
  coproc_start env MCP_BENCH_SYNC=1 "$1" throughput "$cmd" "$n" "$calls" "$5" "$6"
  if ! read -r -t 300 line <&"$CO_IN" || [ "$line" != ready ]; then fail "throughput $n through $cmd: ${line:-no answer}"; fi
  # Let one-off start-up work finish first (our server starts a replacement
  # warm spare as each session takes one), so the window holds the calls only.
  sleep 1
  before=$(tree_cpu_ms "$srv"); echo go >&"$CO_OUT"
  if ! read -r -t 300 line <&"$CO_IN" || [ "$line" != "done" ]; then fail "throughput $n through $cmd: ${line:-no answer}"; fi
  after=$(tree_cpu_ms "$srv"); echo go >&"$CO_OUT"
  read -r -t 120 r <&"$CO_IN" || fail "throughput $n through $cmd: no result"
  coproc_end 120 || fail "throughput $n through $cmd: exit status $?"
  RESULT=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["server_cpu_ms_per_1000"]=(int(sys.argv[3])-int(sys.argv[2]))*1000/(int(sys.argv[4])*int(sys.argv[5])); print(json.dumps(d))' \
    "$r" "$before" "$after" "$n" "$calls")
}

# hold_rss DRV CMD SESSIONS SERVER_PID: holds SESSIONS initialized sessions and
# sets RESULT to the server's RSS (alone and with its children) and thread
# count then, as JSON.
hold_rss() {
  local line
  coproc_start "$1" hold "$2" "$3"
  read -r -t 120 line <&"$CO_IN" || fail "hold $3 sessions: no answer"
  [ "$line" = ready ] || fail "hold $3 sessions: $line"
  # shellcheck disable=SC2034 # for the caller
  RESULT="{\"server_kb\": $(rss_kb "$4"), \"tree_kb\": $(tree_rss_kb "$4"), \"threads\": $(find "/proc/$4/task" -mindepth 1 -maxdepth 1 | wc -l)}"
  coproc_end 120 || true
}
