/**
 * What the pre-flight prediction needs to know about a running guest, asked
 * of its QEMU without stopping it:
 *
 * - the dirty rate: `calc-dirty-rate` in page-sampling mode (hashes of
 *   sampled pages compared over the period), in milliseconds (QEMU ≥ 8.2);
 * - how much memory is not zero (zero pages cost a migration almost
 *   nothing): `pmemsave` of small runs of pages at random guest-physical
 *   addresses, each page checked for a non-zero byte. Each call holds QEMU's
 *   lock for one 64 KiB copy, so the guest does not notice.
 */
import fs from 'node:fs';
import { ErrorCode, FerryError } from '../domain/errors.js';
import type { QmpClient } from './qmp/client.js';

const PAGE = 4096;
/** i440fx puts guest RAM above this address (up to 4 GiB) in the PCI hole; the rest starts at 4 GiB. */
const BELOW_4G = 0xe0000000;

export async function measureDirtyRate(qmp: QmpClient, ms: number): Promise<number> {
  await qmp.execute('calc-dirty-rate', { 'calc-time': ms, 'calc-time-unit': 'millisecond', 'sample-pages': 4096 });
  const deadline = Date.now() + ms + 5000;
  for (;;) {
    await new Promise((r) => setTimeout(r, Math.min(100, ms)));
    const info = await qmp.execute('query-dirty-rate', {});
    // QEMU reports MiB/s.
    if (info.status === 'measured') return Math.round((info['dirty-rate'] ?? 0) * 1048576);
    if (Date.now() > deadline) throw new FerryError(ErrorCode.Timeout, `QEMU did not finish measuring the dirty rate within ${ms + 5000} ms`);
  }
}

/** Pages read per pmemsave call. */
const RUN = 16;

export async function measureNonZero(
  qmp: QmpClient,
  ramBytes: number,
  samples: number,
  scratch: string,
): Promise<{ nonZeroBytes: number; samples: number; nonZeroSamples: number }> {
  const runs = Math.max(1, Math.floor(Math.floor(ramBytes / PAGE) / RUN));
  const calls = Math.min(runs, Math.ceil(samples / RUN));
  let nonZero = 0;
  let seen = 0;
  try {
    for (let i = 0; i < calls; i++) {
      // Stratified: one random run of pages in each of `calls` equal slices of RAM.
      const run = Math.floor(((i + Math.random()) * runs) / calls);
      let addr = run * RUN * PAGE;
      if (ramBytes > BELOW_4G && addr >= BELOW_4G) addr += 0x100000000 - BELOW_4G;
      await qmp.execute('pmemsave', { val: addr, size: RUN * PAGE, filename: scratch });
      const buf = fs.readFileSync(scratch);
      for (let off = 0; off + PAGE <= buf.length; off += PAGE) {
        seen++;
        if (!isZero(buf, off)) nonZero++;
      }
    }
  } finally {
    fs.rmSync(scratch, { force: true });
  }
  return { nonZeroBytes: Math.round((nonZero / Math.max(seen, 1)) * ramBytes), samples: seen, nonZeroSamples: nonZero };
}

function isZero(buf: Buffer, off: number): boolean {
  for (let i = off; i < off + PAGE; i += 8) if (buf.readBigUInt64LE(i) !== 0n) return false;
  return true;
}
