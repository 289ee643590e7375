/**
 * `npm run bench:failover` (root): repeated power losses in a 3-host lab
 * with real QEMU. host-1 carries the controller and etcd and is in
 * maintenance; an HA VM writing numbered disk records (`db`, priority 200)
 * and an HA VM serving TCP (`web`) run on host-2 or host-3. Each round
 * crashes the host they run on (`ferry lab crash`: SIGKILL of everything in
 * its namespace), measures how long detection and each restart took and
 * whether the disk workload went on after its last acknowledged record,
 * boots the host again (`ferry lab boot`) and waits for it to rejoin; the
 * next round crashes the other host. A sampler reads every QEMU in every
 * namespace from /proc every 20 ms: a VM in two namespaces at once is a
 * double run.
 *
 * The same run takes each lease TTL in turn (the setting hostLeaseTtlS), so
 * the default is chosen by measurement. The baseline is the targets of issue
 * 17 and what the reference clusters document (they do not run here).
 * Writes one JSON line per crash to docs/bench/failover.jsonl and the
 * failover section of docs/BENCHMARKS.md from that run.
 *
 *   FERRY_BENCH_TTLS      lease TTLs in seconds, comma-separated (default 6,8,10)
 *   FERRY_BENCH_CRASHES   crashes per TTL (default 3)
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from '../src/config/paths.js';
import type { ClusterEvent as Event } from '../src/domain/events.js';
import { openLayout } from '../src/config/host-config.js';
import { DEFAULT_SETTINGS } from '../src/domain/settings.js';
import { parseConsole } from '../src/guest/console.js';
import { netnsByInode, qemuCopies } from '../src/lab/qemu-copies.js';
import { type FailoverRow, writeFailoverReport } from './report.js';

const TTLS = (process.env.FERRY_BENCH_TTLS ?? '6,8,10').split(',').filter(Boolean).map(Number);
const CRASHES = Number(process.env.FERRY_BENCH_CRASHES ?? 3);
const OUT_DIR = path.join(projectRoot(), 'docs', 'bench');
const RESULTS = path.join(OUT_DIR, 'failover.jsonl');
const VMS = ['db', 'web'] as const;

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The real CLI with the lab's state directory; its output, or it throws with its error line. */
function ferry(dir: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(projectRoot(), 'dist/src/cli/main.js'), '--state', dir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`ferry ${args.join(' ')}: ${err.trim().split('\n').at(-1) ?? `exit ${code}`}`))));
  });
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | false> | T | undefined | false, stepMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await Promise.resolve(probe()).catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

class Round {
  doubles: string[] = [];
  samples = 0;
  constructor(readonly dir: string) {}

  consoleText(vm: string): string {
    const f = openLayout(this.dir).consoleLog(vm);
    return fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '';
  }

  console(vm: string) {
    return parseConsole(this.consoleText(vm));
  }

  async vm(name: string): Promise<{ state: string; node: string }> {
    return JSON.parse(await ferry(this.dir, ['vm', 'show', name, '--json'])) as { state: string; node: string };
  }

  async events(sinceMs: number): Promise<Event[]> {
    return (JSON.parse(await ferry(this.dir, ['events', '--json'])) as Event[]).filter((e) => e.atMs >= sinceMs);
  }

  async crash(ttlS: number, rep: number): Promise<FailoverRow> {
    const victim = (await this.vm('db')).node;
    const survivor = victim === 'host-2' ? 'host-3' : 'host-2';
    const doublesBefore = this.doubles.length;
    const crashedAt = Date.now();
    await ferry(this.dir, ['lab', 'crash', victim]);
    // Read once the old QEMU is dead: its last report, and where the new boot's lines begin.
    const acked = this.console('db').diskAcked ?? 0;
    const from = this.consoleText('db').length;
    const fresh = () => parseConsole(this.consoleText('db').slice(from));
    const running = new Map<string, number>();
    await until(`db and web to run on ${survivor}`, 120_000, async () => {
      for (const vm of VMS) {
        if (running.has(vm)) continue;
        const v = await this.vm(vm);
        if (v.state === 'running' && v.node === survivor) running.set(vm, Date.now() - crashedAt);
      }
      return running.size === VMS.length;
    });
    const writing = await until('db to write again after its last acknowledged record', 60_000, () => {
      const c = fresh();
      return c.boots.length === 1 && c.diskStart !== undefined && (c.diskAcked ?? 0) > c.diskStart ? Date.now() - crashedAt : undefined;
    });
    const diskStart = fresh().diskStart!;
    const all = await this.events(crashedAt);
    const failed = all.find((e) => e.type === 'node.failed' && e.node === victim);
    const restarts = VMS.map((vm) => {
      const e = all.find((x) => x.type === 'vm.failover' && x.vm === vm);
      return {
        vm,
        to: (e?.data?.to as string | undefined) ?? null,
        sinceDetectionMs: (e?.data?.sinceDetectionMs as number | undefined) ?? null,
        restartMs: (e?.data?.restartMs as number | undefined) ?? null,
        runningAfterCrashMs: running.get(vm) ?? null,
      };
    });
    const row: FailoverRow = {
      case: 'crash',
      variant: `ttl-${ttlS}s`,
      ttlS,
      rep,
      victim,
      survivor,
      detectionMs: (failed?.data?.detectionMs as number | undefined) ?? null,
      detectedAfterCrashMs: failed ? failed.atMs - crashedAt : null,
      restarts,
      dbWritingAfterCrashMs: writing,
      ackedBefore: acked,
      diskStart,
      lostAcked: Math.max(0, acked - diskStart),
      doubleRuns: this.doubles.length - doublesBefore,
      atMs: crashedAt,
    };
    // Power the host on again and let it rejoin before the next round.
    const booted = Date.now();
    await ferry(this.dir, ['lab', 'boot', victim]);
    await until(`${victim} to rejoin`, 60_000, async () => (await this.events(booted)).some((e) => e.type === 'node.rejoined' && e.node === victim), 500);
    await until(`${victim} to be up`, 30_000, async () => {
      const nodes = JSON.parse(await ferry(this.dir, ['node', 'list', '--json'])) as { name: string; state: string }[];
      return nodes.find((n) => n.name === victim)?.state === 'up';
    });
    return row;
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the failover benchmark needs root (the lab: network namespaces and bridges)');
  for (const t of TTLS)
    if (!Number.isInteger(t) || t < 6 || t > 10) throw new Error(`FERRY_BENCH_TTLS: each TTL must be a whole number from 6 to 10, got '${t}'`);
  if (!Number.isInteger(CRASHES) || CRASHES < 1)
    throw new Error(`FERRY_BENCH_CRASHES must be a whole number of at least 1, got '${process.env.FERRY_BENCH_CRASHES}'`);
  const startedAt = Date.now();
  fs.mkdirSync(OUT_DIR, { recursive: true });
  fs.writeFileSync(RESULTS, '');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-failover-'));
  const round = new Round(dir);
  let sampler: NodeJS.Timeout | undefined;
  const cleanup = async () => {
    clearInterval(sampler);
    await ferry(dir, ['lab', 'down']).catch((e: Error) => log(`lab down: ${e.message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => void cleanup().finally(() => process.exit(130)));
  process.on('SIGTERM', () => void cleanup().finally(() => process.exit(143)));
  const rows: FailoverRow[] = [];
  try {
    log(`a lab of 3 hosts in ${dir}`);
    const lab = JSON.parse(await ferry(dir, ['lab', 'up', '--hosts', '3', '--node-memory', '1024', '--json'])) as { id: string };
    const spaces = netnsByInode(`fl-${lab.id}-`);
    sampler = setInterval(() => {
      round.samples++;
      for (const [vm, where] of qemuCopies(VMS, spaces)) if (where.length > 1) round.doubles.push(`${vm} in ${where.join(' and ')}`);
    }, 20);
    await ferry(dir, ['node', 'maintenance', 'host-1']);
    await ferry(dir, ['vm', 'create', 'db', '--node', 'host-2', '--memory', '128', '--workload', 'disk:20']);
    await ferry(dir, ['vm', 'create', 'web', '--node', 'host-2', '--memory', '128', '--workload', 'tcp']);
    await ferry(dir, ['vm', 'set', 'db', '--ha', 'on', '--ha-priority', '200']);
    await ferry(dir, ['vm', 'set', 'web', '--ha', 'on']);
    for (const vm of VMS) await ferry(dir, ['vm', 'start', vm]);
    await until('db to write records', 60_000, () => (round.console('db').diskAcked ?? 0) >= 20);
    for (const ttlS of TTLS) {
      await ferry(dir, ['cluster', 'set', 'hostLeaseTtlS', String(ttlS)]);
      // Every host's lease is granted again with the new TTL at its next heartbeat.
      await sleep(3000);
      for (let rep = 0; rep < CRASHES; rep++) {
        const row = await round.crash(ttlS, rep);
        rows.push(row);
        fs.appendFileSync(RESULTS, JSON.stringify(row) + '\n');
        log(
          `ttl ${ttlS} s #${rep}: ${row.victim} crashed; detected after ${row.detectedAfterCrashMs} ms (lease ${row.detectionMs} ms), ` +
            row.restarts.map((r) => `${r.vm} running on ${r.to} ${r.sinceDetectionMs} ms after detection`).join(', ') +
            `; db writing again after ${row.dbWritingAfterCrashMs} ms, ${row.lostAcked} acknowledged record(s) lost, ${row.doubleRuns} double run(s)`,
        );
      }
    }
    const minutes = ((Date.now() - startedAt) / 60000).toFixed(1);
    writeFailoverReport(rows, { minutes, outDir: OUT_DIR, samples: round.samples, crashes: CRASHES, ttls: TTLS, defaultTtlS: DEFAULT_SETTINGS.hostLeaseTtlS });
    log(`done in ${minutes} min: docs/BENCHMARKS.md (failover), ${path.relative(projectRoot(), RESULTS)}`);
  } finally {
    await cleanup();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
