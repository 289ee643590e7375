/**
 * Validation of what a user asks for. Pure: every rule here runs before
 * anything is created, so bad input leaves nothing behind.
 */
import { errors } from './errors.js';
import { tcpPeer } from './workload.js';
import { LIMITS, NAME_PATTERN } from './records.js';
import { validateOffloads } from './nic.js';

export interface VmCreateRequest {
  name: string;
  memoryMiB?: number;
  cpus?: number;
  diskGiB?: number;
  workload?: string;
  node?: string;
  /** Processor compatibility mode (R9): true/false or on/off. */
  compat?: boolean | 'on' | 'off';
  /** The virtual switch the NIC attaches to (default: default). */
  switch?: string;
  /** NIC offloads: a list, 'all' (default) or 'none'. */
  offloads?: string | string[];
}

export interface ValidVmCreate {
  name: string;
  memoryMiB: number;
  cpus: number;
  diskGiB: number;
  workload: string;
  node?: string;
  compat: boolean;
  switch?: string;
  offloads?: string[];
}

export const VM_DEFAULTS = { memoryMiB: 256, cpus: 1, diskGiB: 1, workload: 'idle' } as const;

export function validateName(kind: 'VM' | 'node' | 'switch' | 'network', name: unknown, field = 'name'): string {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    throw errors.invalid(
      field,
      `${kind} name '${String(name)}' is malformed: use 1-32 lowercase letters, digits and '-', starting with a letter`,
    );
  }
  return name;
}

function intInRange(field: string, label: string, value: unknown, range: { min: number; max: number }): number {
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < range.min || n > range.max) {
    throw errors.invalid(field, `${label} must be a whole number from ${range.min} to ${range.max}, got '${String(value)}'`);
  }
  return n;
}

export function validateVmCreate(req: VmCreateRequest): ValidVmCreate {
  const name = validateName('VM', req.name);
  const out: ValidVmCreate = {
    name,
    memoryMiB: intInRange('memoryMiB', 'memory (MiB)', req.memoryMiB ?? VM_DEFAULTS.memoryMiB, LIMITS.memoryMiB),
    cpus: intInRange('cpus', 'CPUs', req.cpus ?? VM_DEFAULTS.cpus, LIMITS.cpus),
    diskGiB: intInRange('diskGiB', 'disk (GiB)', req.diskGiB ?? VM_DEFAULTS.diskGiB, LIMITS.diskGiB),
    workload: req.workload ?? VM_DEFAULTS.workload,
    compat: validateOnOff('compat', req.compat ?? false),
  };
  if (tcpPeer(out.workload) === name) throw errors.invalid('workload', `VM '${name}' cannot be its own tcp-client peer`);
  if (req.node !== undefined) out.node = validateName('node', req.node);
  if (req.offloads !== undefined) out.offloads = validateOffloads(req.offloads);
  if (req.switch !== undefined) out.switch = validateName('switch', req.switch, 'switch');
  return out;
}

/** A switch given as a boolean or as on/off. */
export function validateOnOff(field: string, value: unknown): boolean {
  if (value === true || value === 'on') return true;
  if (value === false || value === 'off') return false;
  throw errors.invalid(field, `${field} must be on or off, got '${String(value)}'`);
}

/** The n-th VM's MAC: locally administered, unique in the cluster. */
export function macFor(index: number): string {
  return `52:54:00:99:${((index >> 8) & 0xff).toString(16).padStart(2, '0')}:${(index & 0xff).toString(16).padStart(2, '0')}`;
}

/** The n-th VM's address in 10.99.0.0/16 (index 1 → 10.99.0.1; .255.254 is the probe). */
export function ipFor(index: number): string {
  if (index < 1 || index > 65000) throw errors.insufficientResources('the VM address range 10.99.0.0/16 is exhausted');
  return `10.99.${(index >> 8) & 0xff}.${index & 0xff}/16`;
}
