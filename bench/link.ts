/**
 * The benchmark's migration link: the cluster's migration subnet on the
 * loopback device, shaped with `tc` (htb) to a known rate, so the floor of
 * every move is known and the limit is the link's, not a QEMU setting.
 * All migration traffic shares the one shaped class: in a drain, that is the
 * draining node's uplink. Everything else on loopback stays unshaped.
 */
import { execFileSync } from 'node:child_process';

function tc(...args: string[]): void {
  execFileSync('tc', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export class ShapedLink {
  private installed = false;

  constructor(
    readonly subnet: string,
    readonly bitsPerSec: number,
  ) {}

  get bytesPerSec(): number {
    return this.bitsPerSec / 8;
  }

  install(): void {
    const current = execFileSync('tc', ['qdisc', 'show', 'dev', 'lo'], { encoding: 'utf8' });
    if (!/qdisc noqueue 0: root/.test(current)) {
      throw new Error(`loopback already has a queueing discipline (${current.trim()}); remove it or run the benchmark elsewhere`);
    }
    tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '10', 'r2q', '100000');
    this.installed = true;
    tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '100gbit');
    const rate = `${Math.round(this.bitsPerSec / 1e6)}mbit`;
    tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:20', 'htb', 'rate', rate, 'ceil', rate);
    // A NIC-sized buffer (32 loopback packets, about 2 MiB): the default queue of
    // 1000 64 KiB packets would hold half a second of data at 1 Gbit/s and every
    // switchover would wait behind it.
    tc('qdisc', 'add', 'dev', 'lo', 'parent', '1:20', 'handle', '20:', 'pfifo', 'limit', '32');
    tc('filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32', 'match', 'ip', 'dst', this.subnet, 'flowid', '1:20');
  }

  remove(): void {
    if (!this.installed) return;
    try {
      tc('qdisc', 'del', 'dev', 'lo', 'root');
    } catch {
      /* already gone */
    }
    this.installed = false;
  }
}
