#!/usr/bin/env bash
# Runs a command where /dev/kvm works. With a usable /dev/kvm it runs the command directly.
# Without one (a host whose kernel is itself a guest and offers no KVM), it boots a throwaway
# Linux VM under QEMU's software emulation (TCG) with an emulated AMD-V CPU, loads Debian's
# kvm-amd module there (nested KVM), shares this machine's root file system read-write over 9p
# and runs the command inside, in the same working directory; its exit code comes back.
#
#   scripts/kvm-vm.sh ctest --preset release -L kvm
#
# Everything comes from Debian's packages (qemu-system-x86, busybox-static, a linux-image). The
# VM is slow (TCG: the VMM's own code runs ~10-30x slower than natively) but it is a real,
# unmodified KVM: hardware-KVM semantics, unlike a PVM host. Compare speed only inside one run.
# XENKVM_VM_MEM (MiB, default 4096) and XENKVM_VM_CPUS (default: nproc) size the VM.
# XENKVM_VM_KERNEL=6.1|6.12 (default 6.1) picks Debian 12's kernel for it: 6.1 is the default
# linux-image-amd64 (no CONFIG_KVM_XEN: KVM_CAP_XEN_HVM is 0), 6.12 the linux-image-6.12-amd64
# backport (CONFIG_KVM_XEN=y: KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL and KVM_EXIT_XEN exist). Each
# kernel has its own cache. XENKVM_FORCE_VM=1 uses the VM even where /dev/kvm works here (a PVM
# host's KVM is too slow for Linux guests and has no Xen support).
set -euo pipefail

kvm_usable() {
  [ -c /dev/kvm ] && python3 -c 'import os; os.close(os.open("/dev/kvm", os.O_RDWR))' 2>/dev/null
}
# The kind of KVM a command gets (docs/design.md, "Kinds of KVM"): PVM is KVM's software
# backend (kvm_pvm loaded); the nested VM reports itself from inside (XENKVM_IN_VM).
kvm_kind() {
  local xen  # KVM_CHECK_EXTENSION (0xae03) of KVM_CAP_XEN_HVM (38): its flags, 0 without
  xen=$(python3 -c 'import fcntl, os; print(hex(fcntl.ioctl(os.open("/dev/kvm", os.O_RDWR), 0xAE03, 38)))' 2>/dev/null || echo "?")
  xen="KVM_CAP_XEN_HVM $xen"
  if [ "${XENKVM_IN_VM:-}" = 1 ]; then echo "nested KVM in the QEMU TCG VM (Linux $(uname -r), $xen)"
  elif [ -d /sys/module/kvm_pvm ]; then echo "this machine's /dev/kvm: PVM ($xen)"
  else echo "this machine's /dev/kvm: hardware KVM ($xen)"; fi
}
if [ "${XENKVM_IN_VM:-}" = 1 ] || { [ "${XENKVM_FORCE_VM:-}" != 1 ] && kvm_usable; }; then
  echo "kvm-vm: running on $(kvm_kind)" >&2
  exec "$@"
fi

vm_kernel=${XENKVM_VM_KERNEL:-6.1}
case "$vm_kernel" in
  6.1 | 6.12) ;;
  *) echo "kvm-vm: XENKVM_VM_KERNEL must be 6.1 or 6.12, not '$vm_kernel'" >&2; exit 2 ;;
esac
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
if ((${#need[@]})); then
  echo "kvm-vm: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# A Debian kernel with kvm-amd and 9p as modules, unpacked once into a cache.
kroot=$("$(dirname "$0")/debian-kernel.sh" "$vm_kernel")
kver=$(ls "$kroot/lib/modules" | head -n1)
kernel="$kroot/boot/vmlinuz-$kver"
moddir="$kroot/lib/modules/$kver/kernel"

# The initramfs: busybox, the modules, and an init that runs the command from the shared root.
run=$(mktemp -d /tmp/xenkvm-vm.XXXXXX)
trap 'rm -rf "$run"' EXIT
mkdir -p "$run/initrd/bin" "$run/initrd/mod" "$run/initrd/host" "$run/initrd/proc" "$run/initrd/sys" "$run/initrd/dev"
cp /bin/busybox "$run/initrd/bin/"
# The modules for kvm-amd, virtio-pci and 9p and what they need, in load order (/mod/order).
"$(dirname "$0")/kmod-closure.py" "$moddir" "$run/initrd/mod" kvm-amd virtio_pci 9pnet_virtio 9p >"$run/initrd/mod/order"
cat >"$run/initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mod/order); do
  insmod /mod/$m.ko 2>/dev/null || echo "kvm-vm: module $m did not load"
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 hostroot /host
for d in proc sys dev; do mount --bind /$d /host/$d; done
mkdir -p /dev/pts  # devtmpfs has no pts/: ptys (tests drive the console through one) need it
mount -t devpts -o ptmxmode=0666 devpts /host/dev/pts 2>/dev/null && ln -sf pts/ptmx /dev/ptmx
# A tmpfs /dev/shm as on any Linux: unix sockets (the control socket tests) and disk images
# that punch holes (blkif discard) need a local filesystem; 9p can hold neither.
mkdir -p /dev/shm && mount -t tmpfs -o size=256m,mode=1777 tmpfs /host/dev/shm 2>/dev/null
job=$(sed -n 's/.*xenkvm_job=\([^ ]*\).*/\1/p' /proc/cmdline)
(while :; do date >/host/"$job"/heartbeat; sleep 10; done) &  # the host's stall detector
grep ' [tT] ' /proc/kallsyms >/host/"$job"/kallsyms 2>/dev/null  # names a stalled CPU's RIP
if [ -f /host/"$job"/watch ]; then  # XENKVM_VM_WATCH: a snapshot of the VM every 20 s
  watch=/host/$(cat /host/"$job"/watch)
  (while sleep 20; do
     { date; cat /proc/loadavg; top -b -n 1 | head -25; dmesg | tail -8; } >"$watch.tmp"
     mv "$watch.tmp" "$watch"
   done) &
fi
[ -c /dev/kvm ] || echo "kvm-vm: kvm-amd did not load: no /dev/kvm in the VM"
chroot /host /bin/sh "$job/job.sh"
echo $? > /host/"$job"/rc
sync
poweroff -f
EOF
chmod +x "$run/initrd/init"
(cd "$run/initrd" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$run/initrd.gz")

# XENKVM_VM_WATCH=PATH: the VM rewrites PATH every 20 s with its load, top processes and last
# kernel messages (to see inside a run that seems stuck).
if [ -n "${XENKVM_VM_WATCH:-}" ]; then realpath -m "$XENKVM_VM_WATCH" >"$run/watch"; fi
# The job: same directory, same environment variables that matter, the command's arguments.
{
  echo "export XENKVM_IN_VM=1 HOME=${HOME:-/root} PATH='$PATH' TERM=dumb"
  [ -n "${CI:-}" ] && echo "export CI='$CI'"
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} >"$run/job.sh"

mem=${XENKVM_VM_MEM:-4096}
cpus=${XENKVM_VM_CPUS:-$(nproc)}
why="no usable /dev/kvm here"; [ "${XENKVM_FORCE_VM:-}" = 1 ] && why="XENKVM_FORCE_VM=1"
echo "kvm-vm: $why: running in a nested-KVM VM (Linux $kver, QEMU TCG, $cpus vCPUs, $mem MiB)" >&2
# A hard limit on the whole VM run (XENKVM_VM_TIMEOUT seconds), so nothing can hang CI. The VM
# runs in its own process group, stopped with this script: a killed caller (a test timeout, ^C)
# must not leave an orphaned QEMU eating the machine's cores (--foreground keeps `timeout` in
# that group instead of its own).
# tsc=reliable: TCG's vCPU TSCs start unsynchronised, so the kernel would mark the TSC unstable;
# then KVM freezes a vCPU's TSC whenever it is out of KVM_RUN (docs/design.md, the guest clock)
# and the kernel's clock falls back to an emulated HPET.
#
# Single-threaded TCG (XENKVM_VM_TCG_THREADS=multi for one host thread per vCPU): with
# multi-threaded TCG the VM stalled in about one full kvm run in three (below; both CPUs caught
# in the kernel's int3 code patching or __schedule), and on this 2-core host single-threaded
# ran the snapshot and migration tests faster (56 s where multi took 46 s for one of them).
#
# A stalled VM: now and then (about once in ten full kvm runs) both of the VM's CPUs keep
# running while nothing inside makes progress any more, not even its own timers (a test's
# timeout, a `sleep`). So the VM beats a heartbeat file every 10 s; after XENKVM_VM_STALL seconds
# (default 240) without one, its CPUs' registers are shown, it is stopped, and the command runs
# once more in a fresh VM (docs/design.md, the nested-KVM VM).
stall=${XENKVM_VM_STALL:-240}
vm_group=""
trap '[ -z "$vm_group" ] || kill -TERM -- -"$vm_group" 2>/dev/null || true; rm -rf "$run"' EXIT
trap 'exit 143' TERM INT HUP

show_cpus() {  # the VM's CPUs as QEMU's monitor sees them (where each one is stuck)
  python3 - "$run/monitor" "$run/kallsyms" <<'PY' >&2 || true
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect(sys.argv[1])
s.sendall(b"info registers -a\n"); time.sleep(2); out = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk: break
        out += chunk
except OSError:
    pass
symbols = []  # the VM's kernel symbols (written at boot; nokaslr keeps them where they were)
try:
    for entry in open(sys.argv[2]):
        addr, kind, name = entry.split()[:3]
        if kind in "tT": symbols.append((int(addr, 16), name))
except OSError:
    pass
symbols.sort()
def symbol(rip):
    import bisect
    i = bisect.bisect_right(symbols, (rip, "~")) - 1
    return f" = {symbols[i][1]}+{rip - symbols[i][0]:#x}" if i >= 0 and rip - symbols[i][0] < 1 << 20 else ""
for line in out.decode(errors="replace").splitlines():
    if line.startswith(("CPU#", "RAX", "EAX", "RIP", "EIP", "CS ", "CR0", "EFER")):
        extra = symbol(int(line[4:20], 16)) if line.startswith("RIP=") else ""
        print("kvm-vm:  ", line + extra)
PY
}

boot_vm() {  # one VM run: 0 once it ended (its result in $run/rc, if any), 3 if it stalled
  rm -f "$run/rc" "$run/heartbeat" "$run/monitor"
  set -m
  (timeout --foreground -s KILL "${XENKVM_VM_TIMEOUT:-2400}" qemu-system-x86_64 -accel "tcg,thread=${XENKVM_VM_TCG_THREADS:-single}" -cpu max -smp "$cpus" -m "$mem" \
    -nographic -no-reboot -kernel "$kernel" -initrd "$run/initrd.gz" \
    -append "console=ttyS0 quiet loglevel=0 panic=-1 tsc=reliable nokaslr xenkvm_job=$run" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,multidevs=remap,id=hostroot \
    -monitor "unix:$run/monitor,server=on,wait=off" \
    </dev/null | sed -u -e 's/\r$//' -e '/^\x1b\[/d' -e '/SeaBIOS\|iPXE\|Booting from ROM\|^$/d') &
  vm_group=$!
  set +m
  local started beat
  started=$(date +%s)
  while kill -0 "$vm_group" 2>/dev/null; do
    sleep 5
    beat=$(stat -c %Y "$run/heartbeat" 2>/dev/null || echo "$started")
    if (($(date +%s) - beat > stall)); then
      echo "kvm-vm: the VM made no progress for ${stall} s (its own clock stood still); its CPUs:" >&2
      show_cpus
      kill -KILL -- -"$vm_group" 2>/dev/null || true
      wait "$vm_group" 2>/dev/null || true
      return 3
    fi
  done
  wait "$vm_group" || true
  return 0
}

status=0
boot_vm || status=$?
if [ "$status" = 3 ]; then
  echo "kvm-vm: running the command again in a fresh VM (once)" >&2
  status=0
  boot_vm || status=$?
  [ "$status" = 3 ] && { echo "kvm-vm: the VM stalled again" >&2; exit 125; }
fi
[ -f "$run/rc" ] || { echo "kvm-vm: the VM ended without a result" >&2; exit 125; }
exit "$(cat "$run/rc")"
