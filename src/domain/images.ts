/**
 * The image library (R-guests): disk images and installer ISOs on the shared
 * volume that VMs are made from. An image's format is what its bytes say
 * (qemu-img's probe, an ISO 9660 signature, a partition table), never its
 * file name; a file that is none of qcow2, a raw disk or an ISO is refused.
 */

export const IMAGE_FORMATS = ['qcow2', 'raw', 'iso'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

export interface ImageRecord {
  name: string;
  format: ImageFormat;
  /** Where the library keeps it: `SHARED/images/NAME.FORMAT`. */
  file: string;
  virtualSizeBytes: number;
  /** Bytes it takes on the volume. */
  sizeBytes: number;
  /** The file it was imported from. */
  source: string;
  importedAtMs: number;
}

/** What qemu-img says of a file, and its first bytes (up to 0x8006, for the ISO 9660 signature). */
export interface ImageProbe {
  format: string;
  virtualSizeBytes: number;
  backingFile?: string;
  head: Uint8Array;
}

const ISO_SIGNATURE_AT = 0x8001;

function bytesAt(head: Uint8Array, at: number, text: string): boolean {
  if (head.length < at + text.length) return false;
  for (let i = 0; i < text.length; i++) if (head[at + i] !== text.charCodeAt(i)) return false;
  return true;
}

/** The library format of a probed file, or why it is not an image (one line). */
export function classifyImage(file: string, p: ImageProbe): ImageFormat | { error: string } {
  if (p.format === 'qcow2') {
    if (p.backingFile) return { error: `${file} is a qcow2 image over a backing file (${p.backingFile}); flatten it first (qemu-img convert -O qcow2)` };
    return 'qcow2';
  }
  if (p.format !== 'raw') return { error: `${file} is a ${p.format} image; the library takes qcow2, raw disks and ISOs (qemu-img convert -O qcow2 makes one)` };
  if (bytesAt(p.head, ISO_SIGNATURE_AT, 'CD001')) return 'iso';
  // A raw disk has a partition table: an MBR's boot signature, or a GPT header in its second sector.
  const mbr = p.head.length >= 512 && p.head[510] === 0x55 && p.head[511] === 0xaa;
  if (mbr || bytesAt(p.head, 512, 'EFI PART')) return 'raw';
  return { error: `${file} is not a disk image or an ISO (no qcow2 header, partition table or ISO 9660 signature)` };
}

export const IMAGE_HEAD_BYTES = ISO_SIGNATURE_AT + 5;

/** Whether a VM needs an image's file: its disk is a linked clone of it, or it has it attached as an ISO. */
export function usesImage(vm: { boot?: { image?: string; linked?: boolean; iso?: string } }, image: string): boolean {
  return (vm.boot?.image === image && vm.boot.linked === true) || vm.boot?.iso === image;
}
