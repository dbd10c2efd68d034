#!/usr/bin/env bash
# Builds an unmodified Debian Linux guest for the kvm tests (tests/kvm/linux_test.cc) in
# build/linux-guest/VERSION/, for each VERSION given (6.1, 6.12; default both):
#   vmlinuz     Debian's kernel as shipped (scripts/debian-kernel.sh)
#   initrd.gz   busybox-static, the package's xen-blkfront and ext4 modules and what they need,
#               and an init that loads them, mounts /dev/xvda and switch_roots to it
#   root.ext4   the root file system: busybox and an init that reports what it sees (CPUs,
#               clocksource, its root device, the Xen devices, /from-host if the test put
#               one there), writes /from-guest on its root and a marker to /dev/xvdb
#               and ticks (console, /dev/xvdb) until xenstore control/shutdown (`xl shutdown`)
#               asks it to power off
# Needs busybox-static, e2fsprogs (mke2fs -d) and cpio-capable busybox; scripts/deps.sh
# installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@"); ((${#versions[@]})) || versions=(6.1 6.12)
for version in "${versions[@]}"; do
  out=build/linux-guest/$version
  kroot=$(scripts/debian-kernel.sh "$version")
  kver=$(ls "$kroot/lib/modules" | head -n1)
  # Built once per kernel and version of this script.
  stamp="$kver $(sha1sum <"$0" | cut -c1-12)"
  if [ -f "$out/ready" ] && [ "$(cat "$out/ready")" = "$stamp" ]; then continue; fi
  rm -rf "$out"
  mkdir -p "$out"
  work=$(mktemp -d)
  mkdir -p "$work/initrd/bin" "$work/initrd/mod" "$work/initrd/proc" "$work/initrd/sys" \
    "$work/initrd/dev" "$work/initrd/newroot" "$work/root/bin" "$work/root/sbin" \
    "$work/root/proc" "$work/root/sys" "$work/root/dev" \
    "$work/root/usr/bin" "$work/root/usr/sbin"
  cp /bin/busybox "$work/initrd/bin/"
  cp /bin/busybox "$work/root/bin/"
  scripts/kmod-closure.py "$kroot/lib/modules/$kver/kernel" "$work/initrd/mod" \
    xen-blkfront ext4 crc32c_generic >"$work/initrd/mod/order"
  echo "linux-guest: $version: modules $(cat "$work/initrd/mod/order")" >&2
  cat >"$work/initrd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "linux-guest: initramfs: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus"
for m in $(cat /mod/order); do
  insmod /mod/$m.ko || echo "linux-guest: module $m did not load"
done
i=0
while [ ! -b /dev/xvda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if mount -t ext4 /dev/xvda /newroot; then
  umount /proc /sys /dev
  exec switch_root /newroot /sbin/init
fi
echo "linux-guest: FAIL: no root on /dev/xvda"
poweroff -f
INIT
  cat >"$work/root/sbin/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s  # applets where they belong: the kernel's orderly_poweroff runs /sbin/poweroff
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "linux-guest: rootfs: $(awk '$2 == "/" { print $1, $3 }' /proc/mounts)"
echo "linux-guest: cpus online $(cat /sys/devices/system/cpu/online)"
echo "linux-guest: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "linux-guest: xen devices $(ls /sys/bus/xen/devices | tr '\n' ' ')"
echo "linux-guest: uptime $(cut -d' ' -f1 /proc/uptime)"
[ -f /from-host ] && echo "linux-guest: from the host: $(cat /from-host)"
echo "written by $(uname -r) at uptime $(cut -d' ' -f1 /proc/uptime)" >/from-guest
echo "xenkvm-linux-guest-wrote-this $(uname -r)" | dd of=/dev/xvdb bs=512 conv=sync,fsync 2>/dev/null &&
  echo "linux-guest: wrote xvdb"
sync
# `xl shutdown`: xenstore control/shutdown = poweroff; Linux's drivers/xen/manage.c runs
# /sbin/poweroff, which asks init (us) with SIGUSR2.
# Meanwhile a tick a second, on the console and in /dev/xvdb's second sector: a guest saved and
# restored elsewhere shows its timers, console and disk going on.
trap 'echo "linux-guest: init asked to power off"; sync; poweroff -f' USR2
echo "linux-guest: waiting for control/shutdown"
n=0
while :; do
  sleep 1
  n=$((n + 1))
  echo "tick $n" | dd of=/dev/xvdb bs=512 seek=1 conv=sync,fsync 2>/dev/null
  echo "linux-guest: tick $n"
done
INIT
  chmod +x "$work/initrd/init" "$work/root/sbin/init"
  (cd "$work/initrd" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9 >"$OLDPWD/$out/initrd.gz")
  mke2fs -q -t ext4 -d "$work/root" -L xenkvm-root "$out/root.ext4" 32M >/dev/null
  cp "$kroot/boot/vmlinuz-$kver" "$out/vmlinuz"
  echo "$kver" >"$out/kernel-release"
  echo "$stamp" >"$out/ready"
  rm -rf "$work"
  echo "linux-guest: $out: Linux $kver" >&2
done
