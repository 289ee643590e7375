/**
 * The VM lock table in this controller's memory: leases by VM and
 * operation kind, decided by domain/vm-locks.ts. A waiting asker is woken
 * on every release and asks the table again; a preempted holder sees its
 * lease's signal abort with a reason naming the operation that wants the VM.
 */
import type { Clock } from '../../domain/clock.js';
import { errors, FerryError, ErrorCode } from '../../domain/errors.js';
import { decide, type VmOperation } from '../../domain/vm-locks.js';
import type { AcquireOptions, LockHolder, VmLease, VmLocks } from '../../ports/locks.js';

interface Held extends LockHolder {
  lease: Lease;
}

class Lease implements VmLease {
  private readonly ac = new AbortController();
  released = false;
  constructor(
    readonly holder: LockHolder,
    private readonly onRelease: () => void,
  ) {}
  get signal(): AbortSignal {
    return this.ac.signal;
  }
  preempt(by: VmOperation): void {
    if (!this.ac.signal.aborted) this.ac.abort(new FerryError(ErrorCode.Aborted, `preempted by a ${by}`, { details: { preemptedBy: by } }));
  }
  release(): void {
    if (this.released) return;
    this.released = true;
    this.onRelease();
  }
}

/** Why a holder stopped: the operation that preempted it, if one did. */
export function preemptedBy(signal: AbortSignal): VmOperation | undefined {
  const r = signal.reason as unknown;
  return r instanceof FerryError ? (r.details.preemptedBy as VmOperation | undefined) : undefined;
}

const DEFAULT_WAIT_MS = 30 * 60_000;

export class VmLockTable implements VmLocks {
  private readonly held = new Map<string, Held[]>();
  private readonly waiters = new Set<() => void>();

  constructor(private readonly clock: Clock) {}

  holders(vm: string): LockHolder[] {
    return (this.held.get(vm) ?? []).map(({ kind, id, sinceMs }) => ({ kind, ...(id ? { id } : {}), sinceMs }));
  }

  isHeld(vm: string, ...kinds: VmOperation[]): boolean {
    return (this.held.get(vm) ?? []).some((h) => kinds.length === 0 || kinds.includes(h.kind));
  }

  refusal(vm: string, kind: VmOperation): string | undefined {
    const d = decide(vm, kind, this.held.get(vm) ?? []);
    return d.action === 'refuse' ? d.message : undefined;
  }

  async acquire(vm: string, kind: VmOperation, opts: AcquireOptions = {}): Promise<VmLease> {
    const deadline = this.clock.nowMs() + (opts.waitMs ?? DEFAULT_WAIT_MS);
    for (;;) {
      const list = this.held.get(vm) ?? [];
      const d = decide(vm, kind, list);
      if (d.action === 'refuse') throw errors.invalidState(d.message, { vm, heldBy: d.by.kind, ...(d.by.id ? { holderId: d.by.id } : {}) });
      if (d.action === 'go') {
        const holder: LockHolder = { kind, ...(opts.id ? { id: opts.id } : {}), sinceMs: this.clock.nowMs() };
        const lease = new Lease(holder, () => this.remove(vm, lease));
        list.push({ ...holder, lease });
        this.held.set(vm, list);
        return lease;
      }
      for (const p of d.preempt) list.find((h) => h.kind === p.kind && h.id === p.id)?.lease.preempt(kind);
      const left = deadline - this.clock.nowMs();
      if (left <= 0) {
        const by = d.on[0]!;
        throw errors.timeout(`waiting for the ${by.kind}${by.id ? ` ${by.id}` : ''} of VM '${vm}'`, opts.waitMs ?? DEFAULT_WAIT_MS);
      }
      if (opts.signal?.aborted) throw errors.aborted(`waiting for VM '${vm}'`);
      await this.released(Math.min(left, 1000), opts.signal);
    }
  }

  async with<T>(vm: string, kind: VmOperation, fn: (lease: VmLease) => Promise<T>, opts?: AcquireOptions): Promise<T> {
    const lease = await this.acquire(vm, kind, opts);
    try {
      return await fn(lease);
    } finally {
      lease.release();
    }
  }

  private remove(vm: string, lease: Lease): void {
    const list = (this.held.get(vm) ?? []).filter((h) => h.lease !== lease);
    if (list.length) this.held.set(vm, list);
    else this.held.delete(vm);
    for (const w of [...this.waiters]) w();
  }

  /** Resolves on the next release anywhere, or after `ms` (the table is asked again either way). */
  private released(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const ac = new AbortController();
      const done = () => {
        this.waiters.delete(done);
        ac.abort();
        resolve();
      };
      this.waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
      this.clock.sleep(ms, ac.signal).then(done, () => {});
    });
  }
}
