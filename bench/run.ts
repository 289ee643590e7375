/**
 * `npm run bench`: Ferry's default migration policy against plain QEMU
 * defaults (128 MiB/s, 300 ms, no convergence help) on the same VM, the same
 * workload and the same shaped link, alternating, in one run. Writes one JSON
 * line per migration to docs/bench/results.jsonl, then docs/BENCHMARKS.md and
 * its SVG plots from that file.
 *
 *   FERRY_BENCH_LINK_MBIT   link rate (default 1000)
 *   FERRY_BENCH_REPS        runs per variant and case (default 2)
 *   FERRY_BENCH_CASES       comma-separated case names to run (default all)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Cluster, followMigration } from '../src/cli/context.js';
import { nodeRoutes } from '../src/api/routes/nodes.js';
import { networkRoutes } from '../src/api/routes/networks.js';
import { requestMigration, vmRoutes } from '../src/api/routes/vms.js';
import { systemClock } from '../src/domain/clock.js';
import { down, up } from '../src/cli/daemons.js';
import { parseConsole } from '../src/guest/console.js';
import type { MigrationRecord, MigrationReport } from '../src/domain/migration.js';
import type { VmRecord } from '../src/domain/records.js';
import { StateLayout, projectRoot } from '../src/config/paths.js';
import { ShapedLink } from './link.js';
import { type BenchRow, writeReport } from './report.js';

const LINK_MBIT = Number(process.env.FERRY_BENCH_LINK_MBIT ?? 1000);
const REPS = Number(process.env.FERRY_BENCH_REPS ?? 2);
const ONLY = process.env.FERRY_BENCH_CASES?.split(',').filter(Boolean);
const OUT_DIR = path.join(projectRoot(), 'docs', 'bench');
const RESULTS = path.join(OUT_DIR, 'results.jsonl');

type Variant = 'ferry' | 'qemu-defaults';

interface SingleCase {
  name: string;
  memoryMiB: number;
  /** Dirty rate as a share of the link rate (0: idle). */
  dirtyShare: number;
}

const LINK_MIBPS = (LINK_MBIT * 1e6) / 8 / 1048576;
const SINGLE_CASES: SingleCase[] = [
  { name: 'idle-256', memoryMiB: 256, dirtyShare: 0 },
  { name: 'idle-1024', memoryMiB: 1024, dirtyShare: 0 },
  { name: 'dirty-25', memoryMiB: 512, dirtyShare: 0.25 },
  { name: 'dirty-75', memoryMiB: 512, dirtyShare: 0.75 },
  { name: 'dirty-150', memoryMiB: 512, dirtyShare: 1.5 },
];

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Bench {
  rows: BenchRow[] = [];
  constructor(
    readonly c: Cluster,
    readonly layout: StateLayout,
    readonly link: ShapedLink,
  ) {}

  record(row: BenchRow): void {
    this.rows.push(row);
    fs.appendFileSync(RESULTS, JSON.stringify(row) + '\n');
    log(
      `${row.case} ${row.variant}#${row.rep}: ${row.status} total ${row.totalMs} ms, transfer ${row.transferMs} ms (floor ${row.floorMs} ms), ` +
        `downtime ${row.downtimeMs} ms, blackout ${row.blackoutMs} ms, ${(row.bytesPerRam ?? 0).toFixed(2)}× RAM` +
        (row.predictionErrorPct !== null ? `, prediction ${row.predictionErrorPct > 0 ? '+' : ''}${row.predictionErrorPct}%` : ''),
    );
  }

  async vm(name: string): Promise<VmRecord> {
    return this.c.api.call(vmRoutes.show, { params: { name } }) as Promise<VmRecord>;
  }

  async boot(name: string, memoryMiB: number, workload: string, node: string): Promise<void> {
    await this.c.api.call(vmRoutes.create, { body: { name, memoryMiB, workload, node } });
    await this.c.api.call(vmRoutes.start, { params: { name }, body: {} }, { timeoutMs: 120_000 });
    const deadline = Date.now() + 120_000;
    while (parseConsole(fs.existsSync(this.layout.consoleLog(name)) ? fs.readFileSync(this.layout.consoleLog(name), 'utf8') : '').ticks.length < 3) {
      if (Date.now() > deadline) throw new Error(`${name} did not boot`);
      await sleep(250);
    }
  }

  async migrate(vm: string, to: string, policy: Variant): Promise<{ report: MigrationReport; record: MigrationRecord }> {
    const started = (await requestMigration(this.c.api, vm, { to, policy: policy as never })) as MigrationRecord;
    return this.follow(started.id);
  }

  async follow(id: string): Promise<{ report: MigrationReport; record: MigrationRecord }> {
    const record = await followMigration(
      this.c.api,
      id,
      () => {},
      (t) => systemClock.sleep(t),
    );
    return { report: record.report, record };
  }

  row(kase: string, variant: Variant, rep: number, report: MigrationReport, record: MigrationRecord, ramBytes: number): BenchRow {
    const nonZero = record.predicted?.input.nonZeroBytes ?? null;
    const floorMs = nonZero !== null ? Math.round((nonZero / this.link.bytesPerSec) * 1000) : null;
    const transferMs = report.transferMs ?? null;
    return {
      case: kase,
      variant,
      rep,
      status: report.status,
      error: report.error ?? null,
      totalMs: report.totalMs,
      transferMs,
      floorMs,
      ratioToFloor: transferMs !== null && floorMs ? Number((transferMs / floorMs).toFixed(3)) : null,
      downtimeMs: report.downtimeMs,
      blackoutMs: report.guestBlackoutMs,
      bytes: report.transferredBytes,
      ramBytes,
      bytesPerRam: Number((report.transferredBytes / ramBytes).toFixed(3)),
      nonZeroBytes: nonZero,
      dirtyRateBytesPerSec: record.predicted?.input.dirtyRateBytesPerSec ?? null,
      predictedTotalMs: report.predicted?.totalMs ?? null,
      strategy: report.predicted?.strategy ?? null,
      predictionErrorPct:
        report.predicted && report.status === 'completed' ? Math.round(((report.predicted.totalMs - report.totalMs) / report.totalMs) * 100) : null,
      maxThrottlePercent: report.maxThrottlePercent ?? 0,
      postcopyAfterMs: report.postcopyAfterMs ?? null,
      escalation: report.escalation ?? null,
      linkMbit: LINK_MBIT,
      atMs: Date.now(),
      predictionInput: record.predicted?.input ?? null,
      policy: record.policy ?? null,
    };
  }

  /** One VM, both variants alternating, REPS each, moved between node-1 and node-2. */
  async single(k: SingleCase): Promise<void> {
    const name = k.name.replace(/[^a-z0-9-]/g, '');
    const rate = Math.round(LINK_MIBPS * k.dirtyShare);
    const workload = k.dirtyShare > 0 ? `memory:${rate}` : 'idle';
    log(`case ${k.name}: ${k.memoryMiB} MiB, workload ${workload}`);
    await this.boot(name, k.memoryMiB, workload, 'node-1');
    // Let the workload write its whole working set (half of RAM) once, so every run sees the same memory.
    await sleep(rate > 0 ? Math.min(20_000, (k.memoryMiB / 2 / rate) * 1000 + 1000) : 2000);
    for (let rep = 0; rep < REPS; rep++) {
      const order: Variant[] = rep % 2 === 0 ? ['ferry', 'qemu-defaults'] : ['qemu-defaults', 'ferry'];
      for (const variant of order) {
        const on = (await this.vm(name)).node;
        const to = on === 'node-1' ? 'node-2' : 'node-1';
        const { report, record } = await this.migrate(name, to, variant);
        this.record(this.row(k.name, variant, rep, report, record, k.memoryMiB * 1048576));
        await sleep(1500);
      }
    }
    await this.c.api.call(vmRoutes.stop, { params: { name } }, { timeoutMs: 60_000 });
    await this.c.api.call(vmRoutes.delete, { params: { name } });
  }

  /**
   * Six VMs leave node-1 for the other three: Ferry's drain (queue, slots,
   * placement, default policy) against a naive drain that moves one VM at a
   * time with plain QEMU defaults. The lower bound is node-1's bytes over
   * the link (every byte leaves node-1).
   */
  async drain(): Promise<void> {
    const names = Array.from({ length: 6 }, (_, i) => `d${i + 1}`);
    log('case drain-6x4: 6 VMs of 256 MiB (memory:4) on node-1');
    for (const n of names) await this.boot(n, 256, 'memory:4', 'node-1');
    await sleep(2000);
    for (const variant of ['ferry', 'naive'] as const) {
      const started = Date.now();
      let reports: { report: MigrationReport; record: MigrationRecord }[];
      if (variant === 'ferry') {
        const res = await this.c.api.call(nodeRoutes.maintenance, { params: { name: 'node-1' }, body: { drain: 'live' } }, { timeoutMs: 120_000 });
        reports = await Promise.all(res.migrations.map((m) => this.follow(m.id)));
      } else {
        reports = [];
        const targets = ['node-2', 'node-3', 'node-4'];
        for (const [i, n] of names.entries()) reports.push(await this.migrate(n, targets[i % 3]!, 'qemu-defaults'));
      }
      const makespanMs = Date.now() - started;
      const bytes = reports.reduce((s, r) => s + r.report.transferredBytes, 0);
      const nonZero = reports.reduce((s, r) => s + (r.record.predicted?.input.nonZeroBytes ?? 0), 0);
      const boundMs = Math.round((nonZero / this.link.bytesPerSec) * 1000);
      const row: BenchRow = {
        case: 'drain-6x4',
        variant,
        rep: 0,
        status: reports.every((r) => r.report.status === 'completed') ? 'completed' : 'failed',
        error: null,
        totalMs: makespanMs,
        transferMs: null,
        floorMs: boundMs,
        ratioToFloor: Number((makespanMs / boundMs).toFixed(3)),
        downtimeMs: Math.max(...reports.map((r) => r.report.downtimeMs ?? 0)),
        blackoutMs: Math.max(...reports.map((r) => r.report.guestBlackoutMs ?? 0)),
        bytes,
        ramBytes: 6 * 256 * 1048576,
        bytesPerRam: Number((bytes / (6 * 256 * 1048576)).toFixed(3)),
        nonZeroBytes: nonZero,
        dirtyRateBytesPerSec: null,
        predictedTotalMs: null,
        strategy: null,
        predictionErrorPct: null,
        maxThrottlePercent: 0,
        postcopyAfterMs: null,
        escalation: null,
        linkMbit: LINK_MBIT,
        atMs: Date.now(),
        moves: reports.map((r) => ({ vm: r.report.vm, to: r.report.to, totalMs: r.report.totalMs, queuedMs: r.report.queuedMs })),
      };
      this.record(row);
      if (variant === 'ferry') {
        // Back to node-1 for the naive run (not measured).
        await this.c.api.call(nodeRoutes.resume, { params: { name: 'node-1' } });
        for (const n of names) await this.migrate(n, 'node-1', 'ferry');
      }
    }
    for (const n of names) {
      await this.c.api.call(vmRoutes.stop, { params: { name: n } }, { timeoutMs: 60_000 });
      await this.c.api.call(vmRoutes.delete, { params: { name: n } });
    }
  }
}

async function main(): Promise<void> {
  const startedAt = Date.now();
  fs.mkdirSync(OUT_DIR, { recursive: true });
  fs.writeFileSync(RESULTS, '');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-'));
  const layout = new StateLayout(dir);
  let link: ShapedLink | undefined;
  const cleanup = async () => {
    link?.remove();
    await down(layout).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => void cleanup().finally(() => process.exit(130)));
  process.on('SIGTERM', () => void cleanup().finally(() => process.exit(143)));
  try {
    log(`starting a 4-node cluster in ${dir}`);
    await up(layout, { nodes: 4, progress: log });
    const c = Cluster.connect(layout);
    const nets = await c.api.call(networkRoutes.list, {});
    const migration = nets.find((n) => n.name === 'migration')!;
    link = new ShapedLink(migration.subnet, LINK_MBIT * 1e6);
    link.install();
    log(`migration network ${migration.subnet} shaped to ${LINK_MBIT} Mbit/s`);
    const bench = new Bench(c, layout, link);
    for (const k of SINGLE_CASES) if (!ONLY || ONLY.includes(k.name)) await bench.single(k);
    if (!ONLY || ONLY.includes('drain-6x4')) await bench.drain();
    const minutes = ((Date.now() - startedAt) / 60000).toFixed(1);
    writeReport(bench.rows, { linkMbit: LINK_MBIT, reps: REPS, minutes, outDir: OUT_DIR, qemu: await qemuVersion(c) });
    log(`done in ${minutes} min: ${path.join('docs', 'BENCHMARKS.md')}, ${path.relative(projectRoot(), RESULTS)}`);
  } finally {
    await cleanup();
  }
}

async function qemuVersion(c: Cluster): Promise<string> {
  const nodes = await c.api.call(nodeRoutes.list, {});
  return `QEMU ${nodes[0]?.capabilities?.qemuVersion ?? '?'} (${nodes[0]?.capabilities?.accelerator ?? '?'})`;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
