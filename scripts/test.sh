#!/usr/bin/env bash
# The test command: installs what is missing, builds with warnings as errors,
# and runs every test with ctest; then runs the core/memory/channel and mpi
# transport tests again under AddressSanitizer, the channel and threaded ones
# under ThreadSanitizer, and everything in a build with every optional
# dependency OFF.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    main build only, no sanitizer builds, no stress label
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
JOBS=$(nproc)

scripts/setup-debian.sh

# Reserve a few 2 MiB hugepages so the hugetlbfs path runs for real (root only;
# without them those tests skip and say why).
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/nr_hugepages ]; then
  have=$(cat /proc/sys/vm/nr_hugepages)
  if [ "$have" -lt 16 ]; then echo 16 > /proc/sys/vm/nr_hugepages || true; fi
  echo "test: $(cat /proc/sys/vm/nr_hugepages) hugepages reserved"
fi

echo "=== build (warnings are errors)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAVAFLOW_WERROR=ON >/dev/null
cmake --build build -j "$JOBS"

echo "=== tests"
# soak: long on-demand runs (ctest -L soak), never part of this command.
EXCLUDE=(-LE soak)
[ $QUICK = 1 ] && EXCLUDE=(-LE 'stress|soak')
ctest --test-dir build --output-on-failure -j 2 "${EXCLUDE[@]}"

if [ $QUICK = 1 ]; then exit 0; fi

echo "=== AddressSanitizer build: core, memory, channel and mpi transport tests"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLAVAFLOW_WERROR=ON -DLAVAFLOW_SANITIZE=address \
  -DLAVAFLOW_BUILD_BENCH=OFF -DLAVAFLOW_BUILD_EXAMPLES=OFF -DLAVAFLOW_WITH_CUDA=OFF >/dev/null
cmake --build build-asan -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0:allocator_may_return_null=1 LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp ctest --test-dir build-asan --output-on-failure -j 2 -L 'core|memory|channel' -LE 'stress|mpi'
# The mpi transport under mpiexec: memory errors only (Open MPI itself leaks at exit).
ASAN_OPTIONS=detect_leaks=0 ctest --test-dir build-asan --output-on-failure -R '^MpiTransport\.'

echo "=== ThreadSanitizer build: channel tests and tests labelled tsan"
# MPI and UCX stay out: both are uninstrumented libraries with threads and
# signal handlers of their own (UCX's crash forked children under TSan), and
# their transports are tested in the other builds.
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLAVAFLOW_WERROR=ON -DLAVAFLOW_SANITIZE=thread \
  -DLAVAFLOW_BUILD_BENCH=OFF -DLAVAFLOW_BUILD_EXAMPLES=OFF -DLAVAFLOW_WITH_CUDA=OFF -DLAVAFLOW_WITH_MPI=OFF \
  -DLAVAFLOW_WITH_UCX=OFF >/dev/null
cmake --build build-tsan -j "$JOBS"
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure -j 2 -L 'tsan|channel' -LE stress

echo "=== Build with every optional dependency OFF: it must still build and pass its tests"
OFF=()
for dep in MPI CUDA VULKAN UCX DPDK NUMA HWLOC URING; do OFF+=(-DLAVAFLOW_WITH_$dep=OFF); done
cmake -S . -B build-off -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAVAFLOW_WERROR=ON -DLAVAFLOW_BUILD_BENCH=OFF \
  "${OFF[@]}" >/dev/null
cmake --build build-off -j "$JOBS"
ctest --test-dir build-off --output-on-failure -j 2 -LE stress
