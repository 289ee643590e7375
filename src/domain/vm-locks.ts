/**
 * Which operations on one VM may overlap. Every operation holds the VM's
 * lock by its kind for as long as it acts; when another asks, this table
 * (asked × held) decides:
 *
 *   share    both go on (a backup's copy runs while the VM migrates)
 *   wait     the asker waits until the holder lets go (a migration waits for
 *            the moment a backup freezes or merges the disk)
 *   preempt  the holder is told to stop (its lease's signal aborts) and the
 *            asker waits for it (a migration cancels a replica sync; the
 *            sync's changed blocks go with the next one)
 *   refuse   the asker fails at once with a message naming the holder
 *
 * Pure data and one function, so the table is tested as a table.
 */

export const VmOperation = {
  /** From the request (queued) until the migration ended. */
  Migration: 'migration',
  /** A backup, from its request until its overlay is merged back. */
  Backup: 'backup',
  /** The moment a backup freezes the disk under its overlay, or merges it back. */
  DiskFreeze: 'disk-freeze',
  ReplicaSync: 'replica-sync',
  StorageMove: 'storage-move',
  Save: 'save',
  Start: 'start',
  Stop: 'stop',
  Delete: 'delete',
  /** Changing the VM's settings (compat mode, switch). */
  Configure: 'configure',
} as const;
export type VmOperation = (typeof VmOperation)[keyof typeof VmOperation];

export const VM_OPERATIONS = Object.values(VmOperation);

/** A refusal's message; `{vm}` and `{id}` (the holder's id) are filled in. */
export interface Refuse {
  refuse: string;
}
export type Overlap = 'share' | 'wait' | 'preempt' | Refuse;

const busy: Refuse = { refuse: "VM '{vm}' has another operation in progress ({holder})" };
const migrating = (then: string): Refuse => ({ refuse: `VM '{vm}' is migrating${then}` });
const backingUp = (then: string): Refuse => ({ refuse: `a backup of VM '{vm}' is running ({id})${then}` });
const moving: Refuse = { refuse: "VM '{vm}''s disk is being moved; try again when the move ends" };

/** OVERLAP[asked][held]. */
export const OVERLAP: Record<VmOperation, Record<VmOperation, Overlap>> = {
  migration: {
    migration: { refuse: "a migration of VM '{vm}' is already running ({id})" },
    backup: 'share',
    'disk-freeze': 'wait',
    'replica-sync': 'preempt',
    'storage-move': { refuse: "VM '{vm}''s disk is being moved; migrate it when the move ends" },
    save: busy,
    start: busy,
    stop: busy,
    delete: busy,
    configure: 'share',
  },
  backup: {
    migration: 'share',
    backup: { refuse: "a backup of VM '{vm}' is already running ({id})" },
    'disk-freeze': 'share',
    'replica-sync': 'share',
    'storage-move': moving,
    save: 'share',
    start: busy,
    stop: 'share',
    delete: busy,
    configure: 'share',
  },
  'disk-freeze': {
    migration: 'wait',
    backup: 'share',
    'disk-freeze': 'wait',
    'replica-sync': 'wait',
    'storage-move': moving,
    save: 'wait',
    start: 'wait',
    stop: 'wait',
    delete: busy,
    configure: 'share',
  },
  'replica-sync': {
    migration: migrating(''),
    backup: { refuse: 'a backup of the VM is running' },
    'disk-freeze': { refuse: 'a backup of the VM is running' },
    'replica-sync': 'wait',
    'storage-move': moving,
    save: busy,
    start: busy,
    stop: busy,
    delete: busy,
    configure: 'share',
  },
  'storage-move': {
    migration: migrating('; move its storage after the migration'),
    backup: backingUp(''),
    'disk-freeze': backingUp(''),
    'replica-sync': 'wait',
    'storage-move': busy,
    save: busy,
    start: busy,
    stop: busy,
    delete: busy,
    configure: busy,
  },
  save: {
    migration: migrating(': only a running VM can be saved'),
    backup: 'share',
    'disk-freeze': 'wait',
    'replica-sync': 'preempt',
    'storage-move': busy,
    save: busy,
    start: busy,
    stop: busy,
    delete: busy,
    configure: busy,
  },
  start: {
    migration: busy,
    backup: backingUp('; start the VM after it'),
    'disk-freeze': 'wait',
    'replica-sync': busy,
    'storage-move': busy,
    save: busy,
    start: busy,
    stop: busy,
    delete: busy,
    configure: busy,
  },
  stop: {
    migration: migrating('; cancel the migration first'),
    backup: 'share',
    'disk-freeze': 'wait',
    'replica-sync': 'preempt',
    'storage-move': busy,
    save: busy,
    start: busy,
    stop: busy,
    delete: busy,
    configure: busy,
  },
  delete: {
    migration: busy,
    backup: backingUp('; delete the VM after it'),
    'disk-freeze': backingUp('; delete the VM after it'),
    'replica-sync': busy,
    'storage-move': busy,
    save: busy,
    start: busy,
    stop: busy,
    delete: busy,
    configure: busy,
  },
  configure: {
    migration: 'share',
    backup: 'share',
    'disk-freeze': 'share',
    'replica-sync': 'share',
    'storage-move': busy,
    save: busy,
    start: busy,
    stop: busy,
    delete: busy,
    configure: busy,
  },
};

export interface HeldBy {
  kind: VmOperation;
  id?: string;
}

export type Decision = { action: 'go' } | { action: 'wait'; on: HeldBy[]; preempt: HeldBy[] } | { action: 'refuse'; message: string; by: HeldBy };

/** What an operation of kind `asked` on `vm` must do, given who holds the VM now. */
export function decide(vm: string, asked: VmOperation, held: readonly HeldBy[]): Decision {
  const on: HeldBy[] = [];
  const preempt: HeldBy[] = [];
  for (const h of held) {
    const o = OVERLAP[asked][h.kind];
    if (o === 'share') continue;
    if (o === 'wait') on.push(h);
    else if (o === 'preempt') {
      on.push(h);
      preempt.push(h);
    } else {
      const message = o.refuse
        .replaceAll('{vm}', vm)
        .replaceAll('{id}', h.id ?? h.kind)
        .replaceAll('{holder}', h.id ? `${h.kind} ${h.id}` : h.kind);
      return { action: 'refuse', message, by: h };
    }
  }
  return on.length ? { action: 'wait', on, preempt } : { action: 'go' };
}
