#!/bin/sh
# Run a two-rank example (argument: its path) with the env bootstrap:
# exit 0 when both ranks succeed, 77 (skip) when either says it cannot run
# here, the failing rank's status otherwise.
set -u
boot="unix:/tmp/lf-gpu-example-$$"
LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP="$boot" LF_BOOTSTRAP_MODE=env LF_BOOTSTRAP_TIMEOUT=60 "$1" &
peer=$!
LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP="$boot" LF_BOOTSTRAP_MODE=env LF_BOOTSTRAP_TIMEOUT=60 "$1"
r0=$?
wait "$peer"
r1=$?
if [ "$r0" = 77 ] || [ "$r1" = 77 ]; then exit 77; fi
if [ "$r0" != 0 ]; then exit "$r0"; fi
exit "$r1"
