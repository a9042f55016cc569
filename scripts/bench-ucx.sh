#!/usr/bin/env bash
# The ucx transport side by side with lavaflow's own tcp and with UCX's own
# benchmark, ucx_perftest (tag and active-message tests), for each UCX_TLS:
#   lavaflow ucx and lavaflow tcp: tests/remote/lf-bench-remote ucx (two
#     channels between the same two processes, pinned to cores 0 and 1);
#   ucx_perftest -t tag_lat|ucp_am_lat (8 B) and tag_bw|ucp_am_bw (1 MiB,
#     4 MiB), server on core 1, client on core 0, the same UCX_TLS.
# Each round runs lavaflow and perftest in alternating order; the table gives
# medians over the rounds (latency: one-way median us; perftest prints its
# own 50th percentile and average, lavaflow the median of its iterations'
# mean). Before every run no earlier benchmark process may still spin.
#
#   scripts/bench-ucx.sh [build-dir]          (ROUNDS=5, TLS_LIST="tcp sm,self posix,cma,self")
set -euo pipefail

build=${1:-build}
rounds=${ROUNDS:-5}
tls_list=${TLS_LIST:-"tcp sm,self posix,cma,self"}
bench=$build/tests/remote/lf-bench-remote
port=$((20000 + $$ % 20000))
[ -x "$bench" ] || { echo "no $bench (build the lf-bench-remote target)" >&2; exit 1; }
command -v ucx_perftest >/dev/null || { echo "no ucx_perftest (Debian: ucx-utils)" >&2; exit 1; }

check_idle() {
  local s
  s=$( (pgrep -a lf-bench; pgrep -a ucx_perftest; pgrep -a fio; pgrep -a mpirun) 2>/dev/null || true)
  if [ -n "$s" ]; then
    echo "a benchmark process still runs, refusing to measure:" >&2
    echo "$s" >&2
    exit 1
  fi
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "-"}'; }

# perftest TLS TEST SIZE ITERS: prints "p50_us avg_us MBps" (the final line of -f).
perftest() {
  local tls=$1 test=$2 size=$3 n=$4 out srv
  check_idle
  UCX_TLS=$tls ucx_perftest -p "$port" -c 1 >/dev/null 2>&1 &
  srv=$!
  # Readiness, not ordering by time: wait until the server listens.
  for _ in $(seq 400); do
    ss -ltn 2>/dev/null | grep -q ":$port " && break
    sleep 0.02
  done
  out=$(UCX_TLS=$tls ucx_perftest 127.0.0.1 -p "$port" -c 0 -t "$test" -s "$size" -n "$n" -f 2>/dev/null | tail -1)
  wait "$srv" || true
  echo "$out" | awk '{print $2, $3, $6}'
}

# lavaflow TLS: prints "size lat_tcp lat_ucx" and "bw size bw_tcp bw_ucx" rows of one round.
lavaflow() {
  local tls=$1
  check_idle
  UCX_TLS=$tls LF_LOG_LEVEL=error "$bench" ucx --rounds 1 2>/dev/null | awk '
    /one-way latency/ {sec = "lat"; next}
    /bandwidth/ {sec = "bw"; next}
    /^#/ {next}
    $1 ~ /^[0-9]+$/ && sec == "lat" {print "lat", $1, $2, $3}
    $1 ~ /^[0-9]+$/ && sec == "bw" {print "bw", $1, $2, $3}'
}

echo "# bench-ucx: $(date -u +%FT%TZ), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg), rounds: $rounds"
echo "# UCX $(ucx_info -v | sed -n 's/# Version //p' | head -1)"
for tls in $tls_list; do
  tmp=$(mktemp -d)
  for r in $(seq "$rounds"); do
    run_lf() { lavaflow "$tls" >>"$tmp/lf"; }
    run_pt() {
      for t in tag_lat ucp_am_lat; do echo "$t $(perftest "$tls" $t 8 20000)" >>"$tmp/pt"; done
      for t in tag_bw ucp_am_bw; do
        echo "$t-1M $(perftest "$tls" $t 1048576 400)" >>"$tmp/pt"
        echo "$t-4M $(perftest "$tls" $t 4194304 100)" >>"$tmp/pt"
      done
    }
    if [ $((r % 2)) -eq 1 ]; then run_lf; run_pt; else run_pt; run_lf; fi
  done
  echo
  echo "## UCX_TLS=$tls (medians of $rounds rounds; load now: $(cut -d' ' -f1 /proc/loadavg))"
  printf "%-28s %12s %12s\n" "figure" "median" "(perftest avg)"
  printf "%-28s %12s\n" "lavaflow tcp 8 B lat us" "$(awk '$1 == "lat" && $2 == 8 {print $3}' "$tmp/lf" | median)"
  printf "%-28s %12s\n" "lavaflow ucx 8 B lat us" "$(awk '$1 == "lat" && $2 == 8 {print $4}' "$tmp/lf" | median)"
  for t in tag_lat ucp_am_lat; do
    printf "%-28s %12s %12s\n" "perftest $t 8 B us" "$(awk -v t=$t '$1 == t {print $2}' "$tmp/pt" | median)" \
      "$(awk -v t=$t '$1 == t {print $3}' "$tmp/pt" | median)"
  done
  for s in 1048576 4194304; do
    m=$((s >> 20))
    printf "%-28s %12s\n" "lavaflow tcp ${m} MiB GB/s" "$(awk -v s=$s '$1 == "bw" && $2 == s {print $3}' "$tmp/lf" | median)"
    printf "%-28s %12s\n" "lavaflow ucx ${m} MiB GB/s" "$(awk -v s=$s '$1 == "bw" && $2 == s {print $4}' "$tmp/lf" | median)"
    for t in tag_bw ucp_am_bw; do
      printf "%-28s %12s\n" "perftest $t ${m} MiB GB/s" \
        "$(awk -v t="$t-${m}M" '$1 == t {printf "%.3f\n", $4 * 1048576 / 1e9}' "$tmp/pt" | median)"
    done
  done
  rm -rf "$tmp"
done
