/** Following a VM's state transfer on one agent until QEMU reports it done. */
import type { Clock } from '../../domain/clock.js';
import { ErrorCode, FerryError, errors } from '../../domain/errors.js';
import type { NodeAgent } from '../../ports/node-agent.js';

/**
 * Polls a VM's transfer on one agent until it completed (an incoming
 * migration loaded, a state saved or restored). `label` names the transfer
 * in errors: "<label> failed: …", "<label> timed out …".
 */
export async function waitTransferCompleted(
  agent: NodeAgent,
  vm: string,
  clock: Clock,
  opts: { label: string; timeoutMs: number; stepMs: number; signal?: AbortSignal },
): Promise<void> {
  const deadline = clock.nowMs() + opts.timeoutMs;
  for (;;) {
    const p = await agent.transfer(vm, opts.signal ? { signal: opts.signal } : undefined);
    if (p.status === 'completed') return;
    if (p.status === 'failed' || p.status === 'cancelled') {
      throw new FerryError(ErrorCode.MigrationFailed, `${opts.label} ${p.status}${p.error ? `: ${p.error}` : ''}`);
    }
    if (clock.nowMs() > deadline) throw errors.timeout(opts.label, opts.timeoutMs);
    await clock.sleep(opts.stepMs, opts.signal);
  }
}
