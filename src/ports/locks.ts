/**
 * One operation lock per VM (see domain/vm-locks.ts for which operations
 * may overlap). Every operation on a VM holds a lease for as long as it
 * acts; a refusal names the operation that holds the VM.
 */
import type { VmOperation } from '../domain/vm-locks.js';

export interface LockHolder {
  kind: VmOperation;
  /** The operation's own id (a migration's or a backup's), if it has one. */
  id?: string;
  sinceMs: number;
}

export interface VmLease {
  readonly holder: LockHolder;
  /** Aborted when another operation preempts this one (its reason says which). */
  readonly signal: AbortSignal;
  release(): void;
}

export interface AcquireOptions {
  id?: string;
  /** How long to wait for holders the table says to wait for; refused after. */
  waitMs?: number;
  signal?: AbortSignal;
}

export interface VmLocks {
  acquire(vm: string, kind: VmOperation, opts?: AcquireOptions): Promise<VmLease>;
  holders(vm: string): LockHolder[];
  /** Whether any holder of the VM is one of `kinds` (any kind when omitted). */
  isHeld(vm: string, ...kinds: VmOperation[]): boolean;
  /** The refusal an operation of `kind` would get now, if any (for checks that move nothing). */
  refusal(vm: string, kind: VmOperation): string | undefined;
  /** Runs `fn` holding the lease, releasing it after. */
  with<T>(vm: string, kind: VmOperation, fn: (lease: VmLease) => Promise<T>, opts?: AcquireOptions): Promise<T>;
}
