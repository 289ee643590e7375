/**
 * Starting etcd members: Debian's etcd-server binary (installed by
 * scripts/setup.sh), one process per member, in the foreground of whoever
 * runs it (a test, the lab, a systemd unit on a real host runs the same
 * arguments). Elections are tuned for a LAN: heartbeat 100 ms, election
 * 1000 ms, so a lease of a few seconds is meaningful; pre-vote, so a
 * member that comes back from isolation does not force an election.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface EtcdMemberSpec {
  name: string;
  dataDir: string;
  /** e.g. http://10.0.0.1:2379 */
  clientUrl: string;
  /** e.g. http://10.0.0.1:2380 */
  peerUrl: string;
  /** Every member of a new cluster: name → peer URL. */
  initialCluster: Record<string, string>;
  /** Where the member's output goes (appended). */
  logFile: string;
  heartbeatMs?: number;
  electionMs?: number;
  /** Run inside this network namespace (ip netns exec). */
  netns?: string;
  /** Outlive whoever started it (the lab's members run on after `ferry lab up` exits). */
  detached?: boolean;
}

/** etcd's command line for a member (also what a systemd unit runs). */
export function etcdArgs(m: EtcdMemberSpec): string[] {
  return [
    '--name',
    m.name,
    '--data-dir',
    m.dataDir,
    '--listen-client-urls',
    m.clientUrl,
    '--advertise-client-urls',
    m.clientUrl,
    '--listen-peer-urls',
    m.peerUrl,
    '--initial-advertise-peer-urls',
    m.peerUrl,
    '--initial-cluster',
    Object.entries(m.initialCluster)
      .map(([n, u]) => `${n}=${u}`)
      .join(','),
    '--initial-cluster-state',
    'new',
    '--heartbeat-interval',
    String(m.heartbeatMs ?? 100),
    '--election-timeout',
    String(m.electionMs ?? 1000),
    // A member cut off (a host isolated) must not raise its term while away and depose the leader on its return:
    // etcd 3.4 (Debian 12) has no pre-vote unless asked, and the election it forces stalls every lease renewal.
    '--pre-vote',
  ];
}

export class EtcdMember {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(readonly spec: EtcdMemberSpec) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the member (again, on its data) and resolves once it is healthy, or throws with the end of its log. */
  async start(timeoutMs = 20_000): Promise<void> {
    if (this.running) return;
    fs.mkdirSync(this.spec.dataDir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.dirname(this.spec.logFile), { recursive: true, mode: 0o700 });
    const log = fs.openSync(this.spec.logFile, 'a', 0o600);
    const [cmd, args] = this.spec.netns ? ['ip', ['netns', 'exec', this.spec.netns, 'etcd', ...etcdArgs(this.spec)]] : ['etcd', etcdArgs(this.spec)];
    const child = spawn(cmd as string, args as string[], { stdio: ['ignore', log, log], detached: !!this.spec.detached });
    fs.closeSync(log);
    if (this.spec.detached) child.unref();
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`etcd member ${this.spec.name} exited: ${this.logTail()}`);
      if (await this.healthy()) return;
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`etcd member ${this.spec.name} was not healthy within ${timeoutMs} ms: ${this.logTail()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Whether the member answers /health as part of a cluster with a leader. */
  async healthy(): Promise<boolean> {
    const res = await fetch(`${this.spec.clientUrl}/health`, { signal: AbortSignal.timeout(1000) }).catch(() => undefined);
    if (!res?.ok) return false;
    return ((await res.json().catch(() => ({}))) as { health?: string }).health === 'true';
  }

  /** Stops the member (SIGTERM, SIGKILL after 5 s); its data stays. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.running) return;
    this.child!.kill(signal);
    const t = setTimeout(() => this.child?.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }

  private logTail(): string {
    try {
      return fs.readFileSync(this.spec.logFile, 'utf8').trim().split('\n').slice(-3).join(' | ').slice(-600);
    } catch {
      return '(no log)';
    }
  }
}
