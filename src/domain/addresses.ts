/**
 * A VM's addresses: its MAC and IP follow from its index in the cluster.
 * (Requests are checked by the API's schemas, src/api/schemas.ts.)
 */
import { errors } from './errors.js';

/** The n-th VM's MAC: locally administered, unique in the cluster. */
export function macFor(index: number): string {
  return `52:54:00:99:${((index >> 8) & 0xff).toString(16).padStart(2, '0')}:${(index & 0xff).toString(16).padStart(2, '0')}`;
}

/** The n-th VM's address in 10.99.0.0/16 (index 1 → 10.99.0.1; .255.254 is the probe). */
export function ipFor(index: number): string {
  if (index < 1 || index > 65000) throw errors.insufficientResources('the VM address range 10.99.0.0/16 is exhausted');
  return `10.99.${(index >> 8) & 0xff}.${index & 0xff}/16`;
}
