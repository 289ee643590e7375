/**
 * Where QEMU runs across the lab: every QEMU process of the named VMs, by
 * the network namespace (lab host) it runs in, read from /proc. Failover
 * checks sample it every few milliseconds: a VM found in two namespaces at
 * once ran twice.
 */
import fs from 'node:fs';

/** Named network namespaces by inode (from /run/netns), those starting with `prefix` (one lab's: `fl-ID-`), for `qemuCopies`. */
export function netnsByInode(prefix = ''): Map<number, string> {
  const dir = '/run/netns';
  const names = (fs.existsSync(dir) ? fs.readdirSync(dir) : []).filter((n) => n.startsWith(prefix));
  return new Map(names.map((n) => [fs.statSync(`${dir}/${n}`).ino, n]));
}

/** Each VM's live QEMU processes in the given namespaces, as their names (QEMUs elsewhere, another lab's, are not counted). */
export function qemuCopies(vms: readonly string[], spaces: Map<number, string>): Map<string, string[]> {
  const out = new Map<string, string[]>(vms.map((v) => [v, []]));
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (!args[0]?.includes('qemu-system')) continue;
      const name = args[args.indexOf('-name') + 1]?.split(',')[0];
      if (!name || !out.has(name)) continue;
      if (/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))) continue;
      const space = spaces.get(fs.statSync(`/proc/${pid}/ns/net`).ino);
      if (space) out.get(name)!.push(space);
    } catch {
      /* it ended meanwhile */
    }
  }
  return out;
}
