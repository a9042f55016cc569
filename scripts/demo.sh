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
if [ -x scripts/bench-compare.sh ]; then
  echo
  echo "=== lavaflow vs Open MPI, same machine, same run"
  scripts/bench-compare.sh
fi
