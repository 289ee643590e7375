/**
 * The event log: JSON (`?since=` ms), or with `Accept: text/event-stream`
 * server-sent events: what happened since `Last-Event-ID` (or `?since=`),
 * then each new event as it is recorded.
 */
import { type OpenAPIHono } from '@hono/zod-openapi';
import { streamSSE } from 'hono/streaming';
import type { ClusterEvent } from '../../domain/events.js';
import type { ControllerServices } from '../../controller/services.js';
import { eventRoutes } from '../routes/events.js';

export function mountEvents(app: OpenAPIHono, s: ControllerServices): void {
  app.openapi(eventRoutes.list, async (c) => {
    const since = c.req.valid('query').since ?? 0;
    if (!(c.req.header('accept') ?? '').includes('text/event-stream')) {
      return c.json(
        (await s.events.list({ sinceMs: since })).map((e) => e.event),
        200,
      );
    }
    return streamSSE(c, async (out) => {
      let last = c.req.header('last-event-id');
      // Subscribe first, replay second: nothing recorded in between is lost, nothing is sent twice.
      const pending: { id: string; event: ClusterEvent }[] = [];
      let replaying = true;
      let chain = Promise.resolve();
      const send = (id: string, event: ClusterEvent) => {
        if (last && id <= last) return;
        last = id;
        chain = chain.then(() => out.writeSSE({ id, event: 'ferry', data: JSON.stringify(event) })).catch(() => {});
      };
      const off = s.events.subscribe((id, event) => (replaying ? pending.push({ id, event }) : send(id, event)));
      await out.write('retry: 1000\n\n');
      const backlog = await s.events.list({ sinceMs: since, limit: 1000, ...(last ? { afterId: last } : {}) });
      for (const e of [...backlog, ...pending.filter((p) => !backlog.some((b) => b.id === p.id))].sort((a, b) => (a.id < b.id ? -1 : 1))) send(e.id, e.event);
      replaying = false;
      const gone = new AbortController();
      out.onAbort(() => gone.abort());
      while (!gone.signal.aborted && !out.aborted) {
        await s.clock.sleep(15_000, gone.signal).catch(() => {});
        chain = chain
          .then(() => out.write(': keep-alive\n\n'))
          .then(() => {})
          .catch(() => {});
      }
      off();
    }) as never;
  });
}
