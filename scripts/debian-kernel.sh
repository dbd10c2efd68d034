#!/usr/bin/env bash
# Prints the directory where Debian 12's kernel package VERSION (6.1 or 6.12) is unpacked
# (boot/vmlinuz-*, lib/modules/*), fetching it once with apt-get download into a cache
# (XENKVM_VM_CACHE, default /var/cache/xenkvm-vm). 6.1 is linux-image-amd64, Debian's default
# (no CONFIG_KVM_XEN); 6.12 is the linux-image-6.12-amd64 backport (CONFIG_KVM_XEN=y). The same
# packages serve as the nested VM's host kernel (scripts/kvm-vm.sh) and as unmodified Linux
# guests (scripts/linux-guest.sh).
#
#   scripts/debian-kernel.sh 6.12   ->  /var/cache/xenkvm-vm/k6.12/root
set -euo pipefail
version=${1:?usage: debian-kernel.sh 6.1|6.12}
cache=${XENKVM_VM_CACHE:-/var/cache/xenkvm-vm}
case "$version" in
  6.1) meta=linux-image-amd64 ;;  # the cache as it always was
  6.12) meta=linux-image-6.12-amd64; cache="$cache/k6.12" ;;
  *) echo "debian-kernel: the version must be 6.1 or 6.12, not '$version'" >&2; exit 2 ;;
esac
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
$sudo mkdir -p "$cache"
if [ ! -f "$cache/ready" ]; then
  echo "debian-kernel: fetching Debian's $version kernel" >&2
  pkg=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
  if [ -z "$pkg" ]; then
    $sudo apt-get update -qq
    pkg=$(apt-cache depends "$meta" | sed -n 's/.*Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
  fi
  [ -n "$pkg" ] || { echo "debian-kernel: no linux-image package found for $meta" >&2; exit 2; }
  work=$(mktemp -d)
  (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || { $sudo apt-get update -qq; (cd "$work" && apt-get download "$pkg" >/dev/null); }
  $sudo rm -rf "$cache/root"
  $sudo dpkg-deb -x "$work"/*.deb "$cache/root"
  rm -rf "$work"
  $sudo touch "$cache/ready"
fi
echo "$cache/root"
