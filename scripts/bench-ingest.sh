#!/usr/bin/env bash
# lf-bench-ingest side by side with fio on the same file, with the same block
# size, queue depth and direct setting, alternating, ROUNDS rounds, medians.
# Readers are pinned to CPU 0 (taskset); file -> peer puts rank 0 on CPU 0 and
# rank 1 on CPU 1. The hardware floor of a page-cache read (memcpy in bs
# pieces) and lavaflow's tcp bandwidth at bs (lf-bench) are measured in the
# same run.
#
#   scripts/bench-ingest.sh                      # build dir: ./build
#   BUILD_DIR=build-ingest ROUNDS=5 BS=1M QD=8 scripts/bench-ingest.sh
#
# FILE (default /tmp/lf-ingest-bench.bin, 1 GiB of random bytes, made if
# missing) must be on a filesystem with O_DIRECT for the direct rows. The
# buffered rows read it from the page cache (fio --invalidate=0, and the file
# is read once before), the direct rows from the device.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-5}
BS=${BS:-1M}
QD=${QD:-8}
RING=${RING:-$((2 * QD))}
FILE=${FILE:-/tmp/lf-ingest-bench.bin}
SIZE=${SIZE:-1G}
LF=$BUILD_DIR/bench/lf-bench-ingest
LFB=$BUILD_DIR/bench/lf-bench
[[ -x $LF ]] || { echo "bench-ingest: $LF not built (cmake --build $BUILD_DIR --target lf-bench-ingest)" >&2; exit 1; }
command -v fio >/dev/null || { echo "bench-ingest: fio not installed (scripts/setup-debian.sh)" >&2; exit 1; }
if [[ ! -f $FILE ]]; then
  head -c "$SIZE" /dev/urandom >"$FILE"
fi
cat "$FILE" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fio_gbps() {  # engine direct [extra fio options]
  local engine=$1 direct=$2
  shift 2
  taskset -c 0 fio --name=ingest --filename="$FILE" --rw=read --bs="$BS" --ioengine="$engine" --iodepth="$QD" \
    --direct="$direct" --invalidate=0 --output-format=json --output="$tmp/fio.json" "$@" >/dev/null 2>&1
  python3 -c "import json,sys; print('%.3f' % (json.load(open(sys.argv[1]))['jobs'][0]['read']['bw_bytes'] / 1e9))" \
    "$tmp/fio.json"
}
# Each lavaflow line is "<mode> <GB/s> cpu <GB per CPU second> ...": the
# second figure (bytes over the reading thread's own CPU time) holds on a
# loaded machine, where the first also counts the time spent waiting for a
# CPU or for the peer; it goes to $tmp/<file>.cpu.
lf_read() {  # direct file
  taskset -c 0 "$LF" read --file "$FILE" --bs "$BS" --qd "$QD" --ring "$RING" --direct "$1" 2>>"$tmp/paths" |
    awk -v cpu="$tmp/$2.cpu" '{print $2; print $4 >>cpu}' >>"$tmp/$2"
}
lf_send() {  # transport kind file
  LF_BENCH_BIND=0,1 "$LF" send --file "$FILE" --bs "$BS" --qd "$QD" --ring "$RING" --transport "$1" --kind "$2" \
    2>>"$tmp/paths" | awk -v cpu="$tmp/$3.cpu" '{print $2; print $4 >>cpu}' >>"$tmp/$3"
}
tcp_bw() {
  LF_TRANSPORTS=tcp "$LFB" --fork --bind --mode bw --min "$BS" --max "$BS" --csv 2>/dev/null |
    awk -F, '$1 == "bw" {print $6}'
}
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# file $FILE ($(stat -c %s "$FILE") bytes), bs $BS, queue depth $QD, ring $RING, $ROUNDS rounds alternating"
for ((r = 1; r <= ROUNDS; r++)); do
  for d in 0 1; do
    lf_read "$d" "lf.$d"
    fio_gbps io_uring "$d" >>"$tmp/fio_uring.$d"
    fio_gbps io_uring "$d" --fixedbufs=1 >>"$tmp/fio_fixed.$d"
    fio_gbps psync "$d" --iodepth=1 >>"$tmp/fio_psync.$d"
  done
  "$LF" memcpy --bs "$BS" --bytes "$SIZE" | awk '{print $2}' >>"$tmp/memcpy"
  lf_send shm host-shared send_shm
  lf_read 0 lf_for_send
  lf_send tcp host send_tcp
  tcp_bw >>"$tmp/tcp_bw" || true
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -v '^recv:' "$tmp/paths" | sort -u | sed 's/^/# /'

m() { median <"$tmp/$1"; }
printf "%-34s %8s %8s %8s %8s %8s %8s\n" "read (GB/s, median)" "lf" "fio-ur" "fio-fix" "psync" "lf/ur" "lf/psync"
for d in 0 1; do
  lf=$(m lf.$d); ur=$(m fio_uring.$d); fx=$(m fio_fixed.$d); ps=$(m fio_psync.$d)
  printf "%-34s %8s %8s %8s %8s %8.2f %8.2f\n" "$([[ $d == 1 ]] && echo "O_DIRECT" || echo "buffered (page cache)")" \
    "$lf" "$ur" "$fx" "$ps" "$(echo "$lf / $ur" | bc -l)" "$(echo "$lf / $ps" | bc -l)"
done
mc=$(m memcpy)
echo "memcpy floor in $BS pieces: $mc GB/s"
rd=$(m lf_for_send); shm=$(m send_shm); tcp=$(m send_tcp)
tb=$( [[ -s $tmp/tcp_bw ]] && m tcp_bw || echo "")
printf "file -> peer over shm (host-shared chunks): %s GB/s = %.2f of read-only %s\n" "$shm" "$(echo "$shm / $rd" | bc -l)" "$rd"
if [[ -n $tb ]]; then
  lim=$(echo "if ($rd < $tb) $rd else $tb" | bc -l)
  printf "file -> peer over tcp: %s GB/s = %.2f of min(read %s, tcp %s)\n" "$tcp" "$(echo "$tcp / $lim" | bc -l)" "$rd" "$tb"
else
  echo "file -> peer over tcp: $tcp GB/s (lf-bench not built: no tcp floor)"
fi
printf "lavaflow GB per CPU second of the reading thread (medians): read %s, file -> peer shm %s, tcp %s\n" \
  "$(m lf_for_send.cpu)" "$(m send_shm.cpu)" "$(m send_tcp.cpu)"
for f in "$tmp"/*; do
  [[ $f == */paths || $f == */fio.json ]] && continue
  echo "# rounds $(basename "$f"): $(tr '\n' ' ' <"$f")"
done
