/**
 * The Volume port on the local file system with qemu-img and
 * qemu-storage-daemon: what the controller asks of the cluster's shared
 * volume. Every storage daemon it starts writes its pid into the run
 * directory, so a controller that was killed leaves none behind for long.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { errors } from '../domain/errors.js';
import type { ExportHandle, FrozenCopy, Volume } from '../ports/volume.js';
import { IMAGE_HEAD_BYTES, type ImageProbe } from '../domain/images.js';
import { copyFrozenImage, killStaleStorageDaemons, mergeOverlayOffline, verifyImage } from './backup-job.js';
import { createImage, replaceImage } from './mirror-job.js';
import { freePort } from './nbd-mirror.js';
import { OVMF_VARS_TEMPLATE } from './argv.js';

const run = promisify(execFile);

/** The last line a failed tool printed, without its name. */
function qemuImgWords(e: unknown): string {
  const text = ((e as { stderr?: string }).stderr ?? String(e)).trim().split('\n').at(-1) ?? '';
  return text.replace(/^(qemu-img|xorriso): /, '').slice(0, 200);
}

export class QemuVolume implements Volume {
  private copies = 0;

  /** `runDir`: where storage daemons leave their pid files. */
  constructor(private readonly runDir: string) {}

  async create(file: string, sizeBytes: number): Promise<void> {
    this.ensureWritableDir(path.dirname(file), { recursive: true });
    await createImage(file, sizeBytes);
  }

  async clone(file: string, backing: { file: string; format: string }, sizeBytes: number, opts: { full?: boolean } = {}): Promise<void> {
    this.ensureWritableDir(path.dirname(file), { recursive: true });
    try {
      if (opts.full) {
        await run('qemu-img', ['convert', '-q', '-f', backing.format, '-O', 'qcow2', backing.file, file]);
        await run('qemu-img', ['resize', '-q', '-f', 'qcow2', file, String(sizeBytes)]);
      } else await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', backing.format, '-b', backing.file, file, String(sizeBytes)]);
    } catch (e) {
      fs.rmSync(file, { force: true });
      throw errors.internal(`cannot make ${file} from ${backing.file}: ${qemuImgWords(e)}`);
    }
  }

  async createFirmwareVars(file: string): Promise<void> {
    if (!fs.existsSync(OVMF_VARS_TEMPLATE)) throw errors.invalid('firmware', `UEFI needs OVMF (Debian package ovmf): ${OVMF_VARS_TEMPLATE} is missing`);
    this.ensureWritableDir(path.dirname(file), { recursive: true });
    fs.copyFileSync(OVMF_VARS_TEMPLATE, file);
  }

  async writeIso(file: string, label: string, files: Record<string, string>): Promise<void> {
    this.ensureWritableDir(path.dirname(file), { recursive: true });
    const staging = fs.mkdtempSync(path.join(path.dirname(file), '.iso-'));
    try {
      for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(staging, name), text, { mode: 0o600 });
      await run('xorriso', ['-as', 'mkisofs', '-quiet', '-volid', label, '-joliet', '-rock', '-o', `${file}.part`, staging]);
      fs.renameSync(`${file}.part`, file);
    } catch (e) {
      fs.rmSync(`${file}.part`, { force: true });
      throw errors.internal(`cannot write ${file}: ${qemuImgWords(e)}`);
    } finally {
      fs.rmSync(staging, { recursive: true, force: true });
    }
  }

  async convert(source: string, target: string): Promise<number> {
    await run('qemu-img', ['convert', '-O', 'qcow2', source, target]);
    return fs.statSync(target).size;
  }

  async probe(file: string): Promise<ImageProbe> {
    let info: { format?: string; 'virtual-size'?: number; 'backing-filename'?: string };
    try {
      info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-U', file])).stdout) as typeof info;
    } catch (e) {
      throw errors.invalid('file', `${file} cannot be read as an image: ${qemuImgWords(e)}`);
    }
    const head = Buffer.alloc(IMAGE_HEAD_BYTES);
    const fd = fs.openSync(file, 'r');
    try {
      fs.readSync(fd, head, 0, IMAGE_HEAD_BYTES, 0);
    } finally {
      fs.closeSync(fd);
    }
    return {
      format: info.format ?? 'unknown',
      virtualSizeBytes: info['virtual-size'] ?? 0,
      ...(info['backing-filename'] ? { backingFile: info['backing-filename'] } : {}),
      head,
    };
  }

  async copyFile(source: string, target: string): Promise<number> {
    this.ensureWritableDir(path.dirname(target), { recursive: true });
    // cp keeps a sparse image sparse; written beside the target and renamed, so a failed copy leaves nothing.
    await run('cp', ['--sparse=always', source, `${target}.part`]);
    fs.renameSync(`${target}.part`, target);
    return fs.statSync(target).blocks * 512;
  }

  replace(file: string, source: string[]): Promise<void> {
    return replaceImage(file, source);
  }

  remove(file: string): void {
    fs.rmSync(file, { force: true });
  }

  exists(file: string): boolean {
    return fs.existsSync(file);
  }

  sizeOf(file: string): number {
    return fs.statSync(file).size;
  }

  touch(file: string): void {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, '');
  }

  tail(file: string, bytes: number): string {
    if (!fs.existsSync(file)) return '';
    const size = fs.statSync(file).size;
    const fd = fs.openSync(file, 'r');
    try {
      const len = Math.min(bytes, size);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  }

  readFrom(file: string, offset: number): { data: Buffer; size: number } {
    if (!fs.existsSync(file)) return { data: Buffer.alloc(0), size: 0 };
    const size = fs.statSync(file).size;
    const from = size < offset ? 0 : offset;
    if (size === from) return { data: Buffer.alloc(0), size };
    const fd = fs.openSync(file, 'r');
    try {
      const data = Buffer.alloc(size - from);
      fs.readSync(fd, data, 0, data.length, from);
      return { data, size };
    } finally {
      fs.closeSync(fd);
    }
  }

  verify(file: string): Promise<void> {
    return verifyImage(file);
  }

  async rebase(child: string, base: string | undefined): Promise<void> {
    await run('qemu-img', ['rebase', '-q', '-f', 'qcow2', ...(base ? ['-F', 'qcow2', '-b', base] : ['-b', '']), child]);
  }

  mergeOffline(overlay: string, base: string, copied: boolean): Promise<void> {
    return mergeOverlayOffline(overlay, base, copied);
  }

  copyFrozen(req: FrozenCopy): Promise<{ bytes: number; ms: number; pausedMs: number }> {
    const pidFile = path.join(this.runDir, `qsd-backup-${process.pid}-${this.copies++}.pid`);
    return copyFrozenImage({
      source: req.source,
      target: req.target,
      mode: req.mode,
      sizeBytes: req.sizeBytes,
      ...(req.parent ? { parent: req.parent } : {}),
      ...(req.bytesPerSec ? { bytesPerSec: req.bytesPerSec } : {}),
      ...(req.hold ? { hold: async () => req.hold!() } : {}),
      ...(req.signal ? { signal: req.signal } : {}),
      pidFile,
      workDir: this.runDir,
    });
  }

  async snapshot(file: string, id: string): Promise<void> {
    await run('qemu-img', ['snapshot', '-q', '-c', id, file]);
  }

  async deleteSnapshot(file: string, id: string): Promise<void> {
    await run('qemu-img', ['snapshot', '-q', '-d', id, file]);
  }

  async exportImage(file: string, address: string, tag: string): Promise<ExportHandle> {
    const port = await freePort(address);
    const pidFile = path.join(this.runDir, `qsd-${tag}.pid`);
    const proc = spawn(
      'qemu-storage-daemon',
      [
        '--blockdev',
        `driver=file,node-name=f,filename=${file}`,
        '--blockdev',
        'driver=qcow2,node-name=d,file=f',
        '--nbd-server',
        `addr.type=inet,addr.host=${address},addr.port=${port}`,
        '--export',
        'type=nbd,id=e,node-name=d,name=disk,writable=on',
        '--pidfile',
        pidFile,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    const close = async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(pidFile, { force: true });
    };
    // Ready once it listens.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const sock = net.connect(port, address, () => (sock.destroy(), resolve(true))).once('error', () => resolve(false));
      });
      if (ok) break;
      if (proc.exitCode !== null || Date.now() > deadline) {
        await close();
        throw errors.internal(`the replica's NBD export did not start: ${stderr.trim() || 'not listening'}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return { endpoint: { address, port, export: 'disk' }, close };
  }

  stopLeftovers(): number[] {
    return killStaleStorageDaemons(this.runDir);
  }

  realPath(p: string): string {
    const rest: string[] = [];
    let cur = path.resolve(p);
    for (;;) {
      try {
        return path.join(fs.realpathSync(cur), ...rest.reverse());
      } catch {
        const up = path.dirname(cur);
        if (up === cur) return path.resolve(p);
        rest.push(path.basename(cur));
        cur = up;
      }
    }
  }

  ensureWritableDir(dir: string, opts: { recursive?: boolean } = {}): void {
    if (!fs.existsSync(dir)) {
      if (opts.recursive) fs.mkdirSync(dir, { recursive: true });
      else {
        // Not `recursive` for a directory a user named: Node's recursive mkdir can spin forever on pseudo file systems like /proc.
        if (!fs.statSync(path.dirname(dir)).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
        fs.mkdirSync(dir);
      }
    }
    fs.accessSync(dir, fs.constants.W_OK);
  }
}
