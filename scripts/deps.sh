#!/usr/bin/env bash
# Installs the Debian packages xenkvm builds with (only those missing; apt-get update once).
set -euo pipefail
packages=(cmake make g++ gcc libc6-dev libxen-dev libexpected-dev libgtest-dev libgmock-dev
          googletest libbenchmark-dev libcli11-dev clang clang-format libclang-rt-14-dev python3
          nlohmann-json3-dev liburing-dev fio grub-xen-bin grub-xen-host grub-common e2fsprogs
          busybox-static
          pkg-config zlib1g-dev liblzma-dev libzstd-dev liblz4-dev libbz2-dev liblzo2-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
