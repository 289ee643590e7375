/**
 * The cluster's shared volume as the controller uses it: disk images
 * (create, copy, check, rebase, merge an overlay offline, copy a frozen disk
 * into a backup, export one over NBD) and the plain files beside them
 * (console logs, saved states). `src/qemu/volume.ts` does it with qemu-img,
 * qemu-storage-daemon and the file system.
 */
import type { ImageProbe } from '../domain/images.js';

export interface FrozenCopy {
  source: string;
  target: string;
  mode: 'full' | 'incremental';
  parent?: string;
  sizeBytes: number;
  bytesPerSec?: number;
  /** Asked every 100 ms: true pauses the copy until it says false again. */
  hold?: () => boolean;
  signal?: AbortSignal;
}

export interface ExportHandle {
  endpoint: { address: string; port: number; export: string };
  close(): Promise<void>;
}

export interface Volume {
  create(file: string, sizeBytes: number): Promise<void>;
  /** What qemu-img's probe says of a file, and its first bytes (the image library judges them). */
  probe(file: string): Promise<ImageProbe>;
  /** Copies a file whole (an image into the library), keeping holes; returns the bytes it takes. */
  copyFile(source: string, target: string): Promise<number>;
  /** A linked clone: a new qcow2 of `sizeBytes` over `backing` (which must stay), or with `full`, a standalone copy grown to that size. */
  clone(file: string, backing: { file: string; format: string }, sizeBytes: number, opts?: { full?: boolean }): Promise<void>;
  /** A fresh copy of the UEFI firmware's variables (a VM's own NVRAM). */
  createFirmwareVars(file: string): Promise<void>;
  /** An ISO 9660 image holding `files` under volume label `label` (a cloud-init seed: cidata). */
  writeIso(file: string, label: string, files: Record<string, string>): Promise<void>;
  /** A standalone qcow2 copy of `source` (a chain is flattened). */
  convert(source: string, target: string): Promise<number>;
  /** Replaces `file` by a flattened copy of `source` (extra convert arguments first), atomically. */
  replace(file: string, source: string[]): Promise<void>;
  remove(file: string): void;
  exists(file: string): boolean;
  sizeOf(file: string): number;
  /** Creates (or empties) a plain file, and its directory. */
  touch(file: string): void;
  /** The last `bytes` of a file ('' when it does not exist). */
  tail(file: string, bytes: number): string;
  /** Reads a file from `offset` to its end (a console log being followed). */
  readFrom(file: string, offset: number): { data: Buffer; size: number };
  /** Checks an image and its backing chain; throws with what is wrong. */
  verify(file: string): Promise<void>;
  /** Rebases `child` onto `base` (or makes it standalone), copying what differs. */
  rebase(child: string, base: string | undefined): Promise<void>;
  /** Merges a backup overlay into its frozen image with no guest running on it. */
  mergeOffline(overlay: string, base: string, copied: boolean): Promise<void>;
  copyFrozen(req: FrozenCopy): Promise<{ bytes: number; ms: number; pausedMs: number }>;
  snapshot(file: string, id: string): Promise<void>;
  deleteSnapshot(file: string, id: string): Promise<void>;
  /** Exports an image writable over NBD on `address` until closed (a replica sync). */
  exportImage(file: string, address: string, tag: string): Promise<ExportHandle>;
  /** Stops storage daemons a killed predecessor left behind. */
  stopLeftovers(): number[];
  /** Makes sure a directory exists and is writable; `recursive` only for Ferry's own directories. */
  ensureWritableDir(dir: string, opts?: { recursive?: boolean }): void;
  /** `p` with every symbolic link in its existing part resolved (what is not there yet is kept as given). */
  realPath(p: string): string;
}
