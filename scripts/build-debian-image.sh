#!/usr/bin/env bash
# Builds a small bootable Debian 12 disk image from Debian's packages, with no
# internet access beyond the Debian mirror: a real OS to run on Ferry.
#
#   build-debian-image.sh CACHE_DIR   prints the image's path
#
# The image is cached in CACHE_DIR/debian/<digest of this script>/ and reused;
# a second build at the same time waits for the first (flock). What it holds:
#   - linux-image-cloud-amd64, systemd, udev, openssh-server, cloud-init
#     (NoCloud only), qemu-guest-agent, sudo, ifupdown;
#   - a 2 GiB raw disk with an MBR: partition 1 is FAT (type EF, active) with
#     the kernel and initrd, SYSLINUX for BIOS and a standalone GRUB as
#     \EFI\BOOT\BOOTX64.EFI for UEFI; partition 2 is the ext4 root.
# Nothing is mounted: the file systems are written from directories
# (mkfs.ext4 -d, mtools), so it runs where mounting is not allowed.
set -euo pipefail

cache=${1:?usage: build-debian-image.sh CACHE_DIR}
script_dir=$(cd "$(dirname "$0")" && pwd)
digest=$(sha256sum "$script_dir/$(basename "$0")" | cut -c1-12)
dir="$cache/debian/$digest"
image="$dir/debian-12.raw"
mkdir -p "$cache/debian"

exec 9>"$cache/debian/.lock"
flock 9
if [ -f "$image" ]; then
  echo "$image"
  exit 0
fi

say() { printf 'debian image: %s\n' "$*" >&2; }
for tool in mmdebstrap sfdisk mkfs.vfat mcopy syslinux grub-mkstandalone mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "debian image: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
[ -f /usr/lib/syslinux/mbr/mbr.bin ] || { echo "debian image: /usr/lib/syslinux/mbr/mbr.bin is missing (package syslinux-common)" >&2; exit 1; }
[ -d /usr/lib/grub/x86_64-efi ] || { echo "debian image: GRUB for UEFI is missing (package grub-efi-amd64-bin)" >&2; exit 1; }

work=$(mktemp -d "$cache/debian/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

say "installing Debian 12 into a directory (mmdebstrap)"
cat >"$work/customize.sh" <<'EOF'
#!/bin/sh
set -e
R="$1"
mkdir -p "$R/etc/cloud/cloud.cfg.d"
# Only the NoCloud seed Ferry attaches (or nothing): no probing for cloud metadata services.
# No locale module: the image has no locales package (update-locale would fail the run).
printf 'datasource_list: [ NoCloud, None ]\nlocale: false\n' >"$R/etc/cloud/cloud.cfg.d/90-ferry.cfg"
echo debian >"$R/etc/hostname"
# Every VM made from the image gets its own SSH host keys (cloud-init) and machine id (systemd, first boot).
rm -f "$R"/etc/ssh/ssh_host_*
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
# Periodic jobs a short-lived test VM does not need.
chroot "$R" systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
EOF
chmod +x "$work/customize.sh"
mmdebstrap --quiet --variant=minbase \
  --include=linux-image-cloud-amd64,systemd-sysv,udev,dbus,qemu-guest-agent,cloud-init,openssh-server,sudo,ifupdown,netbase,iproute2,e2fsprogs \
  --customize-hook="$work/customize.sh \"\$1\"" \
  bookworm "$root" http://deb.debian.org/debian >&2 ||
  {
    echo "debian image: mmdebstrap failed (can this host reach http://deb.debian.org/debian?)" >&2
    exit 1
  }

say "writing the disk"
disk="$work/disk.raw"
boot_start=2048
boot_sectors=131072 # 64 MiB
root_start=$((boot_start + boot_sectors))
size_bytes=$((2 * 1024 * 1024 * 1024))
root_uuid=$(cat /proc/sys/kernel/random/uuid)
truncate -s "$size_bytes" "$disk"
printf 'label: dos\nstart=%d, size=%d, type=ef, bootable\nstart=%d, type=83\n' "$boot_start" "$boot_sectors" "$root_start" | sfdisk -q "$disk"
echo "UUID=$root_uuid / ext4 errors=remount-ro 0 1" >"$root/etc/fstab"
cmdline="root=UUID=$root_uuid ro console=tty0 console=ttyS0,115200"

mkfs.vfat -F 16 -n FERRYBOOT --offset "$boot_start" "$disk" $((boot_sectors / 2)) >/dev/null 2>&1
at="$disk@@$((boot_start * 512))"
kernel=$(ls "$root"/boot/vmlinuz-*)
initrd=$(ls "$root"/boot/initrd.img-*)
printf 'DEFAULT debian\nPROMPT 0\nTIMEOUT 0\nLABEL debian\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND %s\n' "$cmdline" >"$work/syslinux.cfg"
printf 'set timeout=0\nsearch --no-floppy --label FERRYBOOT --set=root\nlinux /vmlinuz %s\ninitrd /initrd.img\nboot\n' "$cmdline" >"$work/grub.cfg"
grub-mkstandalone -O x86_64-efi -o "$work/BOOTX64.EFI" --modules="part_msdos fat linux normal search search_label" "boot/grub/grub.cfg=$work/grub.cfg"
mcopy -i "$at" "$kernel" ::/vmlinuz
mcopy -i "$at" "$initrd" ::/initrd.img
mcopy -i "$at" "$work/syslinux.cfg" ::/syslinux.cfg
mmd -i "$at" ::/EFI ::/EFI/BOOT
mcopy -i "$at" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
syslinux --offset $((boot_start * 512)) --install "$disk"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
root_bytes=$((size_bytes - root_start * 512))
mkfs.ext4 -q -U "$root_uuid" -L root -d "$root" -E offset=$((root_start * 512)) "$disk" $((root_bytes / 1024))k

mkdir -p "$dir"
printf '{ "release": "bookworm", "kernel": "%s", "builtAt": "%s" }\n' "$(basename "$kernel" | sed 's/^vmlinuz-//')" "$(date -u +%FT%TZ)" >"$dir/manifest.json"
mv "$disk" "$image"
say "ready: $image"
echo "$image"
