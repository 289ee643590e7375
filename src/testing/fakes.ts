/**
 * Fakes of the controller's other edges for component tests: the shared
 * volume (files in the fake world), the switch daemon, and another cluster's
 * replica side. Each routes its calls through the world, so a scenario can
 * inject a fault into any of them.
 */
import { ErrorCode, FerryError } from '../domain/errors.js';
import type { ProbeResult } from '../domain/probe.js';
import type { IncomingView, RecoveryPoint } from '../domain/replicas.js';
import type { RemoteCluster, ReplicaRegistration } from '../ports/remote-cluster.js';
import type { MacEntry, MacMove, SwitchControl, SwitchState, SwitchWanted } from '../ports/switch-control.js';
import type { ExportHandle, FrozenCopy, Volume } from '../ports/volume.js';
import type { ImageBuilder, ImageRecipe } from '../ports/image-builder.js';
import type { Clock } from '../domain/clock.js';
import type { FakeWorld } from './fake-hypervisor.js';

import type { ImageProbe } from '../domain/images.js';

export class FakeVolume implements Volume {
  readonly snapshots = new Map<string, Set<string>>();
  openExports = 0;
  constructor(
    private readonly world: FakeWorld,
    private readonly clock: Clock,
  ) {}
  private async op(name: string): Promise<void> {
    await this.world.enter('volume', `volume.${name}`);
  }
  private need(file: string): void {
    if (!this.world.files.has(file)) throw new FerryError(ErrorCode.Internal, `no such file ${file}`);
  }
  async create(file: string): Promise<void> {
    await this.op('create');
    this.world.files.add(file);
  }
  /** What the fake's probe answers for a file (set by a test); a file not set is a qcow2 image of 1 GiB. */
  readonly probes = new Map<string, ImageProbe>();
  async probe(file: string): Promise<ImageProbe> {
    await this.op('probe');
    this.need(file);
    return this.probes.get(file) ?? { format: 'qcow2', virtualSizeBytes: 1 << 30, head: new Uint8Array(0) };
  }
  async copyFile(source: string, target: string): Promise<number> {
    await this.op('copy-file');
    this.need(source);
    this.world.files.add(target);
    return 4096;
  }
  async clone(file: string, backing: { file: string }): Promise<void> {
    await this.op('clone');
    this.need(backing.file);
    this.world.files.add(file);
  }
  async createFirmwareVars(file: string): Promise<void> {
    await this.op('firmware-vars');
    this.world.files.add(file);
  }
  /** The files of each ISO written, by path (a test reads a seed's user-data back). */
  readonly isos = new Map<string, { label: string; files: Record<string, string> }>();
  async writeIso(file: string, label: string, files: Record<string, string>): Promise<void> {
    await this.op('write-iso');
    this.isos.set(file, { label, files: { ...files } });
    this.world.files.add(file);
  }
  async convert(source: string, target: string): Promise<number> {
    await this.op('convert');
    this.need(source);
    this.world.files.add(target);
    return 4096;
  }
  async replace(file: string, source: string[]): Promise<void> {
    await this.op('replace');
    this.need(source.at(-1)!);
    this.world.files.add(file);
  }
  remove(file: string): void {
    this.world.files.delete(file);
  }
  exists(file: string): boolean {
    return this.world.files.has(file);
  }
  sizeOf(): number {
    return 4096;
  }
  touch(file: string): void {
    this.world.files.add(file);
  }
  tail(): string {
    return '';
  }
  readFrom(): { data: Buffer; size: number } {
    return { data: Buffer.alloc(0), size: 0 };
  }
  async verify(file: string): Promise<void> {
    await this.op('verify');
    this.need(file);
  }
  async rebase(child: string): Promise<void> {
    await this.op('rebase');
    this.need(child);
  }
  async mergeOffline(overlay: string): Promise<void> {
    await this.op('mergeOffline');
    this.need(overlay);
    this.world.files.delete(overlay);
  }
  async copyFrozen(req: FrozenCopy): Promise<{ bytes: number; ms: number; pausedMs: number }> {
    await this.op('copyFrozen');
    this.need(req.source);
    let pausedMs = 0;
    while (req.hold?.()) {
      if (req.signal?.aborted) throw new FerryError(ErrorCode.Aborted, 'copy stopped');
      const t = this.clock.nowMs();
      await this.clock.sleep(100);
      pausedMs += this.clock.nowMs() - t;
    }
    this.world.files.add(req.target);
    return { bytes: req.mode === 'full' ? req.sizeBytes : 65536, ms: 5, pausedMs };
  }
  async snapshot(file: string, id: string): Promise<void> {
    await this.op('snapshot');
    this.need(file);
    (this.snapshots.get(file) ?? this.snapshots.set(file, new Set()).get(file)!).add(id);
  }
  async deleteSnapshot(file: string, id: string): Promise<void> {
    await this.op('deleteSnapshot');
    this.snapshots.get(file)?.delete(id);
  }
  async exportImage(file: string, address: string): Promise<ExportHandle> {
    await this.op('exportImage');
    this.need(file);
    this.openExports++;
    let open = true;
    return {
      endpoint: { address, port: this.world.port(), export: 'disk' },
      close: async () => {
        if (open) this.openExports--;
        open = false;
      },
    };
  }
  stopLeftovers(): number[] {
    return [];
  }
  ensureWritableDir(dir: string): void {
    if (dir.startsWith('/proc')) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
  }

  /** Symbolic links, as a test declares them (`link → target`). */
  readonly links = new Map<string, string>();

  realPath(p: string): string {
    for (const [link, target] of this.links) if (p === link || p.startsWith(link + '/')) return target + p.slice(link.length);
    return p;
  }
}

/** The switch daemon: MACs move to wherever the fake world says a VM runs. */
export class FakeSwitch implements SwitchControl {
  readonly wanted = new Map<string, SwitchWanted>();
  readonly probes = new Set<string>();
  constructor(
    private readonly world: FakeWorld,
    private readonly clock: Clock,
    /** The MAC of a VM, by name (the switch learns it from the guest's frames). */
    private readonly macOf: (mac: string) => string | undefined,
  ) {}
  private async op(name: string): Promise<void> {
    await this.world.enter('switch', `switch.${name}`);
  }
  async switches(): Promise<SwitchState[]> {
    await this.op('switches');
    return [...this.wanted].map(([name, w]) => ({ name, nodes: w.nodes, ports: 0, ageingMs: w.ageingMs }));
  }
  async apply(name: string, wanted: SwitchWanted): Promise<SwitchState> {
    await this.op('apply');
    this.wanted.set(name, wanted);
    return { name, nodes: wanted.nodes, ports: 0, ageingMs: wanted.ageingMs };
  }
  async remove(name: string): Promise<void> {
    await this.op('remove');
    this.wanted.delete(name);
  }
  /** Where the guest with `mac` runs now, as its frames would tell the switch. */
  private nodeOf(mac: string): string | undefined {
    const vm = this.macOf(mac);
    if (!vm) return undefined;
    const placed = Object.entries(this.world.placement()).find(([, guests]) => guests.some((g) => g.name === vm && g.runState === 'running'));
    return placed?.[0];
  }
  async macs(): Promise<MacEntry[]> {
    await this.op('macs');
    return [];
  }
  async moves(mac: string): Promise<MacMove[]> {
    await this.op('moves');
    const node = this.nodeOf(mac);
    return node ? [{ mac, toNode: node, atMs: this.clock.nowMs(), etherType: 0x8035 }] : [];
  }
  async ping(): Promise<{ answered: boolean; rttMs: number | null }> {
    await this.op('ping');
    return { answered: true, rttMs: 1 };
  }
  async startProbe(id: string): Promise<void> {
    await this.op('startProbe');
    this.probes.add(id);
  }
  private result(id: string): ProbeResult {
    return { id, ip: '10.99.0.1', sent: 100, received: 99, maxGapMs: 12, maxGapAtMs: 50, durationMs: 100 };
  }
  async probe(id: string): Promise<ProbeResult> {
    await this.op('probe');
    return this.result(id);
  }
  async stopProbe(id: string): Promise<ProbeResult> {
    await this.op('stopProbe');
    if (!this.probes.delete(id)) throw new FerryError(ErrorCode.InvalidArgument, `no probe '${id}'`);
    return this.result(id);
  }
}

/** Another cluster's replica side: a sync opens an export and closes into a recovery point. */
export class FakeRemote implements RemoteCluster {
  readonly points: RecoveryPoint[] = [];
  open = 0;
  constructor(
    private readonly world: FakeWorld,
    readonly url: string,
    private readonly clusterId = 'far-cluster',
  ) {}
  private async op(name: string): Promise<void> {
    await this.world.enter('remote', `remote.${name}`);
  }
  async replicaTarget(): Promise<{ clusterId: string }> {
    await this.op('replicaTarget');
    return { clusterId: this.clusterId };
  }
  async register(r: ReplicaRegistration): Promise<IncomingView> {
    await this.op('register');
    return {
      vm: r.vm,
      source: { clusterId: r.source.clusterId, url: r.source.url },
      spec: r.spec,
      interval: r.interval,
      keep: r.keep,
      disk: '/far/disk',
      points: [],
      state: 'replicating',
      createdAtMs: 0,
    };
  }
  async openSync(): Promise<{ address: string; port: number; export: string }> {
    await this.op('openSync');
    this.open++;
    return { address: '127.0.0.9', port: this.world.port(), export: 'disk' };
  }
  async closeSync(_vm: string, point?: RecoveryPoint): Promise<unknown> {
    await this.op('closeSync');
    if (this.open > 0) this.open--;
    if (point) this.points.push(point);
    return { point: point ?? null };
  }
  async failover(): Promise<{ vm: { name: string }; point: RecoveryPoint }> {
    await this.op('failover');
    return { vm: { name: 'x' }, point: this.points.at(-1)! };
  }
  async remove(): Promise<void> {
    await this.op('remove');
  }
}

/** Builds nothing: `build` answers the file a test set for the recipe (it must be in the fake volume), and refuses any other. */
export class FakeImageBuilder implements ImageBuilder {
  readonly built = new Map<ImageRecipe, string>();
  builds = 0;
  async build(recipe: ImageRecipe): Promise<string> {
    this.builds++;
    const file = this.built.get(recipe);
    if (!file) throw new FerryError(ErrorCode.ImageBuild, `the fake builder has no image for recipe '${recipe}'`);
    return file;
  }
}
