/**
 * Where Ferry's own files are, and the default state directory.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
export { StateLayout } from '../domain/layout.js';

let root: string | undefined;

/** The directory holding Ferry's package.json (works from src/ and dist/src/). */
export function projectRoot(): string {
  if (root) return root;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find Ferry package.json');
    dir = up;
  }
  root = dir;
  return dir;
}

export function defaultStateDir(): string {
  return process.env.FERRY_STATE ?? path.join(os.homedir(), '.ferry');
}
