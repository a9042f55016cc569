#!/usr/bin/env bash
# The main job: installs what is missing, builds, then runs a real two-rank
# job under mpirun: each rank's location, the scope between the ranks, the
# transport chosen and why, and lavaflow's latency/bandwidth next to Open
# MPI's measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
scripts/build.sh
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np 2 --bind-to core)
echo
echo "=== lf-info (abridged)"
build/tools/lf-info | sed -n '1,/^# Tunables/p' | head -n -1
echo "=== demo: locations, scope and transport selection"
"${MPIRUN[@]}" build/examples/demo
echo
echo "=== a service and its clients by address (request channels; docs/rpc.md)"
# Two processes that were not launched together: the service listens, the
# client connects and authenticates with the shared token. On a Unix socket
# the two move onto shared memory; over TCP they stay on the stream.
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
svcdir=$(mktemp -d)
for address in "unix:$svcdir/service.sock" "tcp://127.0.0.1:0"; do
  rm -f "$svcdir/address"
  LF_EXEC_TOKEN=$token build/examples/rpc_service serve "$address" "$svcdir/address" &
  server=$!
  for _ in $(seq 200); do [ -s "$svcdir/address" ] && break; sleep 0.05; done
  LF_EXEC_TOKEN=$token build/examples/rpc_service call "$(cat "$svcdir/address")" 200
  wait "$server"
done
rm -rf "$svcdir"
if [ -x scripts/bench-compare.sh ]; then
  echo
  echo "=== lavaflow vs Open MPI, same machine, same run"
  scripts/bench-compare.sh
fi
