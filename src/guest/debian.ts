/**
 * The Debian image: a small bootable Debian 12 built from Debian's packages
 * by scripts/build-debian-image.sh (mmdebstrap, a FAT boot partition with
 * SYSLINUX and GRUB for UEFI, an ext4 root; cloud-init, qemu-guest-agent and
 * openssh-server in it). Cached by the script's digest under Ferry's cache,
 * like the built-in guest; a build already under way is waited for.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ErrorCode, FerryError } from '../domain/errors.js';
import { projectRoot } from '../config/paths.js';
import type { ImageBuilder, ImageRecipe } from '../ports/image-builder.js';
import { cacheDir } from './image.js';

export function buildDebianImage(log: (line: string) => void = () => {}): Promise<string> {
  const script = path.join(projectRoot(), 'scripts', 'build-debian-image.sh');
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [script, cacheDir()], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let last = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => {
      for (const line of c.toString().split('\n').filter(Boolean)) {
        last = line;
        if (line.startsWith('debian image:')) log(line);
      }
    });
    child.on('error', (e) => reject(new FerryError(ErrorCode.ImageBuild, `cannot run ${script}: ${e.message}`)));
    child.on('close', (code) => {
      const file = out.trim().split('\n').pop() ?? '';
      if (code === 0 && file) resolve(file);
      else reject(new FerryError(ErrorCode.ImageBuild, `the Debian image build failed: ${last.replace(/^debian image: /, '') || `exit ${code}`}`));
    });
  });
}

export const debianBuilder: ImageBuilder = {
  build(recipe: ImageRecipe, log: (line: string) => void): Promise<string> {
    if (recipe !== 'debian') throw new FerryError(ErrorCode.ImageBuild, `no recipe '${String(recipe)}'`);
    return buildDebianImage(log);
  },
};
