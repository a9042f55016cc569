#!/usr/bin/env bash
# Collectives side by side: lf-bench-coll (lavaflow over shm) and
# lf-bench-coll-mpi (Open MPI's coll/tuned), both under
#   mpirun --allow-run-as-root -np 2 --bind-to core
# alternating ROUNDS times (default 5) so that both see the same machine
# state; prints the median of the per-round medians with the ratio, and the
# cache-line floor each program measured in the same run.
#
#   BUILD_DIR=build-coll ROUNDS=5 scripts/bench-coll.sh [--max 16777216] [--samples 11]
#
# Ratio: lf/mpi time (below 1: lavaflow is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-5}
NP=${NP:-2}
LF_BENCH=$BUILD_DIR/bench/lf-bench-coll
MPI_BENCH=$BUILD_DIR/bench/lf-bench-coll-mpi
for b in "$LF_BENCH" "$MPI_BENCH"; do
  [[ -x $b ]] || { echo "bench-coll: $b not built (cmake --build $BUILD_DIR --target lf-bench-coll lf-bench-coll-mpi)" >&2; exit 1; }
done
# Process names, not command lines: a build of an lf-bench target is no benchmark.
if pgrep lf-bench >/dev/null || pgrep -x mpirun >/dev/null; then
  echo "bench-coll: another benchmark still runs:" >&2
  pgrep -a lf-bench >&2 || true
  pgrep -ax mpirun >&2 || true
  exit 1
fi
MPIRUN=(mpirun --allow-run-as-root -np "$NP" --bind-to core)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# lavaflow: ${MPIRUN[*]} -x LF_TRANSPORTS=shm $LF_BENCH --csv $*"
echo "# Open MPI: ${MPIRUN[*]} $MPI_BENCH --csv $*"
for ((r = 1; r <= ROUNDS; r++)); do
  "${MPIRUN[@]}" -x LF_TRANSPORTS=shm "$LF_BENCH" --csv "$@" >"$tmp/lf.$r"
  "${MPIRUN[@]}" "$MPI_BENCH" --csv "$@" >"$tmp/mpi.$r"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Rows are op,bytes,median_us,p10_us,p90_us: the median over rounds of each
# (source, op, bytes) row's median.
{
  grep -hv '^op' "$tmp"/lf.* | sed 's/^/lf,/'
  grep -hv '^op' "$tmp"/mpi.* | sed 's/^/mpi,/'
} | sort -t, -k1,1 -k2,2 -k3,3n -k4,4g | awk -F, '
  function flush() {
    if (n == 0) return
    m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    print key "," m
    n = 0
  }
  { k = $1 "," $2 "," $3; if (k != key) { flush(); key = k } n++; v[n] = $4 }
  END { flush() }' >"$tmp/med"

awk -F, '
  { t[$1 "," $2 "," $3] = $4; if (!(($2 "," $3) in seen)) { seen[$2 "," $3] = 1; rows[++nr] = $2 "," $3 } }
  END {
    printf "%-10s %10s | %10s %10s %7s\n", "op", "bytes", "lf us", "mpi us", "lf/mpi"
    for (i = 1; i <= nr; i++) {
      split(rows[i], p, ",")
      l = t["lf," rows[i]]; m = t["mpi," rows[i]]
      printf "%-10s %10s | %10s %10s %7s\n", p[1], p[2], l == "" ? "-" : sprintf("%.3f", l), \
        m == "" ? "-" : sprintf("%.3f", m), (l == "" || m == "" || m == 0) ? "-" : sprintf("%.2f", l / m)
    }
  }' "$tmp/med" | awk 'NR == 1 { print; next } { print | "sort -k1,1 -k2,2n" }'
