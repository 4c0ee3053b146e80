#!/usr/bin/env bash
# Cross-build the crate with the `dpdk` feature, its tests and its examples for
# aarch64-unknown-linux-gnu against Debian's arm64 DPDK packages, then run the library's
# unit tests and the lock-free ring tests under qemu-user.
#
# Debian's rustc-web (1.96) ships an arm64 standard library; clang links for aarch64 with
# binutils-aarch64-linux-gnu. DPDK's arm64 development files cannot be installed next to the
# amd64 ones (rdma-core and libfdt-dev are not co-installable), so they are unpacked into a
# sysroot that pkg-config, bindgen and the linker read.
#
# qemu-user runs the binaries with `-L /` (the arm64 glibc of libc6:arm64). A prefix such as
# /usr/aarch64-linux-gnu (libc6-arm64-cross) mixes two glibc builds (that loader with the
# multiarch libc.so.6) and hangs in pthread_create.
set -euo pipefail
cd "$(dirname "$0")/.."

work="${AARCH64_WORK:-/tmp/flextoe-aarch64}"
sysroot="$work/sysroot"
triple=aarch64-unknown-linux-gnu
mkdir -p "$work"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    rustc-web cargo-web libstd-rust-web-dev:arm64 binutils-aarch64-linux-gnu \
    libc6-dev:arm64 libgcc-12-dev:arm64 qemu-user-static clang pkg-config >/dev/null
fi

if [ ! -f "$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig/libdpdk.pc" ]; then
  echo "unpacking libdpdk-dev:arm64 and its dependencies into $sysroot"
  mkdir -p "$work/debs" "$sysroot"
  pkgs=$(apt-get install -s libdpdk-dev:arm64 2>/dev/null | awk '/^Inst /{print $2}' | grep ':arm64$' || true)
  if [ -z "$pkgs" ]; then
    echo "apt found no arm64 packages for libdpdk-dev:arm64" >&2
    exit 1
  fi
  (cd "$work/debs" && apt-get download $pkgs >/dev/null)
  for d in "$work"/debs/*.deb; do dpkg -x "$d" "$sysroot"; done
  # Absolute symlinks in the packages point into the host: point them into the sysroot.
  find "$sysroot" -type l -lname '/*' | while read -r l; do
    ln -sfn "$sysroot$(readlink "$l")" "$l"
  done
fi

libs="$sysroot/usr/lib/aarch64-linux-gnu:$sysroot/lib/aarch64-linux-gnu"
cat >"$work/aarch64-cc" <<CC
#!/bin/sh
exec clang --target=aarch64-linux-gnu -fuse-ld=bfd -Wl,-rpath-link,$libs "\$@"
CC
chmod +x "$work/aarch64-cc"

export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_AARCH64:-target/aarch64-cross}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$work/aarch64-cc"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L / -E LD_LIBRARY_PATH=$libs"
export CC_aarch64_unknown_linux_gnu="$work/aarch64-cc"
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR="$sysroot"
export PKG_CONFIG_LIBDIR="$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig:$sysroot/usr/share/pkgconfig"

echo "== cargo build --target $triple --features dpdk --tests --examples"
/usr/bin/cargo build --target "$triple" --features dpdk --tests --examples
echo "== unit tests and ring tests under qemu-aarch64"
/usr/bin/cargo test --target "$triple" --features dpdk --lib --test ring --test prop_reorder
