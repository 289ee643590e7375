/**
 * Time behind an interface, so logic never calls Date.now() or setTimeout
 * directly and tests can move time by hand.
 */
export interface Clock {
  nowMs(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  nowMs: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason ?? new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** A clock that only moves when a test says so. */
export class ManualClock implements Clock {
  private now: number;
  private sleepers: { until: number; resolve: () => void }[] = [];
  constructor(startMs = 1_700_000_000_000) {
    this.now = startMs;
  }
  nowMs(): number {
    return this.now;
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.sleepers.push({ until: this.now + ms, resolve }));
  }
  advance(ms: number): void {
    this.now += ms;
    const due = this.sleepers.filter((s) => s.until <= this.now);
    this.sleepers = this.sleepers.filter((s) => s.until > this.now);
    for (const s of due) s.resolve();
  }
}

/**
 * A clock that runs `factor` times faster than real time: component tests
 * run the controller's polls and timeouts at this speed, with real
 * concurrency (a ManualClock would need every await to be scripted).
 */
export class ScaledClock implements Clock {
  private readonly startReal = performance.now();
  constructor(
    private readonly factor: number,
    private readonly startMs = 1_700_000_000_000,
  ) {}
  nowMs(): number {
    return Math.floor(this.startMs + (performance.now() - this.startReal) * this.factor);
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return systemClock.sleep(Math.max(0, ms / this.factor), signal);
  }
}
