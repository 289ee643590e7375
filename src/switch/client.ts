/** The SwitchControl port over the switch daemon's API (routes.ts), through the typed client. */
import { ApiClient } from '../api/client.js';
import { DEFAULT_SWITCH } from '../domain/switches.js';
import type { ProbeResult } from '../domain/probe.js';
import type { MacEntry, MacMove, SwitchControl, SwitchState, SwitchWanted } from '../ports/switch-control.js';
import { switchDaemonRoutes as r } from './routes.js';

export class SwitchClient implements SwitchControl {
  private readonly api: ApiClient;

  constructor(
    /** The switch daemon's URL; a function when it may restart at another port (asked at every call). */
    url: string | (() => string),
    token: string,
    fetcher?: (input: string, init: RequestInit) => Promise<Response>,
  ) {
    this.api = new ApiClient({ baseUrl: url, token, timeoutMs: 10_000, ...(fetcher ? { fetch: fetcher } : {}) });
  }

  get url(): string {
    return this.api.baseUrl;
  }

  switches(): Promise<SwitchState[]> {
    return this.api.call(r.list, {});
  }
  apply(name: string, wanted: SwitchWanted): Promise<SwitchState> {
    return this.api.call(r.apply, { params: { name }, body: wanted });
  }
  async remove(name: string): Promise<void> {
    await this.api.call(r.remove, { params: { name } });
  }
  macs(): Promise<MacEntry[]> {
    return this.api.call(r.macs, {});
  }
  moves(mac: string, sinceMs: number): Promise<MacMove[]> {
    return this.api.call(r.moves, { query: { mac, since: sinceMs } });
  }
  ping(ip: string, mac: string, timeoutMs = 2000, sw = DEFAULT_SWITCH): Promise<{ answered: boolean; rttMs: number | null }> {
    return this.api.call(r.ping, { body: { ip, mac, timeoutMs, switch: sw } }, { timeoutMs: timeoutMs + 5000 });
  }
  async startProbe(id: string, ip: string, mac: string, intervalMs = 1, sw = DEFAULT_SWITCH): Promise<void> {
    await this.api.call(r.startProbe, { params: { id }, body: { ip, mac, intervalMs, switch: sw } });
  }
  probe(id: string): Promise<ProbeResult> {
    return this.api.call(r.probe, { params: { id } });
  }
  stopProbe(id: string): Promise<ProbeResult> {
    return this.api.call(r.stopProbe, { params: { id } });
  }
}
