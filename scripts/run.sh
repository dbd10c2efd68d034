#!/usr/bin/env bash
# The main job: build xenkvm and its bundled guests, then boot the demo guest on 4 vCPUs.
# Extra arguments go to `xenkvm run` (e.g. --vcpus 2, or a guest ELF of your own); --quiet
# hides the per-stage progress lines, --timeout ends a hung guest with a clear message. Where
# this machine has no usable /dev/kvm, the run happens in a nested-KVM VM (scripts/kvm-vm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target xenkvm xenkvm_guests
# Without a usable /dev/kvm here, kvm-vm.sh runs it inside a nested-KVM VM (slower, same result).
exec scripts/kvm-vm.sh build/release/cli/xenkvm run --stats --quiet --timeout 120 "$@"
