/** VM records in the store (`vms/<name>`), every change a compare-and-set. */
import type { Clock } from '../../domain/clock.js';
import { ErrorCode, errors, isFerryError } from '../../domain/errors.js';
import type { VmRecord, VmState } from '../../domain/records.js';
import { type ClusterStore, update, updateRecord } from '../../ports/store.js';
import type { VmRepository } from '../../ports/vm-repository.js';

export class StoreVms implements VmRepository {
  constructor(
    private readonly store: ClusterStore,
    private readonly clock: Clock,
  ) {}

  private key(name: string): string {
    return `vms/${name}`;
  }

  async list(): Promise<VmRecord[]> {
    return (await this.store.list<VmRecord>('vms/')).map((e) => e.value);
  }

  async find(name: string): Promise<VmRecord | undefined> {
    return (await this.store.get<VmRecord>(this.key(name)))?.value;
  }

  async get(name: string): Promise<VmRecord> {
    const vm = await this.find(name);
    if (!vm) throw errors.vmNotFound(name);
    return vm;
  }

  update(name: string, change: (vm: VmRecord) => VmRecord, opts: { waitForStore?: boolean } = {}): Promise<VmRecord> {
    const apply = (cur: VmRecord | undefined): VmRecord => {
      if (!cur) throw errors.vmNotFound(name);
      return change(cur);
    };
    return opts.waitForStore ? updateRecord<VmRecord>(this.store, this.clock, this.key(name), apply) : update<VmRecord>(this.store, this.key(name), apply);
  }

  setState(name: string, state: VmState, extra: Partial<VmRecord> = {}): Promise<VmRecord> {
    return this.update(name, (vm) => {
      const next: VmRecord = { ...vm, ...extra, state, stateSinceMs: this.clock.nowMs() };
      if (!('error' in extra)) delete next.error;
      return next;
    });
  }

  async create(record: VmRecord): Promise<void> {
    try {
      await this.store.put(this.key(record.name), record, { expectRevision: 0 });
    } catch (e) {
      if (isFerryError(e, ErrorCode.Conflict)) throw errors.alreadyExists('VM', record.name);
      throw e;
    }
  }

  async remove(name: string): Promise<void> {
    await this.store.delete(this.key(name));
  }

  nextIndex(): Promise<number> {
    return update<number>(this.store, 'counters/vm-index', (n) => (n ?? 0) + 1);
  }
}
