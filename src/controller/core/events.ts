/**
 * The event log in the store (`events/<time>-<seq>`), with live listeners
 * for server-sent events. Every event is also a structured log line.
 */
import { EventEmitter } from 'node:events';
import type { Clock } from '../../domain/clock.js';
import type { ClusterEvent } from '../../domain/events.js';
import type { EventLog, NewEvent } from '../../ports/events.js';
import type { ClusterStore } from '../../ports/store.js';
import type { Logger } from '../../ports/logger.js';

export class StoreEventLog implements EventLog {
  private seq = 0;
  private readonly out = new EventEmitter().setMaxListeners(1000);

  constructor(
    private readonly store: ClusterStore,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  async emit(e: NewEvent): Promise<void> {
    const atMs = this.clock.nowMs();
    const id = `${String(atMs).padStart(15, '0')}-${String(this.seq++).padStart(6, '0')}`;
    const event: ClusterEvent = { atMs, ...e };
    await this.store.put<ClusterEvent>(`events/${id}`, event);
    this.log.info(
      { event: e.type, ...(e.vm ? { vm: e.vm } : {}), ...(e.node ? { node: e.node } : {}), ...(e.migration ? { migration: e.migration } : {}) },
      e.message,
    );
    this.out.emit('event', id, event);
  }

  async list(opts: { sinceMs?: number; limit?: number; afterId?: string } = {}): Promise<{ id: string; event: ClusterEvent }[]> {
    const all = await this.store.list<ClusterEvent>('events/');
    return all
      .map((e) => ({ id: e.key.slice('events/'.length), event: e.value }))
      .filter((e) => e.event.atMs >= (opts.sinceMs ?? 0) && (opts.afterId === undefined || e.id > opts.afterId))
      .slice(-(opts.limit ?? 1000));
  }

  subscribe(listener: (id: string, e: ClusterEvent) => void): () => void {
    this.out.on('event', listener);
    return () => this.out.off('event', listener);
  }
}
