#!/usr/bin/env bash
# The dpdk transport side by side with the peers a user would pick instead:
#   memif, one host:  lavaflow dpdk vs lavaflow shm vs lavaflow tcp (lf-bench --fork --bind:
#                     rank r pinned to CPU r), and the raw-DPDK floor on the same device
#                     (lf-bench-dpdk raw-lat / raw-rate: the same EAL options, a bare
#                     memif ping-pong and a 64-byte packet blast);
#   veth, two hosts:  lavaflow dpdk (af_packet on eth0) vs lavaflow tcp over the same veth
#                     between two namespace hosts (scripts/netns-hosts.sh; root only);
#   idle:             the CPU a rank blocked on a quiet dpdk channel spends.
# Each round runs the candidates in alternating order; the table gives medians
# over the rounds (latency: one-way median us for 8 B; bandwidth: 1 MiB
# messages, window 64; rate: 64-byte messages per second, window 64). Before
# every run no earlier benchmark process may still spin.
#
#   scripts/bench-dpdk.sh [build-dir]          (ROUNDS=5; VETH_MTU=9000 for jumbo frames on the veth)
set -euo pipefail

build=${1:-build}
rounds=${ROUNDS:-5}
lfb=$build/bench/lf-bench
raw=$build/bench/lf-bench-dpdk
hosts=$(dirname "$0")/netns-hosts.sh
[ -x "$lfb" ] && [ -x "$raw" ] || { echo "build lf-bench and lf-bench-dpdk first ($build/bench)" >&2; exit 1; }

check_idle() {
  local s
  s=$( (pgrep -a lf-bench; pgrep -a fio; pgrep -a mpirun) 2>/dev/null || true)
  if [ -n "$s" ]; then
    echo "a benchmark process still runs, refusing to measure:" >&2
    echo "$s" >&2
    exit 1
  fi
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "-"}'; }

# lf-bench output -> "lat8 bw1M_GBps rate64_Mmsgs"
summarise() {
  awk '$1 == "latency" && $2 == 8 {l = $3}
       $1 == "bw" && $2 == 1048576 {b = $6}
       $1 == "bw" && $2 == 64 {r = 64 / $3}
       END {print l, b, r}'
}

declare -A lat bw rate
add() { lat[$1]+="$2 "; bw[$1]+="$3 "; rate[$1]+="$4 "; }

local_run() {
  check_idle
  LF_LOG_LEVEL=error LF_TRANSPORTS=$1 "$lfb" --fork --bind --mode latency,bw --min 8 --max 1M --samples 5 \
    2>/dev/null | summarise
}

veth_run() {  # transport: rank 0 on host 1, rank 1 on host 2
  local t=$1 port=$((4900 + RANDOM % 500)) extra=""
  [ "$t" = dpdk ] && extra="LF_DPDK_PORT=eth0"
  check_idle
  "$hosts" exec -p lfbd 2 env LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP=tcp://10.77.0.1:$port LF_LOG_LEVEL=error \
    LF_TRANSPORTS=$t $extra taskset -c 1 "$lfb" --mode latency,bw --min 8 --max 1M --samples 5 >/dev/null 2>&1 &
  "$hosts" exec -p lfbd 1 env LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=tcp://10.77.0.1:$port LF_LOG_LEVEL=error \
    LF_TRANSPORTS=$t $extra taskset -c 0 "$lfb" --mode latency,bw --min 8 --max 1M --samples 5 2>/dev/null | summarise
  wait
}

veth=0
if [ "$(id -u)" = 0 ] && "$hosts" up -p lfbd -n 2 >/dev/null 2>&1; then
  veth=1
  trap '"$hosts" down -p lfbd >/dev/null 2>&1 || true' EXIT
  if [ -n "${VETH_MTU:-}" ]; then  # both ends of both hosts' veths, and so the bridge
    for h in 1 2; do ip -n lfbd-h$h link set eth0 mtu "$VETH_MTU" && ip -n lfbd-sw link set h$h mtu "$VETH_MTU"; done
  fi
fi

echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
for ((i = 1; i <= rounds; i++)); do
  order="dpdk shm tcp"
  [ $((i % 2)) = 0 ] && order="tcp shm dpdk"
  for t in $order; do add "memif-$t" $(local_run "$t" || echo "lf-bench $t failed" >&2); done
  check_idle
  # A run that fails leaves its figure out (and says so), not the table.
  rl=$(taskset -c 0,1 "$raw" raw-lat --bind --samples 11 2>/dev/null | awk '{print $2}') || echo "raw-lat failed" >&2
  check_idle
  rr=$(taskset -c 0,1 "$raw" raw-rate --seconds 1 2>/dev/null | awk '{print $2}') || echo "raw-rate failed" >&2
  add raw "${rl:--}" - "${rr:--}"
  if [ $veth = 1 ]; then
    for t in dpdk tcp; do add "veth-$t" $(veth_run "$t" || echo "lf-bench $t across hosts failed" >&2); done
  fi
done
check_idle
idle=$(LF_LOG_LEVEL=error "$raw" idle --seconds 2 2>/dev/null) || idle="idle: failed"

printf '\n%-12s %14s %14s %16s\n' "path" "8 B lat (us)" "1 MiB (GB/s)" "64 B (M msg/s)"
for k in memif-dpdk memif-shm memif-tcp raw veth-dpdk veth-tcp; do
  [ -n "${lat[$k]:-}" ] || continue
  printf '%-12s %14s %14s %16s\n' "$k" "$(tr ' ' '\n' <<<"${lat[$k]}" | grep -v '^-*$' | median)" \
    "$(tr ' ' '\n' <<<"${bw[$k]}" | grep -v '^-*$' | median)" "$(tr ' ' '\n' <<<"${rate[$k]}" | grep -v '^-*$' | median)"
done
echo "$idle"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg); medians of $rounds rounds"
