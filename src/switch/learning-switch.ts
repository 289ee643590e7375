/**
 * The virtual switch's forwarding logic: a learning layer-2 bridge.
 *
 *   frame in on port P from MAC M ─► table[M] = P (a move if M was elsewhere)
 *   dst broadcast/multicast or unknown ─► flood to every port but P
 *   dst known on port Q ≠ P ─► Q only
 *
 * QEMU's self-announce after a migration (RARP from the VM's MAC) arrives on
 * the target's port, so the entry moves there: R3 step 7. Entries age out
 * after `ageingMs` without traffic. Pure: ports are ids, frames go out through
 * a callback, time comes from a Clock.
 */
import type { Clock } from '../domain/clock.js';
import { isGroupMac, parseHeader } from './ethernet.js';

export interface PortInfo {
  id: string;
  /** The node (host) whose switch socket the port came in on. */
  node: string;
}

export interface MacEntry {
  mac: string;
  port: string;
  node: string;
  lastSeenMs: number;
}

export interface MacMove {
  mac: string;
  fromPort?: string;
  fromNode?: string;
  toPort: string;
  toNode: string;
  atMs: number;
  /** The frame that moved it: 0x8035 for QEMU's announce. */
  etherType: number;
}

export const DEFAULT_AGEING_MS = 300_000;

export class LearningSwitch {
  private readonly ports = new Map<string, PortInfo>();
  private readonly table = new Map<string, MacEntry>();
  private readonly moveListeners = new Set<(move: MacMove) => void>();
  readonly moves: MacMove[] = [];

  constructor(
    private readonly clock: Clock,
    private readonly send: (port: string, frame: Buffer) => void,
    public ageingMs = DEFAULT_AGEING_MS,
  ) {}

  addPort(port: PortInfo): void {
    this.ports.set(port.id, port);
  }

  removePort(id: string): void {
    this.ports.delete(id);
    for (const [mac, entry] of this.table) if (entry.port === id) this.table.delete(mac);
  }

  onMove(listener: (move: MacMove) => void): () => void {
    this.moveListeners.add(listener);
    return () => this.moveListeners.delete(listener);
  }

  receive(portId: string, frame: Buffer): void {
    const port = this.ports.get(portId);
    const header = parseHeader(frame);
    if (!port || !header) return;
    const now = this.clock.nowMs();
    if (!isGroupMac(header.src)) this.learn(header.src, port, now, header.etherType);
    if (!isGroupMac(header.dst)) {
      const entry = this.table.get(header.dst);
      if (entry && now - entry.lastSeenMs <= this.ageingMs) {
        if (entry.port !== portId) this.send(entry.port, frame);
        return;
      }
    }
    for (const id of this.ports.keys()) if (id !== portId) this.send(id, frame);
  }

  /** Drops entries not seen for `ageingMs`. Returns how many were dropped. */
  age(): number {
    const now = this.clock.nowMs();
    let dropped = 0;
    for (const [mac, entry] of this.table) {
      if (now - entry.lastSeenMs > this.ageingMs) {
        this.table.delete(mac);
        dropped++;
      }
    }
    return dropped;
  }

  macTable(): MacEntry[] {
    return [...this.table.values()].sort((a, b) => a.mac.localeCompare(b.mac));
  }

  lookup(mac: string): MacEntry | undefined {
    return this.table.get(mac);
  }

  portList(): PortInfo[] {
    return [...this.ports.values()];
  }

  private learn(mac: string, port: PortInfo, now: number, etherType: number): void {
    const prev = this.table.get(mac);
    this.table.set(mac, { mac, port: port.id, node: port.node, lastSeenMs: now });
    if (prev?.port === port.id) return;
    const move: MacMove = { mac, toPort: port.id, toNode: port.node, atMs: now, etherType };
    if (prev) {
      move.fromPort = prev.port;
      move.fromNode = prev.node;
    }
    this.moves.push(move);
    if (this.moves.length > 1000) this.moves.splice(0, this.moves.length - 1000);
    for (const l of this.moveListeners) l(move);
  }
}
