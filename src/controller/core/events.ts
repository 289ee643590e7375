/**
 * The event log in the store (`events/<time>-<seq>`), with live listeners
 * for server-sent events. Every event is also a structured log line. An
 * event the store cannot take right now (its disk is full) waits in memory,
 * is listed and streamed like any other, and is written with the next one
 * that gets through: recording an event never fails the operation.
 */
import { EventEmitter } from 'node:events';
import type { Clock } from '../../domain/clock.js';
import type { ClusterEvent } from '../../domain/events.js';
import type { EventLog, NewEvent } from '../../ports/events.js';
import type { ClusterStore } from '../../ports/store.js';
import type { Logger } from '../../ports/logger.js';

const MAX_PENDING = 10_000;

export class StoreEventLog implements EventLog {
  private seq = 0;
  private readonly out = new EventEmitter().setMaxListeners(1000);

  constructor(
    private readonly store: ClusterStore,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** Events not yet in the store, oldest first (at most MAX_PENDING: the oldest go first). */
  private readonly pending: { id: string; event: ClusterEvent }[] = [];

  async emit(e: NewEvent): Promise<void> {
    const atMs = this.clock.nowMs();
    const id = `${String(atMs).padStart(15, '0')}-${String(this.seq++).padStart(6, '0')}`;
    const event: ClusterEvent = { atMs, ...e };
    this.pending.push({ id, event });
    if (this.pending.length > MAX_PENDING) this.pending.shift();
    await this.flush();
    this.log.info(
      { event: e.type, ...(e.vm ? { vm: e.vm } : {}), ...(e.node ? { node: e.node } : {}), ...(e.migration ? { migration: e.migration } : {}) },
      e.message,
    );
    this.out.emit('event', id, event);
  }

  /** Writes what waits; stops at the first write the store refuses (and tries again later). */
  async flush(): Promise<void> {
    while (this.pending.length) {
      const next = this.pending[0]!;
      try {
        await this.store.put<ClusterEvent>(`events/${next.id}`, next.event);
      } catch (err) {
        this.log.warn({ err: String(err), waiting: this.pending.length }, 'the store cannot take events right now; they wait in memory');
        return;
      }
      this.pending.shift();
    }
  }

  async list(opts: { sinceMs?: number; limit?: number; afterId?: string } = {}): Promise<{ id: string; event: ClusterEvent }[]> {
    const stored = (await this.store.list<ClusterEvent>('events/')).map((e) => ({ id: e.key.slice('events/'.length), event: e.value }));
    const all = [...stored, ...this.pending.filter((p) => !stored.some((s) => s.id === p.id))].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return all.filter((e) => e.event.atMs >= (opts.sinceMs ?? 0) && (opts.afterId === undefined || e.id > opts.afterId)).slice(-(opts.limit ?? 1000));
  }

  subscribe(listener: (id: string, e: ClusterEvent) => void): () => void {
    this.out.on('event', listener);
    return () => this.out.off('event', listener);
  }
}
