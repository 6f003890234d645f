#!/usr/bin/env bash
# Cross-builds the release binaries for an ARM board on Debian/Ubuntu x86_64:
#   scripts/cross.sh [--smoke] [TARGET]
# TARGET: aarch64-unknown-linux-gnu (default; Raspberry Pi OS 64-bit) or
# armv7-unknown-linux-gnueabihf (32-bit, Pi 2 and later). Installs what is
# missing (the rustup target, the cross gcc, qemu-user-static), builds
# `cargo build --release --locked --target TARGET`, prints the binaries'
# paths, sizes and `file` lines, and runs their --version under qemu-user.
# --smoke then runs scripts/smoke.sh against the ARM server under qemu-user
# (its children, the MCP servers, stay native); needs
# scripts/install-mcp-servers.sh to have run.
#
# The target's libssh and OpenSSL come from a sysroot, not from multiarch:
# `apt-get install libssh-dev:arm64` needs the very same version of every
# Multi-Arch: same package for both architectures, which a mirror between
# security updates often does not have (seen here: it refused, amd64 had
# libssh 0.10.6-0+deb12u3 and the arm64 list only deb12u2), and forcing it
# can take the native libssh-dev away. So the target's packages are
# downloaded with a private apt state (the system's dpkg and apt lists are
# not touched) and unpacked under $CARGO_TARGET_DIR/cross-sysroot/ARCH; the
# cross gcc links with --sysroot there and qemu runs the binary with -L there.
# Delete that directory to refresh it.
#
# CROSS_PROFILE=dev builds the debug profile instead of the shipped release
# one (fat LTO, opt-level "s"): a quicker check that the target compiles and
# links (CI's armv7 build). Thin LTO was tried for CI and cost more CPU time
# than fat here (6m08 against 4m25, aarch64, cold).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
if [ "${1:-}" = --smoke ]; then SMOKE=1; shift; fi
TARGET=${1:-aarch64-unknown-linux-gnu}
case $TARGET in
  aarch64-unknown-linux-gnu) ARCH=arm64 GNU=aarch64-linux-gnu QEMU=qemu-aarch64 ;;
  armv7-unknown-linux-gnueabihf) ARCH=armhf GNU=arm-linux-gnueabihf QEMU=qemu-arm ;;
  *) echo "cross.sh: unsupported target '$TARGET' (aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf)" >&2
     exit 2 ;;
esac
die() { echo "cross.sh: $*" >&2; exit 1; }
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

# 1. The Rust standard library for the target.
command -v rustup >/dev/null || die "rustup not found: the cross build needs rustup to add the $TARGET standard library"
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

# 2. Host tools: the cross gcc (compiler and linker), qemu-user, pkg-config.
# qemu-user-static has qemu-aarch64-static (bookworm); where it is gone,
# qemu-user's own qemu-aarch64 does the same.
need=()
for p in "gcc-$GNU" pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
want_qemu=0
command -v "$QEMU-static" >/dev/null || command -v "$QEMU" >/dev/null || want_qemu=1
if [ ${#need[@]} -gt 0 ] || [ "$want_qemu" = 1 ]; then
  $SUDO apt-get update -qq
  if [ "$want_qemu" = 1 ]; then
    cand=$(apt-cache policy qemu-user-static 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then need+=(qemu-user-static); else need+=(qemu-user); fi
  fi
  echo "installing: ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if command -v "$QEMU-static" >/dev/null; then QEMU=$QEMU-static; fi
command -v "$QEMU" >/dev/null || die "$QEMU not found after installing qemu-user"

# 3. The target's libraries in a sysroot (see the top of this file).
TDIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$TDIR"
TDIR=$(cd "$TDIR" && pwd)
SYSROOT=$TDIR/cross-sysroot/$ARCH
if [ ! -e "$SYSROOT/.complete" ]; then
  echo "cross.sh: building the $ARCH sysroot in $SYSROOT" >&2
  APTDIR=$TDIR/cross-sysroot/apt-$ARCH
  rm -rf "$SYSROOT" "$APTDIR"
  mkdir -p "$SYSROOT" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/debs"
  : > "$APTDIR/status"
  APT=(-q -o APT::Architecture="$ARCH" -o APT::Architectures::="$ARCH" -o Dir::State::Lists="$APTDIR/lists"
       -o Dir::State::status="$APTDIR/status" -o Dir::Cache="$APTDIR/cache" -o Debug::NoLocking=1
       -o Acquire::Languages=none -o APT::Sandbox::User=root)
  # A list that fails (a mirror mid-sync: seen here for armhf security) leaves
  # the others usable: go on with a warning, and leave the sysroot unmarked
  # so the next run builds it again.
  partial=0
  apt-get "${APT[@]}" update >/dev/null || { partial=1; echo "cross.sh: warning: some $ARCH package lists failed; going on with the rest" >&2; }
  # libssh-dev and libssl-dev with everything they depend on, libc included
  # (its headers and crt files: the cross gcc's own are only recommended).
  mapfile -t pkgs < <(apt-cache "${APT[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances libssh-dev libssl-dev libc6-dev | grep -v -e '^ ' -e '^<' | sort -u)
  [ ${#pkgs[@]} -gt 0 ] || die "no $ARCH packages found for libssh-dev (is the Debian mirror reachable?)"
  (cd "$APTDIR/debs" && apt-get "${APT[@]}" download "${pkgs[@]}" >/dev/null) || die "downloading the $ARCH packages failed"
  for deb in "$APTDIR"/debs/*.deb; do dpkg-deb -x "$deb" "$SYSROOT"; done
  # Absolute symlinks (libz.so -> /lib/...) would point at the host: make
  # them relative, inside the sysroot.
  while IFS= read -r link; do
    dest=$(readlink "$link")
    case $dest in /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$SYSROOT$dest")" "$link" ;; esac
  done < <(find "$SYSROOT" -type l)
  rm -rf "$APTDIR"
  [ "$partial" = 1 ] || printf '%s\n' "${pkgs[@]}" > "$SYSROOT/.complete"
fi

# 4. Point pkg-config, cc and rustc at the sysroot, for the target only.
T_=${TARGET//-/_}
TU=${T_^^}
export "PKG_CONFIG_ALLOW_CROSS_$T_=1"
export "PKG_CONFIG_SYSROOT_DIR_$T_=$SYSROOT"
export "PKG_CONFIG_LIBDIR_$T_=$SYSROOT/usr/lib/$GNU/pkgconfig:$SYSROOT/usr/share/pkgconfig"
export "CC_$T_=$GNU-gcc"
export "CFLAGS_$T_=--sysroot=$SYSROOT"
export "CARGO_TARGET_${TU}_LINKER=$GNU-gcc"
export "CARGO_TARGET_${TU}_RUSTFLAGS=-C link-arg=--sysroot=$SYSROOT"
# libssh-rs-sys silently compiles a vendored libssh WITHOUT the server
# functions when pkg-config cannot find libssh (link errors: undefined
# ssh_bind_*): check first, with the very environment the build sees.
for lib in 'libssh >= 0.9.7' openssl; do
  PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_SYSROOT_DIR="$SYSROOT" \
    PKG_CONFIG_LIBDIR="$SYSROOT/usr/lib/$GNU/pkgconfig:$SYSROOT/usr/share/pkgconfig" \
    pkg-config --exists "$lib" \
    || die "pkg-config does not find '$lib' for $TARGET in $SYSROOT: remove that directory and run again"
done

# 5. Build.
case ${CROSS_PROFILE:-release} in
  release) cargo build --release --locked --target "$TARGET"; OUT=$TDIR/$TARGET/release ;;
  dev) cargo build --locked --target "$TARGET" --bins; OUT=$TDIR/$TARGET/debug ;;
  *) die "CROSS_PROFILE must be release or dev, not '$CROSS_PROFILE'" ;;
esac
for b in m2m-mcp-server-ssh-server m2m-mcp-server-ssh-client; do
  [ -x "$OUT/$b" ] || die "missing $OUT/$b"
  echo "$OUT/$b: $(stat -c %s "$OUT/$b") bytes"
  file -b "$OUT/$b" 2>/dev/null || true
done
# 6. It runs (under qemu-user, with the sysroot's libssh and libc).
for b in m2m-mcp-server-ssh-server m2m-mcp-server-ssh-client; do
  v=$("$QEMU" -L "$SYSROOT" "$OUT/$b" --version) || die "$OUT/$b does not run under $QEMU"
  echo "under $QEMU: $v"
done
echo "run it here: $QEMU -L $SYSROOT $OUT/m2m-mcp-server-ssh-server --help"

# 7. The smoke test against the ARM server, under qemu-user.
if [ "$SMOKE" = 1 ]; then
  BIN=$OUT/m2m-mcp-server-ssh-server RUNNER="$QEMU -L $SYSROOT" SMOKE_TIME_SCALE=${SMOKE_TIME_SCALE:-4} \
    scripts/smoke.sh
fi
