#!/usr/bin/env bash
# Installs every Debian 12 package lavaflow builds, tests or benchmarks with.
# Idempotent; run as root (or with sudo available).
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  clang clang-format libclang-rt-14-dev          # fuzzing, formatting checks
  libgtest-dev libgmock-dev libbenchmark-dev     # tests and benchmarks
  nlohmann-json3-dev libdlpack-dev               # location files, DLPack export
  libssl-dev                                     # HMAC for the job key
  openmpi-bin libopenmpi-dev                     # MPI bootstrap and transport
  libvulkan-dev mesa-vulkan-drivers vulkan-tools glslang-tools   # Vulkan (lavapipe on CPU)
  libhwloc-dev hwloc libnuma-dev numactl         # topology, NUMA memory
  libdpdk-dev dpdk libucx-dev ucx-utils liburing-dev fio   # fio: scripts/bench-ingest.sh's yardstick
  iproute2 util-linux procps                     # namespace "hosts" for multi-host tests
  python3-dev python3-numpy python3-pytest pybind11-dev python3-mpi4py   # Python bindings, their tests and benchmark
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi
