/**
 * The virtual switch as the controller drives it: which switches exist and
 * where they are bound, the MAC tables and moves, ping and the blackout
 * probe. `src/switch/client.ts` implements it over the switch daemon's API.
 */
import type { ProbeResult } from '../domain/probe.js';

/** What the controller wants a switch to be. */
export interface SwitchWanted {
  nodes: string[];
  ageingMs: number;
}

export interface SwitchState {
  name: string;
  nodes: string[];
  ports: number;
  ageingMs: number;
}

export interface MacEntry {
  mac: string;
  port: string;
  node: string;
  switch: string;
  lastSeenMs: number;
  ageMs: number;
}

export interface MacMove {
  mac: string;
  toNode: string;
  fromNode?: string;
  atMs: number;
  etherType: number;
}

export interface SwitchControl {
  switches(): Promise<SwitchState[]>;
  apply(name: string, wanted: SwitchWanted): Promise<SwitchState>;
  remove(name: string): Promise<void>;
  macs(): Promise<MacEntry[]>;
  moves(mac: string, sinceMs: number): Promise<MacMove[]>;
  ping(ip: string, mac: string, timeoutMs: number, sw: string): Promise<{ answered: boolean; rttMs: number | null }>;
  startProbe(id: string, ip: string, mac: string, intervalMs: number, sw: string): Promise<void>;
  probe(id: string): Promise<ProbeResult>;
  stopProbe(id: string): Promise<ProbeResult>;
}
