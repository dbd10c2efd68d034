#!/usr/bin/env bash
# All tests: unit tests (no hardware) and kvm tests (boot the guests; they skip visibly where
# /dev/kvm is absent) in a release build, the whole tree under Clang with its lock analysis
# (-Wthread-safety -Werror, the `clang` preset) and its unit tests, then the engine and memory
# tests again under TSan.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -e /dev/kvm ] || echo "NOTE: /dev/kvm is absent: the kvm-labelled tests will be skipped."
cmake --preset release >/dev/null
cmake --build --preset release
ctest --preset release -j2
cmake --preset clang >/dev/null
cmake --build --preset clang
ctest --preset clang -L unit -j2
cmake --preset tsan >/dev/null
cmake --build --preset tsan --target evtchn_test mem_test
build/tsan/tests/mem/mem_test
build/tsan/tests/evtchn/evtchn_test
