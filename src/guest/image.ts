/**
 * The built-in guest image: Debian's cloud kernel (downloaded as a package and
 * unpacked into Ferry's cache, never installed on the host) plus a busybox
 * initramfs holding /init, busybox, the virtio modules and ferry-guest.
 *
 * Built once into `<cache>/guest/<kernel-version>/` and reused; a build goes
 * to a temporary directory that is renamed into place, so two builds at once
 * (tests side by side) never see half an image.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { ErrorCode, FerryError } from '../domain/errors.js';
import { projectRoot } from '../config/paths.js';
import { CpioWriter } from './cpio.js';

const run = promisify(execFile);

/** Load order matters: each module depends on the ones before it. */
export const GUEST_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio_pci',
  'failover',
  'net_failover',
  'virtio_net',
  'virtio_blk',
  // The ACPI power button, as an input device: a clean shutdown on QEMU's system_powerdown.
  'evdev',
  'button',
] as const;

export interface GuestImage {
  dir: string;
  kernelPath: string;
  initrdPath: string;
  kernelPackage: string;
}

export function cacheDir(): string {
  return process.env.FERRY_CACHE ?? path.join(os.homedir(), '.cache', 'ferry');
}

function assetsDir(): string {
  return path.join(projectRoot(), 'src', 'guest', 'assets');
}

/** A digest of the guest's own files: a change to init or ferry-guest.c rebuilds the initramfs. */
function assetsDigest(): string {
  const h = createHash('sha256');
  for (const f of ['init', 'ferry-guest.c']) h.update(fs.readFileSync(path.join(assetsDir(), f)));
  return h.digest('hex').slice(0, 12);
}

function imageDir(): string {
  return path.join(cacheDir(), 'guest', assetsDigest());
}

export function findImage(): GuestImage | undefined {
  const dir = imageDir();
  const manifest = path.join(dir, 'manifest.json');
  if (!fs.existsSync(manifest)) return undefined;
  const m = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { kernelPackage: string };
  return { dir, kernelPath: path.join(dir, 'vmlinuz'), initrdPath: path.join(dir, 'initrd.img'), kernelPackage: m.kernelPackage };
}

export async function ensureImage(log: (line: string) => void = () => {}): Promise<GuestImage> {
  return findImage() ?? buildImage(log);
}

async function resolveKernelPackage(): Promise<string> {
  const { stdout } = await run('apt-cache', ['depends', 'linux-image-cloud-amd64']);
  const match = /Depends: (linux-image-[0-9][^\s]*-cloud-amd64)\b/.exec(stdout);
  if (!match) {
    throw new FerryError(ErrorCode.ImageBuild, "cannot find Debian's cloud kernel package (run 'apt-get update' first)");
  }
  return match[1]!;
}

export async function buildImage(log: (line: string) => void = () => {}): Promise<GuestImage> {
  const dir = imageDir();
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const work = fs.mkdtempSync(path.join(path.dirname(dir), '.build-'));
  try {
    const kernelPackage = await resolveKernelPackage();
    log(`guest image: downloading ${kernelPackage}`);
    await run('apt-get', ['download', '-q', kernelPackage], { cwd: work });
    const deb = fs.readdirSync(work).find((f) => f.endsWith('.deb'));
    if (!deb) throw new FerryError(ErrorCode.ImageBuild, `apt-get download ${kernelPackage} produced no package`);
    const root = path.join(work, 'root');
    await run('dpkg-deb', ['-x', path.join(work, deb), root]);
    const boot = path.join(root, 'boot');
    const vmlinuz = fs.readdirSync(boot).find((f) => f.startsWith('vmlinuz-'));
    if (!vmlinuz) throw new FerryError(ErrorCode.ImageBuild, `${kernelPackage} holds no vmlinuz`);
    const version = vmlinuz.slice('vmlinuz-'.length);
    const modulesRoot = path.join(root, 'lib', 'modules', version, 'kernel');

    log('guest image: compiling ferry-guest');
    const guestBin = path.join(work, 'ferry-guest');
    await run('gcc', ['-static', '-O2', '-o', guestBin, path.join(assetsDir(), 'ferry-guest.c')]);

    log('guest image: writing initramfs');
    const cpio = new CpioWriter();
    for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'tmp', 'etc', 'lib', 'lib/modules', 'usr', 'usr/bin', 'usr/sbin', 'root']) {
      cpio.dir(d);
    }
    cpio.file('init', fs.readFileSync(path.join(assetsDir(), 'init')), 0o755);
    cpio.file('bin/busybox', fs.readFileSync(busyboxPath()), 0o755);
    cpio.file('bin/ferry-guest', fs.readFileSync(guestBin), 0o755);
    for (const mod of GUEST_MODULES) {
      const found = findFile(modulesRoot, `${mod}.ko`);
      if (found) cpio.file(`lib/modules/${mod}.ko`, fs.readFileSync(found), 0o644);
      // absent means built into this kernel; init skips what is not there
    }
    const staged = path.join(work, 'image');
    fs.mkdirSync(staged);
    fs.copyFileSync(path.join(boot, vmlinuz), path.join(staged, 'vmlinuz'));
    fs.writeFileSync(path.join(staged, 'initrd.img'), gzipSync(cpio.finish()));
    fs.writeFileSync(path.join(staged, 'manifest.json'), JSON.stringify({ kernelPackage, kernelVersion: version }, null, 2));
    try {
      fs.renameSync(staged, dir);
    } catch (e) {
      // Another build finished first: use that one.
      if (!findImage()) throw e;
    }
    log(`guest image: ready in ${dir}`);
    return findImage()!;
  } catch (e) {
    if (e instanceof FerryError) throw e;
    throw new FerryError(ErrorCode.ImageBuild, `guest image build failed: ${(e as Error).message.split('\n')[0]}`, { cause: e });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function busyboxPath(): string {
  for (const p of ['/bin/busybox', '/usr/bin/busybox']) if (fs.existsSync(p)) return p;
  throw new FerryError(ErrorCode.ImageBuild, 'busybox is not installed (Debian package busybox-static)');
}

function findFile(dir: string, name: string): string | undefined {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      const found = findFile(p, name);
      if (found) return found;
    } else if (entry.name === name) return p;
  }
  return undefined;
}
