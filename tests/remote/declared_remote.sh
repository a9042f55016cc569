#!/bin/sh
# Under mpiexec: declare this rank's location so that ranks look like they
# run on different hosts (LF_LOCATION_FILE overrides hostname and boot id),
# then run the command. $1 = ranks per declared node; ranks r and s share a
# node when r / $1 == s / $1 (and then really are local to each other).
#   mpiexec -n 4 declared_remote.sh 2 lf_rank_worker stream
set -eu
per=$1
shift
r=${OMPI_COMM_WORLD_RANK:?run me under Open MPI mpiexec}
node=$((r / per))
file="${TMPDIR:-/tmp}/lf-declared-$$.json"
printf '{"hostname": "declared-node-%s", "boot_id": "00000000-0000-4000-8000-%012d"}\n' "$node" "$node" >"$file"
trap 'rm -f "$file"' EXIT
LF_LOCATION_FILE="$file" "$@"
