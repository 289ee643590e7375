#!/usr/bin/env bash
# Installs whatever is missing for Ferry to run, and skips what is there:
# Debian packages, npm dependencies, the TypeScript build, the guest image.
# `npm run demo` and `npm test` both start with it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# etcd-server: the cluster store of real hosts (tests start their own members; the
# package's own service is not started). e2fsprogs: the tests' small file systems.
# iputils-ping: the lab client pings VMs every few milliseconds; tcpdump: it watches the announce after a move.
# xorriso, fdisk: the image library's tests make real ISOs and partitioned raw disks.
# ovmf: UEFI firmware for VMs (--firmware uefi). mmdebstrap, dosfstools, mtools, syslinux, grub-efi-amd64-bin:
# ferry image build debian. grub-pc-bin: the tests' bootable ISO (grub-mkrescue). openssh-client: SSH into guests.
packages=(qemu-system-x86 qemu-utils busybox-static iproute2 gcc libc6-dev etcd-server e2fsprogs iputils-ping tcpdump xorriso fdisk
  ovmf mmdebstrap dosfstools mtools syslinux syslinux-common grub-efi-amd64-bin grub-pc-bin openssh-client)
[ "${FERRY_SETUP_CHROMIUM:-0}" = 1 ] && packages+=(chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The guest kernel is fetched with apt-get download, which needs package lists.
lists_ok=1
apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 || lists_ok=0
if [ ${#missing[@]} -gt 0 ] || [ $lists_ok = 0 ]; then
  say "installing Debian packages: ${missing[*]:-(package lists only)}"
  as_root apt-get update -q >&2
  if [ ${#missing[@]} -gt 0 ]; then
    # Packages must not start services here (etcd-server would start a member on :2379): invoke-rc.d asks policy-rc.d.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" && own_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    [ $own_policy = 1 ] && as_root rm -f "$policy"
  fi
fi

# QEMU 7.2 (Debian 12's own) loses guest writes during TCG live migration
# (docs/known-issues.md: guests panic after a migration under network load).
# Debian 12 ships QEMU 10 in bookworm-backports, which did not: use it.
qemu_major=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p')
if [ "${qemu_major:-0}" -lt 10 ] && grep -q '^12' /etc/debian_version 2>/dev/null; then
  say "installing QEMU from bookworm-backports (found ${qemu_major:-none})"
  list=/etc/apt/sources.list.d/ferry-bookworm-backports.list
  [ -f "$list" ] || echo 'deb http://deb.debian.org/debian bookworm-backports main' | as_root tee "$list" >/dev/null
  as_root apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t bookworm-backports qemu-system-x86 qemu-utils >&2
fi

# The tests' Debian image (FERRY_SETUP_DEBIAN=1, from npm test): built beside the npm install and the build, which
# barely use the network, and waited for at the end. Cached: a second run finds it at once.
debian_pid=
if [ "${FERRY_SETUP_DEBIAN:-0}" = 1 ]; then
  debian_log=$(mktemp)
  bash scripts/build-debian-image.sh "${FERRY_CACHE:-$HOME/.cache/ferry}" >/dev/null 2>"$debian_log" &
  debian_pid=$!
fi

# npm dependencies without their install scripts first, then the scripts. better-sqlite3's compiles SQLite (a
# minute and a half on one core), so it runs beside the TypeScript build and the guest image below; it leaves
# its exit status and log in node_modules/.ferry-native. Setup waits for it at the end, unless
# FERRY_SETUP_NATIVE_LATER=1 (npm test: the lint runs meanwhile, and run-tests.mjs waits before the unit tests).
native=node_modules/.ferry-native
if [ ! -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ] || [ ! -d node_modules/typescript ] || [ ! -d node_modules/playwright-core ] || [ package.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  if [ -f package-lock.json ]; then npm ci --ignore-scripts --no-audit --no-fund >&2; else npm install --ignore-scripts --no-audit --no-fund >&2; fi
  rm -rf "$native" && mkdir -p "$native"
  (
    status=0
    npm rebuild better-sqlite3 >"$native/log" 2>&1 || status=$?
    echo "$status" >"$native/status.tmp" && mv "$native/status.tmp" "$native/status"
  ) &
  npm rebuild esbuild protobufjs >&2
fi

stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find src test bench scripts/build-console.mjs scripts/bundle.mjs tsconfig.json package.json -newer "$stamp" -type f 2>/dev/null | head -1)" ]; then
  say "building"
  rm -rf dist
  npm run --silent build >&2
  touch "$stamp"
fi

node --input-type=module -e "
import { findImage, ensureImage } from './dist/src/guest/image.js';
if (!findImage()) { await ensureImage((l) => process.stderr.write('setup: ' + l + '\n')); }
"

if [ -d "$native" ] && [ "${FERRY_SETUP_NATIVE_LATER:-0}" != 1 ]; then
  for _ in $(seq 3000); do [ -f "$native/status" ] && break; sleep 0.2; done
  if [ "$(cat "$native/status" 2>/dev/null)" != 0 ]; then
    cat "$native/log" >&2
    say "building better-sqlite3 failed"
    exit 1
  fi
  rm -rf "$native"
fi

if [ -n "$debian_pid" ]; then
  if ! wait "$debian_pid"; then
    cat "$debian_log" >&2
    say "the Debian image build failed"
    exit 1
  fi
  grep '^debian image: ready' "$debian_log" | sed 's/^/setup: /' >&2 || true
  rm -f "$debian_log"
fi
