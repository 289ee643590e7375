/**
 * Storage roots: the directories a VM's disk may live in. The shared volume
 * is always one; the cluster setting `storageRoots` adds more (a node's local
 * disks, another volume). Every directory a user names (a storage move, a
 * shared-nothing migration's target, the backup store) must lie inside one,
 * judged on the server after resolving it, so `../../etc` or a path built
 * against the CLI's working directory cannot put a disk anywhere else.
 */
import { errors } from './errors.js';

/** POSIX path arithmetic without Node (the console's bundle shares the schemas that use this). */
const path = {
  sep: '/',
  isAbsolute: (p: string): boolean => p.startsWith('/'),
  /** An absolute path with `.`, `..`, repeated and trailing slashes resolved. */
  resolve(p: string): string {
    const out: string[] = [];
    for (const part of p.split('/')) {
      if (part === '' || part === '.') continue;
      if (part === '..') out.pop();
      else out.push(part);
    }
    return `/${out.join('/')}`;
  },
};

/** Directories no disk belongs in, whatever the roots say. */
const NEVER = ['/proc', '/sys', '/dev'];

/** `given` (as the user typed it) as an absolute, normalised path inside one of `roots`; refused otherwise, naming the roots. */
export function insideRoots(given: string, roots: readonly string[], what: string): string {
  const allowed = roots.map((r) => path.resolve(r));
  const refuse = (why: string) => errors.invalid(what, `${what} ${why}; storage roots: ${allowed.join(', ')} (cluster setting storageRoots)`);
  const shownGiven = given.length > 64 ? `${given.slice(0, 64)}…` : given;
  if (given === '' || given.includes('\0')) throw refuse(`must be a directory, got '${shownGiven.replace(/\0/g, '?')}'`);
  if (!path.isAbsolute(given)) throw refuse(`must be an absolute directory inside a storage root, got '${shownGiven}'`);
  const dir = path.resolve(given);
  if (NEVER.some((n) => dir === n || dir.startsWith(n + path.sep))) throw refuse(`cannot be under ${NEVER.join(', ')}, got '${shownGiven}'`);
  if (!allowed.some((r) => dir === r || dir.startsWith(r + path.sep))) throw refuse(`must be inside a storage root, got '${shownGiven}'`);
  return dir;
}

/** The value of `storageRoots` as typed: comma-separated absolute directories ('' or 'none': none besides the shared volume). */
export function parseStorageRoots(raw: string): string[] {
  if (raw.trim() === '' || raw.trim() === 'none') return [];
  const roots = raw.split(',').map((r) => r.trim());
  for (const r of roots) {
    if (!path.isAbsolute(r) || r.split('/').includes('..'))
      throw errors.invalid('storageRoots', `storageRoots takes absolute directories, got '${r.slice(0, 64)}'`);
    if (NEVER.some((n) => path.resolve(r) === n || path.resolve(r).startsWith(n + path.sep)) || path.resolve(r) === '/')
      throw errors.invalid('storageRoots', `a storage root cannot be /, ${NEVER.join(', ')} or under them, got '${r.slice(0, 64)}'`);
  }
  return [...new Set(roots.map((r) => path.resolve(r)))];
}
