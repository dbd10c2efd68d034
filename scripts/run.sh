#!/usr/bin/env bash
# The main job: build xenkvm and its bundled guests, then boot the demo guest on 4 vCPUs.
# Extra arguments go to `xenkvm run` (e.g. --vcpus 2, or a guest ELF of your own); --quiet
# hides the per-stage progress lines, --timeout ends a hung guest with a clear message.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target xenkvm xenkvm_guests
exec build/release/cli/xenkvm run --stats --quiet --timeout 120 "$@"
