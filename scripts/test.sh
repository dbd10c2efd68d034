#!/usr/bin/env bash
# All tests: unit tests (no hardware) and kvm tests (boot the guests) in a release build; the
# whole tree under Clang with its lock analysis (`clang` preset: -Wthread-safety -Werror); the
# same tests under ASan+UBSan; the engine and memory concurrency stress under TSan; each libFuzzer
# target briefly (FUZZ_SECONDS each, default 20) from its seed corpus. Each stage prints its
# duration. Where this machine has no usable /dev/kvm, the kvm tests run inside a nested-KVM VM
# (scripts/kvm-vm.sh), and on every machine once more in that VM on a host kernel with Xen
# support (XENKVM_VM_KERNEL=6.12); XENKVM_NO_VM=1 skips the VM runs instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
stage_start=$SECONDS
stage() { echo "== $1 (previous stage: $((SECONDS - stage_start)) s)"; stage_start=$SECONDS; }

stage "format: every C/C++ file matches .clang-format"
scripts/check-format.sh

stage "release: build, unit and kvm tests"
cmake --preset release >/dev/null
cmake --build --preset release
ctest --preset release -j2 -L unit
scripts/linux-guest.sh  # Debian's 6.1 and 6.12 kernels as guests for the kvm tests
if [ "${XENKVM_NO_VM:-}" = 1 ]; then
  ctest --preset release -j2 -L kvm   # skip visibly without /dev/kvm
else
  # One test at a time: the VM has 2 vCPUs and guests of up to 4 vCPUs run emulated there.
  scripts/kvm-vm.sh ctest --preset release -j1 -L kvm
fi

stage "kvm tests again on a host kernel with Xen support (nested VM, Debian's 6.12: CONFIG_KVM_XEN)"
# The release stage ran them on this machine's KVM (PVM or hardware: no kernel Xen support so
# far) or in the VM on Debian's default 6.1; this runs the host kind with KVM_CAP_XEN_HVM, where
# Linux-style hypercalls take KVM's intercept instead of the rewrite.
if [ "${XENKVM_NO_VM:-}" = 1 ]; then
  echo "kvm (6.12 host): XENKVM_NO_VM=1: skipped"
else
  XENKVM_FORCE_VM=1 XENKVM_VM_KERNEL=6.12 scripts/kvm-vm.sh ctest --preset release -j1 -L kvm
fi

stage "Linux guests on Debian's default 6.1 host kernel (nested VM), where the release stage ran on this machine's KVM"
# Where /dev/kvm works here the release stage booted the Linux guests on it (or skipped them
# on PVM, where they are too slow); this boots them on the 6.1 host kind (no CONFIG_KVM_XEN:
# the hypercall rewrite) too. Without /dev/kvm here the release stage already did.
if [ "${XENKVM_NO_VM:-}" = 1 ]; then
  echo "Linux guests (6.1 host): XENKVM_NO_VM=1: skipped"
elif python3 -c 'import os; os.close(os.open("/dev/kvm", os.O_RDWR))' 2>/dev/null; then
  XENKVM_FORCE_VM=1 XENKVM_VM_KERNEL=6.1 scripts/kvm-vm.sh ctest --preset release -j1 -R LinuxGuest
else
  echo "Linux guests (6.1 host): ran in the release stage's VM"
fi

stage "install: libxenkvm to a temporary prefix; examples/ built against it (CMake and pkg-config) and run"
prefix=$(mktemp -d)
cmake --install build/release --prefix "$prefix" >/dev/null
cmake -S examples -B "$prefix/example-build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/example-build"
"$prefix/example-build/two_devices"
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" cc -o "$prefix/two_devices_pc" examples/two_devices.c \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs xenkvm) -pthread
LD_LIBRARY_PATH="$prefix/lib" "$prefix/two_devices_pc"
rm -rf "$prefix"

stage "clang: the whole tree with the lock analysis (-Wthread-safety -Werror)"
cmake --preset clang >/dev/null
cmake --build --preset clang

stage "asan (ASan+UBSan): unit tests, and kvm tests where /dev/kvm is real"
cmake --preset asan >/dev/null
cmake --build --preset asan
ctest --preset asan -j2 -L unit
# Under the nested-KVM VM an ASan VMM runs ~50x slower than natively: guests outrun their
# timeouts there, so the kvm tests run under ASan only on a host with a usable /dev/kvm.
if [ -c /dev/kvm ] && python3 -c 'import os; os.close(os.open("/dev/kvm", os.O_RDWR))' 2>/dev/null; then
  ctest --preset asan -j2 -L kvm
else
  echo "asan: no usable /dev/kvm here: kvm tests under ASan skipped (they ran in the release stage)"
fi

stage "tsan: concurrency stress"
cmake --preset tsan >/dev/null
cmake --build --preset tsan --target evtchn_test mem_test capi_test
build/tsan/tests/mem/mem_test
build/tsan/tests/evtchn/evtchn_test
build/tsan/tests/capi/capi_test

stage "fuzz: each target for ${FUZZ_SECONDS:-10} s"
cmake --preset fuzz >/dev/null
targets=(evtchn_ops evtchn_fifo hypercall elf_loader xenstore blkif_requests control_protocol snapshot_loader
  migration_stream)
cmake --build --preset fuzz --target "${targets[@]/%/_fuzz}"
for t in "${targets[@]}"; do
  scratch=$(mktemp -d)  # new inputs go here; the checked-in corpus stays as it is
  status=0
  # No quarantine: freed memory is reused at once (fresh pages per run cost ~10x here).
  ASAN_OPTIONS=quarantine_size_mb=0 build/fuzz/fuzz/${t}_fuzz -max_total_time="${FUZZ_SECONDS:-10}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$scratch" "fuzz/corpus/$t" >"$scratch.log" 2>&1 || status=$?
  grep -E "^stat::number_of_executed_units|^#[0-9]+ +DONE|ERROR|SUMMARY" "$scratch.log" || true
  [ "$status" = 0 ] || { tail -n 40 "$scratch.log"; echo "fuzz target $t failed"; exit 1; }
  rm -rf "$scratch" "$scratch.log"
done
stage "done"
