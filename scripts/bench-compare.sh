#!/usr/bin/env bash
# Run lf-bench (lavaflow, shm transport) and lf-bench-mpi (raw Open MPI) in
# the same run, alternating ROUNDS times so that both see the same machine
# state, and print the median of the per-round medians side by side with the
# ratios. Extra arguments go to both benchmarks (e.g. --max 1M --samples 31).
#
#   scripts/bench-compare.sh                    # build dir: ./build
#   BUILD_DIR=build-shm ROUNDS=5 scripts/bench-compare.sh --min 8 --max 4M
#
# Ratios: latency lf/mpi (below 1: lavaflow is faster), bandwidth lf/mpi
# (above 1: lavaflow is faster), zero copy lf-zc/mpi latency of the same size.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-3}
LF_BENCH=$BUILD_DIR/bench/lf-bench
MPI_BENCH=$BUILD_DIR/bench/lf-bench-mpi
for b in "$LF_BENCH" "$MPI_BENCH"; do
  [[ -x $b ]] || { echo "bench-compare: $b not built (cmake --build $BUILD_DIR --target lf-bench lf-bench-mpi)" >&2; exit 1; }
done
MPIRUN=(mpirun --allow-run-as-root -np 2 --bind-to core)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# lavaflow: ${MPIRUN[*]} -x LF_TRANSPORTS=shm $LF_BENCH --csv $*"
echo "# Open MPI: ${MPIRUN[*]} $MPI_BENCH --csv $*"
for ((r = 1; r <= ROUNDS; r++)); do
  "${MPIRUN[@]}" -x LF_TRANSPORTS=shm "$LF_BENCH" --csv "$@" >"$tmp/lf.$r"
  "${MPIRUN[@]}" "$MPI_BENCH" --csv "$@" >"$tmp/mpi.$r"
done
grep -h '^# ' "$tmp/lf.1" "$tmp/mpi.1" || true

# Rows are mode,bytes,median_us,p10_us,p90_us,GBps; keep the median of the
# per-round medians for each (source, mode, bytes).
cat "$tmp"/lf.* | grep -v '^#' | grep -v '^mode' | sed 's/^/lf,/' >"$tmp/all"
cat "$tmp"/mpi.* | grep -v '^#' | grep -v '^mode' | sed 's/^/mpi,/' >>"$tmp/all"
sort -t, -k1,1 -k2,2 -k3,3n -k4,4g "$tmp/all" | awk -F, '
  function flush() {
    if (n == 0) return
    m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    g = (n % 2) ? w[(n + 1) / 2] : (w[n / 2] + w[n / 2 + 1]) / 2
    print key "," m "," g
    n = 0
  }
  { k = $1 "," $2 "," $3; if (k != key) { flush(); key = k } n++; v[n] = $4; w[n] = $7 }
  END { flush() }' >"$tmp/med"

awk -F, '
  { us[$1 "," $2 "," $3] = $4; gb[$1 "," $2 "," $3] = $5; if (!($3 in seen)) { seen[$3] = 1; sizes[++ns] = $3 } }
  END {
    printf "%10s | %10s %10s %7s | %9s %9s %7s | %10s %7s\n", "bytes", "lf us", "mpi us", "lf/mpi", \
           "lf GB/s", "mpi GB/s", "lf/mpi", "lf-zc us", "zc/mpi"
    # sizes in ascending order
    for (i = 1; i <= ns; i++) for (j = i + 1; j <= ns; j++) if (sizes[j] + 0 < sizes[i] + 0) { t = sizes[i]; sizes[i] = sizes[j]; sizes[j] = t }
    for (i = 1; i <= ns; i++) {
      s = sizes[i]
      ll = us["lf,latency," s]; ml = us["mpi,latency," s]; lb = gb["lf,bw," s]; mb = gb["mpi,bw," s]; z = us["lf,zc," s]
      printf "%10s | %10s %10s %7s | %9s %9s %7s | %10s %7s\n", s, \
        ll == "" ? "-" : sprintf("%.3f", ll), ml == "" ? "-" : sprintf("%.3f", ml), \
        (ll == "" || ml == "") ? "-" : sprintf("%.2f", ll / ml), \
        lb == "" ? "-" : sprintf("%.2f", lb), mb == "" ? "-" : sprintf("%.2f", mb), \
        (lb == "" || mb == "" || mb == 0) ? "-" : sprintf("%.2f", lb / mb), \
        z == "" ? "-" : sprintf("%.3f", z), (z == "" || ml == "") ? "-" : sprintf("%.3f", z / ml)
    }
  }' "$tmp/med"
