#!/usr/bin/env bash
# Reproduces a QEMU 7.2 (Debian) TCG live-migration bug without Ferry: two
# plain QEMU processes, the guest receives ~1000 UDP packets/s through slirp
# while a bandwidth-capped migration runs with downtime-limit 100 ms. The
# guest on the target often panics ("virtio_net ... is not a head!", then a
# NULL dereference). With QEMU's default 300 ms limit we saw no crash.
# Usage: scripts/repro-tcg-rx-migration.sh [RUNS]   (needs the guest image)
set -u
cd "$(dirname "$0")/.."
D=$(node --input-type=module -e "import('./dist/src/guest/image.js').then(m => console.log(m.findImage().dir))")
runs=${1:-3}
tmp=$(mktemp -d)
for i in $(seq "$runs"); do
  args=(-machine pc,accel=tcg -cpu qemu64 -m 256 -nodefaults -no-user-config -display none -no-reboot
        -kernel "$D/vmlinuz" -initrd "$D/initrd.img"
        -append "console=ttyS0 quiet panic=-1 ferry.ip=10.0.2.15/24 ferry.workload=memory:8"
        -device virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:99:00:01)
  qemu-system-x86_64 "${args[@]}" -netdev user,id=n0,hostfwd=udp:127.0.0.1:5555-:5555 \
    -serial "file:$tmp/src.log" -qmp "unix:/tmp/qsrc.sock,server=on,wait=off" &
  qemu-system-x86_64 "${args[@]}" -netdev user,id=n0 \
    -serial "file:$tmp/dst.log" -qmp "unix:/tmp/qdst.sock,server=on,wait=off" -incoming tcp:127.0.0.1:4444 &
  sleep 4
  python3 scripts/repro-tcg-rx-migration.py
  sleep 2
  echo "run $i: guest crashed on target: $(grep -c 'BUG\|not a head' "$tmp/dst.log")"
  pkill -f qsrc.sock; pkill -f qdst.sock; sleep 0.5
done
rm -rf "$tmp"
