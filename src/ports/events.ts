/** The cluster's event log: subsystems write to it; the API reads and streams it. */
import type { ClusterEvent } from '../domain/events.js';

export type NewEvent = Omit<ClusterEvent, 'atMs'>;

export interface EventSink {
  emit(event: NewEvent): Promise<void>;
}

export interface EventLog extends EventSink {
  /** Events with their ids (ids sort in time order), newer than `afterId` or from `sinceMs`. */
  list(opts?: { sinceMs?: number; limit?: number; afterId?: string }): Promise<{ id: string; event: ClusterEvent }[]>;
  /** Called with each new event as it is recorded; returns the unsubscribe. */
  subscribe(listener: (id: string, event: ClusterEvent) => void): () => void;
}
