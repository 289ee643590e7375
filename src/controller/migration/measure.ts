/**
 * What the pre-flight prediction needs, measured: the guest's dirty rate
 * and non-zero memory (its QEMU) and the link's throughput (the source
 * sending to the target's beacon on the chosen network), at the same time,
 * so the guest is measured while a stream loads the host the way the
 * migration will. A guest measured while its migration waited in the queue,
 * and a link measured in the last minute, are not measured again.
 */
import type { Clock } from '../../domain/clock.js';
import { errors } from '../../domain/errors.js';
import type { MigrationNetwork, MigrationRecord } from '../../domain/migration.js';
import type { MigrationPolicy } from '../../domain/policy.js';
import { type Prediction, predict } from '../../domain/predict.js';
import type { NodeRecord } from '../../domain/records.js';
import type { GuestMeasurement } from '../../ports/hypervisor.js';
import type { NodeDirectory } from '../../ports/node-directory.js';

/** How long the pre-flight measures the guest's dirty rate, then the link. */
export const MEASURE_MS = 400;
/** A link measured this recently is not measured again (a drain's moves share it). */
const LINK_RATE_TTL_MS = 60_000;
/** A guest measured while queued is used if its migration starts within this time. */
const EARLY_TTL_MS = 30_000;

export class Measurements {
  /** Link rates measured recently, per network and source node. */
  private readonly linkRates = new Map<string, { bytesPerSec: number; atMs: number }>();
  /** Guest measurements started while a live migration waited in the queue, by migration id. */
  private readonly early = new Map<string, { atMs: number; result: Promise<GuestMeasurement> }>();

  constructor(
    private readonly nodes: NodeDirectory,
    private readonly clock: Clock,
  ) {}

  /** Measures the guest of a queued live migration while it waits for its slots. */
  whileQueued(record: MigrationRecord): void {
    if (record.mode !== 'live') return;
    const result = this.nodes.agent(record.from).then((a) => a.measure(record.vm, MEASURE_MS));
    result.catch(() => {});
    this.early.set(record.id, { atMs: this.clock.nowMs(), result });
  }

  /** Measures (or reuses) and predicts for a migration about to send memory. */
  async predictFor(record: MigrationRecord, source: NodeRecord, target: NodeRecord, network: MigrationNetwork, policy: MigrationPolicy): Promise<Prediction> {
    const early = this.early.get(record.id);
    this.early.delete(record.id);
    const fresh = early && this.clock.nowMs() - early.atMs < EARLY_TTL_MS ? early.result : undefined;
    return this.measureAndPredict(record.vm, source, target, network, policy, fresh);
  }

  async measureAndPredict(
    vm: string,
    source: NodeRecord,
    target: NodeRecord,
    network: MigrationNetwork,
    policy: MigrationPolicy,
    early?: Promise<GuestMeasurement>,
  ): Promise<Prediction> {
    const port = target.networks?.[network.name]?.port;
    if (!port) throw errors.invalidState(`node '${target.name}' does not answer on network ${network.name}`);
    const agent = await this.nodes.agent(source);
    const started = this.clock.nowMs();
    const linkKey = `${network.name}|${source.name}`;
    const known = this.linkRates.get(linkKey);
    const fresh = known && started - known.atMs < LINK_RATE_TTL_MS ? known.bytesPerSec : undefined;
    const [guest, linkBytesPerSec] = await Promise.all([
      early ?? agent.measure(vm, MEASURE_MS),
      fresh ?? agent.throughput(network.sourceAddress, network.targetAddress, port, MEASURE_MS).then((l) => l.bytesPerSec),
    ]);
    if (fresh === undefined) this.linkRates.set(linkKey, { bytesPerSec: linkBytesPerSec, atMs: this.clock.nowMs() });
    return predict(
      {
        ramBytes: guest.ramBytes,
        nonZeroBytes: guest.nonZeroBytes,
        dirtyRateBytesPerSec: guest.dirtyRateBytesPerSec,
        linkBytesPerSec,
        measureMs: this.clock.nowMs() - started,
      },
      policy,
    );
  }

  forget(id: string): void {
    this.early.delete(id);
  }
}
