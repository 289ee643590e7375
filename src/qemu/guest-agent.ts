/**
 * qemu-guest-agent over the VM's virtio-serial channel (QEMU's chardev
 * socket on this host). Each call connects, synchronises with
 * `guest-sync-delimited` (which also throws away a late answer to an
 * earlier call that timed out), sends one command and reads its answer.
 *
 * A guest without an agent, or one that is not running yet, never answers:
 * the sync's short timeout turns that into one line, `no guest agent
 * answered`, and callers degrade (ACPI instead of a clean agent shutdown, a
 * backup that is not quiesced).
 */
import net from 'node:net';
import type { GuestReport } from '../domain/records.js';

/** How long a guest agent gets to answer the sync: a running agent answers in milliseconds, even under TCG. */
const SYNC_TIMEOUT_MS = 1_500;

export class GuestAgentSilent extends Error {}

interface Reply {
  return?: unknown;
  error?: { class: string; desc: string };
}

export class GuestAgent {
  /** One call at a time: the channel carries a single conversation. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly socket: string) {}

  /** Runs `command`; throws GuestAgentSilent when no agent answers, an Error with the agent's words when it refuses. */
  call<T>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number; noReply?: boolean } = {}): Promise<T> {
    const run = this.queue.then(() => this.exchange<T>(command, args, opts));
    this.queue = run.catch(() => {});
    return run;
  }

  private exchange<T>(command: string, args: Record<string, unknown> | undefined, opts: { timeoutMs?: number; noReply?: boolean }): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const sock = net.createConnection({ path: this.socket });
      const syncId = Math.floor(Math.random() * 2 ** 31);
      let synced = false;
      let buffer = '';
      let timer = setTimeout(() => finish(new GuestAgentSilent('no guest agent answered')), SYNC_TIMEOUT_MS);
      const finish = (err: Error | undefined, value?: T) => {
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(value as T);
      };
      sock.on('error', (e) => finish(new GuestAgentSilent(`the guest agent channel is closed (${(e as NodeJS.ErrnoException).code ?? e.message})`)));
      sock.on('connect', () => {
        // 0xFF first: the agent discards whatever partial input it holds up to it.
        sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id: syncId } }) + '\n')]));
      });
      sock.on('data', (chunk: Buffer) => {
        if (!synced) {
          // The agent answers the sync with 0xFF, then its reply; everything before is stale.
          const at = chunk.lastIndexOf(0xff);
          if (at >= 0) {
            buffer = '';
            chunk = chunk.subarray(at + 1);
          }
        }
        buffer += chunk.toString('utf8');
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (!line) continue;
          let reply: Reply;
          try {
            reply = JSON.parse(line) as Reply;
          } catch {
            continue;
          }
          if (!synced) {
            if (reply.return !== syncId) continue;
            synced = true;
            sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
            clearTimeout(timer);
            if (opts.noReply) {
              // guest-shutdown answers nothing: the agent is gone with its guest. Give it a moment to read the line.
              timer = setTimeout(() => finish(undefined, undefined), 200);
              return;
            }
            timer = setTimeout(() => finish(new Error(`the guest agent did not answer ${command}`)), opts.timeoutMs ?? 10_000);
            continue;
          }
          if (reply.error) finish(new Error(`guest agent: ${command}: ${reply.error.desc}`));
          else finish(undefined, reply.return as T);
          return;
        }
      });
    });
  }

  /** Reads a small file in the guest; undefined when it does not exist. */
  async readFile(path: string, maxBytes = 65536): Promise<string | undefined> {
    let handle: number;
    try {
      handle = await this.call<number>('guest-file-open', { path, mode: 'r' });
    } catch (e) {
      if (e instanceof GuestAgentSilent) throw e;
      return undefined;
    }
    try {
      const r = await this.call<{ 'buf-b64': string }>('guest-file-read', { handle, count: maxBytes });
      return Buffer.from(r['buf-b64'], 'base64').toString('utf8');
    } finally {
      await this.call('guest-file-close', { handle }).catch(() => {});
    }
  }

  /** What `vm show` says of the guest: its OS, hostname, addresses and cloud-init's verdict. */
  async report(): Promise<GuestReport> {
    try {
      const os = await this.call<{ 'pretty-name'?: string; 'kernel-release'?: string }>('guest-get-osinfo');
      const host = await this.call<{ 'host-name': string }>('guest-get-host-name');
      const nics =
        await this.call<{ name: string; 'hardware-address'?: string; 'ip-addresses'?: { 'ip-address': string; prefix: number }[] }[]>(
          'guest-network-get-interfaces',
        );
      const result = await this.readFile('/run/cloud-init/result.json');
      const report: GuestReport = {
        agent: true,
        hostname: host['host-name'],
        interfaces: nics
          .filter((n) => n.name !== 'lo')
          .map((n) => ({
            name: n.name,
            ...(n['hardware-address'] ? { mac: n['hardware-address'] } : {}),
            addresses: (n['ip-addresses'] ?? []).map((a) => `${a['ip-address']}/${a.prefix}`),
          })),
        cloudInit: cloudInitVerdict(result),
      };
      if (os['pretty-name']) report.os = os['pretty-name'];
      if (os['kernel-release']) report.kernel = os['kernel-release'];
      return report;
    } catch (e) {
      return { agent: false, reason: (e as Error).message };
    }
  }
}

/** cloud-init's result.json in Ferry's words. */
export function cloudInitVerdict(text: string | undefined): NonNullable<Extract<GuestReport, { agent: true }>['cloudInit']> {
  if (text === undefined) return { state: 'not-run' };
  try {
    const v1 = (JSON.parse(text) as { v1?: { datasource?: string | null; errors?: string[] } }).v1 ?? {};
    const errors = v1.errors ?? [];
    return { state: errors.length ? 'error' : 'done', ...(v1.datasource ? { datasource: v1.datasource } : {}), ...(errors.length ? { errors } : {}) };
  } catch {
    return { state: 'error', errors: ['result.json is not JSON'] };
  }
}
