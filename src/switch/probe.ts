/**
 * The probe: a port of the switch with its own MAC and IP that pings guests
 * and records what a client would see. A session pings one guest every
 * `intervalMs` and keeps the longest gap between two replies (and from the
 * start to the first reply, and from the last reply to the stop): the
 * guest-observed blackout of a migration.
 */
import { performance } from 'node:perf_hooks';
import { arpReply, icmpEchoRequest, parseArp, parseIcmpEcho } from './ethernet.js';

export const PROBE_MAC = '02:fe:00:00:00:01';

import type { ProbeResult } from '../domain/probe.js';
export type { ProbeResult };

interface Session {
  id: string;
  icmpId: number;
  ip: string;
  mac: string;
  startedAt: number;
  lastReplyAt: number;
  maxGapMs: number;
  maxGapAtMs: number;
  sent: number;
  received: number;
  timer: NodeJS.Timeout;
  waiters: ((ok: boolean) => void)[];
}

export class Probe {
  private readonly sessions = new Map<string, Session>();
  private nextIcmpId = 1;

  constructor(
    readonly ip: string,
    private readonly transmit: (frame: Buffer) => void,
  ) {}

  /** Frames the switch delivers to the probe's port. */
  receive(frame: Buffer): void {
    const arp = parseArp(frame);
    if (arp) {
      if (arp.op === 1 && arp.targetIp === this.ip) {
        this.transmit(arpReply(PROBE_MAC, this.ip, arp.senderMac, arp.senderIp));
      }
      return;
    }
    const echo = parseIcmpEcho(frame);
    if (!echo || echo.type !== 0 || echo.dstIp !== this.ip) return;
    for (const s of this.sessions.values()) {
      if (s.icmpId !== echo.id || s.ip !== echo.srcIp) continue;
      const now = performance.now();
      const gap = now - s.lastReplyAt;
      if (gap > s.maxGapMs) {
        s.maxGapMs = gap;
        s.maxGapAtMs = s.lastReplyAt - s.startedAt;
      }
      s.lastReplyAt = now;
      s.received++;
      for (const w of s.waiters.splice(0)) w(true);
    }
  }

  start(id: string, ip: string, mac: string, intervalMs = 1): void {
    this.stop(id);
    const icmpId = this.nextIcmpId++ & 0xffff || this.nextIcmpId++;
    const now = performance.now();
    const session: Session = {
      id,
      icmpId,
      ip,
      mac,
      startedAt: now,
      lastReplyAt: now,
      maxGapMs: 0,
      maxGapAtMs: 0,
      sent: 0,
      received: 0,
      waiters: [],
      timer: setInterval(() => {
        session.sent++;
        this.transmit(icmpEchoRequest(PROBE_MAC, this.ip, mac, ip, icmpId, session.sent));
      }, intervalMs),
    };
    this.sessions.set(id, session);
  }

  stop(id: string): ProbeResult | undefined {
    const s = this.sessions.get(id);
    if (!s) return undefined;
    clearInterval(s.timer);
    this.sessions.delete(id);
    for (const w of s.waiters.splice(0)) w(false);
    const now = performance.now();
    const tail = now - s.lastReplyAt;
    if (tail > s.maxGapMs) {
      s.maxGapMs = tail;
      s.maxGapAtMs = s.lastReplyAt - s.startedAt;
    }
    return {
      id,
      ip: s.ip,
      sent: s.sent,
      received: s.received,
      maxGapMs: round(s.maxGapMs),
      maxGapAtMs: round(s.maxGapAtMs),
      durationMs: round(now - s.startedAt),
    };
  }

  snapshot(id: string): ProbeResult | undefined {
    const s = this.sessions.get(id);
    if (!s) return undefined;
    const now = performance.now();
    return {
      id,
      ip: s.ip,
      sent: s.sent,
      received: s.received,
      maxGapMs: round(Math.max(s.maxGapMs, now - s.lastReplyAt)),
      maxGapAtMs: round(s.maxGapAtMs),
      durationMs: round(now - s.startedAt),
    };
  }

  /** Pings until the first reply or the timeout; resolves with the round trip in ms or undefined. */
  async ping(ip: string, mac: string, timeoutMs: number): Promise<number | undefined> {
    const id = `ping-${ip}-${this.nextIcmpId}`;
    this.start(id, ip, mac, 50);
    const s = this.sessions.get(id)!;
    const started = performance.now();
    const ok = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      s.waiters.push((got) => {
        clearTimeout(timer);
        resolve(got);
      });
    });
    this.stop(id);
    return ok ? round(performance.now() - started) : undefined;
  }

  stopAll(): void {
    for (const id of [...this.sessions.keys()]) this.stop(id);
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
