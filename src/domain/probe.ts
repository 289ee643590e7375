/** What the switch's probe saw of a guest: the guest-observed blackout of a migration. */
export interface ProbeResult {
  id: string;
  ip: string;
  sent: number;
  received: number;
  /** Longest time without a reply, ms. */
  maxGapMs: number;
  /** When that gap started, ms after the session started. */
  maxGapAtMs: number;
  durationMs: number;
}
