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
echo
echo "=== remote execution: lf-execd and a client (docs/exec.md)"
# The same client twice: on the service's host over a Unix socket (shared
# memory; results fetched by descriptor), and from another namespace host
# over tcp (results pulled), where namespaces can be made.
rm -f "$svcdir/address"
serve_exec() { # HOST-RUNNER... ADDRESS: start lf-execd, wait for its address line
  "$@" > "$svcdir/execd.out" 2>&1 &
  execd=$!
  for _ in $(seq 200); do grep -q 'serving at' "$svcdir/execd.out" 2>/dev/null && break; sleep 0.05; done
  cat "$svcdir/execd.out"
  exec_addr=$(sed -n 's/.*serving at \([^ ]*\) on.*/\1/p' "$svcdir/execd.out")
}
serve_exec env LF_EXEC_TOKEN=$token build/tools/lf-execd "unix:$svcdir/exec.sock"
LF_EXEC_TOKEN=$token build/examples/remote_exec "$exec_addr"
kill -INT "$execd"; wait "$execd" || true
if scripts/netns-hosts.sh up -p lfdemo >/dev/null 2>&1; then
  h1=$(scripts/netns-hosts.sh addr -p lfdemo 1)
  serve_exec scripts/netns-hosts.sh exec -p lfdemo 1 env LF_EXEC_TOKEN=$token build/tools/lf-execd "tcp://$h1:0"
  scripts/netns-hosts.sh exec -p lfdemo 2 env LF_EXEC_TOKEN=$token build/examples/remote_exec "$exec_addr"
  kill -INT "$execd" 2>/dev/null || true
  scripts/netns-hosts.sh down -p lfdemo >/dev/null 2>&1 || true
else
  echo "(no namespace hosts here: the cross-host run is skipped)"
fi
rm -rf "$svcdir"
if [ -x scripts/bench-compare.sh ]; then
  echo
  echo "=== lavaflow vs Open MPI, same machine, same run"
  scripts/bench-compare.sh
fi
