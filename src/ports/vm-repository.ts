/** The VM records: the only way subsystems read and change them (every change a compare-and-set). */
import type { VmRecord, VmState } from '../domain/records.js';

export interface VmRepository {
  list(): Promise<VmRecord[]>;
  /** Throws `vm-not-found`. */
  get(name: string): Promise<VmRecord>;
  find(name: string): Promise<VmRecord | undefined>;
  /** Changes a record with compare-and-set, retrying on conflict; throws `vm-not-found`. */
  /** `waitForStore`: an operation's step that must land waits out a store that does not answer (see updateRecord). */
  update(name: string, change: (vm: VmRecord) => VmRecord, opts?: { waitForStore?: boolean }): Promise<VmRecord>;
  /** Sets the state (and `stateSinceMs`); clears `error` unless `extra` sets it. */
  setState(name: string, state: VmState, extra?: Partial<VmRecord>): Promise<VmRecord>;
  /** Adds a record; throws `already-exists` when the name is taken. */
  create(record: VmRecord): Promise<void>;
  remove(name: string): Promise<void>;
  /** The next VM index (addresses and MACs). */
  nextIndex(): Promise<number>;
}
