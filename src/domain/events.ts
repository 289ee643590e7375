/**
 * The cluster's event log: what happened, when, to which VM, node or
 * migration. Events are written to the store and streamed to consoles.
 */

/** One entry of the event log. */
export interface ClusterEvent {
  atMs: number;
  type: string;
  message: string;
  vm?: string;
  node?: string;
  migration?: string;
  data?: Record<string, unknown>;
}
