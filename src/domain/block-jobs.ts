/**
 * What the hypervisor's block jobs hand back, in Ferry's terms: an NBD
 * endpoint a disk is written into, a disk frozen under a backup overlay, a
 * replica sync's result.
 */

/** A network block device export: where a mirror or a replica sync writes. */
export interface NbdEndpoint {
  address: string;
  port: number;
  export: string;
}

/** A disk frozen for a backup: the image no longer changes; the overlay takes the guest's writes. */
export interface FreezeResult {
  base: string;
  overlay: string;
  /** The guest's file systems were frozen (its agent's fsfreeze) at the point in time: a quiesced backup. */
  quiesced?: boolean;
  /** Why not, or how many file systems froze. */
  quiesceNote?: string;
}

export interface ReplicaSyncResult {
  bytes: number;
  ms: number;
  mode: 'full' | 'incremental';
}
