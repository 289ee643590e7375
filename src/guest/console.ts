/**
 * Reading what the built-in guest prints on its serial console: boots,
 * heartbeat ticks, workload reports. Pure: text in, facts out.
 */

export interface GuestBoot {
  bootId: string;
  ip: string;
  mac: string;
  workload: string;
}

export interface GuestTick {
  n: number;
  uptimeS: number;
  bootId: string;
}

export interface TcpClientReport {
  received: number;
  last: number;
  gaps: number;
  reconnects: number;
  connected: boolean;
}

export interface GuestConsole {
  boots: GuestBoot[];
  ticks: GuestTick[];
  tcpClient?: TcpClientReport;
  /** Every "gap expected=… got=…" line the tcp client printed. */
  tcpGaps: string[];
  memoryWrittenMiB?: number;
  /** The disk workload: the last record the guest had acknowledged, and where it started. */
  diskAcked?: number;
  diskStart?: number;
}

export function parseConsole(text: string): GuestConsole {
  const out: GuestConsole = { boots: [], ticks: [], tcpGaps: [] };
  const lines = text.split(/\r?\n/);
  // A last line without its newline is still being written (the log is read while the agent appends to it):
  // it waits for the next read, as a tick cut off inside its boot_id would look like a tick of another boot.
  if (!text.endsWith('\n')) lines.pop();
  for (const line of lines) {
    let m: RegExpExecArray | null;
    if ((m = /ferry-boot name=\S+ boot_id=(\S+) ip=(\S*) mac=(\S+) workload=(\S+)/.exec(line))) {
      out.boots.push({ bootId: m[1]!, ip: m[2]!, mac: m[3]!, workload: m[4]! });
    } else if ((m = /ferry-tick n=(\d+) uptime=([\d.]+) boot_id=(\S+)/.exec(line))) {
      out.ticks.push({ n: Number(m[1]), uptimeS: Number(m[2]), bootId: m[3]! });
    } else if ((m = /ferry-tcp-client received=(\d+) last=(\d+) gaps=(\d+) reconnects=(\d+) connected=([01])/.exec(line))) {
      out.tcpClient = { received: Number(m[1]), last: Number(m[2]), gaps: Number(m[3]), reconnects: Number(m[4]), connected: m[5] === '1' };
    } else if (/ferry-tcp-client gap /.test(line)) {
      out.tcpGaps.push(line.trim());
    } else if ((m = /ferry-disk acked=(\d+)/.exec(line))) {
      out.diskAcked = Number(m[1]);
    } else if ((m = /ferry-disk start=(\d+)/.exec(line))) {
      out.diskStart = Number(m[1]);
    } else if ((m = /ferry-memory written_mib=(\d+)/.exec(line))) {
      out.memoryWrittenMiB = Number(m[1]);
    }
  }
  return out;
}

/**
 * The heartbeat counter ran without a reboot: one boot, ticks strictly
 * increasing, uptime never going back. With `allowMissedLines`, ticks may be
 * missing from the log (nobody read the console while a node agent was down)
 * as long as the uptime advanced by at least the missed ticks' worth: the
 * guest kept counting, it was only not heard.
 */
export function keptRunning(c: GuestConsole, opts: { allowMissedLines?: boolean } = {}): { ok: boolean; reason?: string } {
  if (c.boots.length !== 1) return { ok: false, reason: `${c.boots.length} boots seen` };
  const bootId = c.boots[0]!.bootId;
  for (let i = 1; i < c.ticks.length; i++) {
    const a = c.ticks[i - 1]!;
    const b = c.ticks[i]!;
    if (b.bootId !== bootId) return { ok: false, reason: `tick ${b.n} from another boot` };
    if (b.uptimeS < a.uptimeS) return { ok: false, reason: `uptime went back at tick ${b.n}` };
    if (b.n === a.n + 1) continue;
    const uptimeCovers = b.uptimeS - a.uptimeS >= (b.n - a.n) * 0.9;
    if (!opts.allowMissedLines || b.n < a.n || !uptimeCovers) return { ok: false, reason: `tick ${a.n} followed by ${b.n}` };
  }
  return { ok: true };
}
