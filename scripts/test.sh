#!/usr/bin/env bash
# All tests: unit tests (no hardware) and kvm tests (boot the guests) in a release build, then
# the engine and memory tests again under TSan. Where this machine has no usable /dev/kvm, the
# kvm tests run inside a nested-KVM VM (scripts/kvm-vm.sh); XENKVM_NO_VM=1 skips them instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
ctest --preset release -j2 -L unit
if [ "${XENKVM_NO_VM:-}" = 1 ]; then
  ctest --preset release -j2 -L kvm   # skip visibly without /dev/kvm
else
  scripts/kvm-vm.sh ctest --preset release -j2 -L kvm
fi
cmake --preset tsan >/dev/null
cmake --build --preset tsan --target evtchn_test mem_test
build/tsan/tests/mem/mem_test
build/tsan/tests/evtchn/evtchn_test
