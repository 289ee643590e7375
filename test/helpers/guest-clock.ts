/**
 * How far a guest's clock is from the host's, measured through its serial
 * console: the host asks for the guest's time (`ferry-guest now`) and reads
 * the answer; the guest's reading was taken between the two host times, so
 * the offset (guest − host) lies in [guest − answeredAt, guest − askedAt].
 * The tightest of a few rounds is kept.
 */
import { vmRoutes } from '../../src/api/routes/vms.js';
import type { TestCluster } from './cluster.js';
import { waitFor } from './cluster.js';

export interface ClockOffset {
  /** guest − host, ms, at least and at most. */
  lo: number;
  hi: number;
}

export async function guestClockOffset(c: TestCluster, vm: string, rounds = 5): Promise<ClockOffset> {
  let best: ClockOffset | undefined;
  for (let i = 0; i < rounds; i++) {
    const before = c.consoleText(vm).length;
    const askedAt = Date.now();
    await c.api.call(vmRoutes.consoleInput, { params: { name: vm }, body: { data: '/bin/ferry-guest now\n' } });
    const guest = await waitFor(
      'the guest to tell its time',
      10_000,
      () => {
        const m = /ferry-now (\d+)/.exec(c.consoleText(vm).slice(before));
        return m ? Number(m[1]) : undefined;
      },
      1,
    );
    const answeredAt = Date.now();
    const o = { lo: guest - answeredAt, hi: guest - askedAt };
    if (!best || o.hi - o.lo < best.hi - best.lo) best = o;
  }
  return best!;
}
