/** The NodeAgent port over the agent's HTTP API (routes.ts), through the typed client. */
import { ApiClient, type Input, type Output, type RouteDef } from '../api/client.js';
import type { FreezeResult, NbdEndpoint, ReplicaSyncResult } from '../domain/block-jobs.js';
import { ErrorCode, FerryError, isFerryError } from '../domain/errors.js';
import type { Offload } from '../domain/nic.js';
import type { GuestReport, NodeCapabilities, VmInstance, VmSpec } from '../domain/records.js';
import type { TransferProgress, TransferTuning } from '../domain/transfer.js';
import type { GuestMeasurement, ShutdownResult, TransferTarget } from '../ports/hypervisor.js';
import type { CallOptions, NodeAgent, StartOptions } from '../ports/node-agent.js';
import { LEADERSHIP_HEADER, agentRoutes as r } from './routes.js';
import { loadWs } from '../api/http.js';
import type { ClientTls } from '../api/tls.js';
import type { Duplex } from 'node:stream';

const LONG_MS = 31 * 60_000;

export class AgentClient implements NodeAgent {
  private readonly api: ApiClient;

  constructor(
    readonly node: string,
    readonly url: string,
    private readonly token: string,
    fetcher?: (input: string, init: RequestInit) => Promise<Response>,
    /** The controller's certificate for the agent's TLS (a cluster of real hosts): what a WebSocket presents. */
    private readonly tls?: ClientTls,
    /** The leadership this controller calls under (on etcd), sent with every call; absent: none. */
    private readonly leadership?: () => number | undefined,
  ) {
    this.api = new ApiClient({ baseUrl: url, token, timeoutMs: 20_000, ...(fetcher ? { fetch: fetcher } : {}) });
  }

  /** The VM's screen: a WebSocket to the agent's tunnel onto QEMU's VNC socket, as a byte stream. */
  async display(vm: string, opts: CallOptions = {}): Promise<Duplex> {
    await this.call(r.display, { params: { name: vm } }, opts);
    const { WebSocket, createWebSocketStream } = await loadWs();
    const ws = new WebSocket(`${this.url.replace(/^http/, 'ws')}/v1/vms/${encodeURIComponent(vm)}/display`, {
      headers: this.token ? { authorization: `Bearer ${this.token}` } : {},
      handshakeTimeout: 5_000,
      ...(this.tls ? { ca: this.tls.caPem, ...(this.tls.certPem ? { cert: this.tls.certPem, key: this.tls.keyPem } : {}) } : {}),
    });
    // The stream listens before the handshake ends: QEMU speaks first, and its first frame can come in the same
    // packet as the agent's 101 answer; ws emits it right after 'open', before any later listener (noVNC then waits forever).
    const stream = createWebSocketStream(ws);
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('unexpected-response', (_req, res) =>
          reject(new FerryError(ErrorCode.AgentUnreachable, `node '${this.node}' refused the display of '${vm}' (HTTP ${res.statusCode})`)),
        );
        stream.once('error', (e) => reject(new FerryError(ErrorCode.AgentUnreachable, `node '${this.node}': display of '${vm}': ${e.message}`)));
      });
    } catch (e) {
      stream.destroy();
      throw e;
    }
    return stream;
  }

  private async call<R extends RouteDef>(route: R, input: Input<R>, opts: CallOptions = {}, timeoutMs?: number): Promise<Output<R>> {
    const lead = this.leadership?.();
    try {
      return await this.api.call(route, input, {
        ...(lead !== undefined ? { headers: { [LEADERSHIP_HEADER]: String(lead) } } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...((opts.timeoutMs ?? timeoutMs) ? { timeoutMs: opts.timeoutMs ?? timeoutMs } : {}),
      });
    } catch (e) {
      if (isFerryError(e, ErrorCode.AgentUnreachable)) {
        throw new FerryError(ErrorCode.AgentUnreachable, `agent of node '${this.node}' is unreachable`, { details: { node: this.node }, cause: e });
      }
      throw e;
    }
  }

  health(opts?: CallOptions) {
    return this.call(r.health, {}, opts, 3000);
  }
  capabilities(opts?: CallOptions): Promise<NodeCapabilities> {
    return this.call(r.capabilities, {}, opts);
  }
  list(opts?: CallOptions): Promise<VmInstance[]> {
    return this.call(r.list, {}, opts);
  }
  get(vm: string, opts?: CallOptions): Promise<VmInstance> {
    return this.call(r.get, { params: { name: vm } }, opts);
  }
  config(vm: string, opts?: CallOptions): Promise<VmSpec> {
    return this.call(r.config, { params: { name: vm } }, opts);
  }
  start(spec: VmSpec, opts: StartOptions = {}): Promise<VmInstance> {
    const body = { spec, ...(opts.incoming ? { incoming: true } : {}), ...(opts.createDiskBytes ? { createDiskBytes: opts.createDiskBytes } : {}) };
    return this.call(r.start, { body: body as never }, opts, 30_000);
  }
  async stop(vm: string, opts?: CallOptions): Promise<void> {
    await this.call(r.stop, { params: { name: vm } }, opts);
  }
  shutdown(vm: string, timeoutMs: number, opts?: CallOptions): Promise<ShutdownResult> {
    return this.call(r.shutdown, { params: { name: vm }, body: { timeoutMs } }, opts, timeoutMs + 15_000);
  }
  guest(vm: string, opts?: CallOptions): Promise<GuestReport> {
    return this.call(r.guest, { params: { name: vm } }, opts, 30_000);
  }
  async kill(vm: string, opts: CallOptions & { pid?: number } = {}): Promise<boolean> {
    return (await this.call(r.kill, { params: { name: vm }, query: opts.pid !== undefined ? { pid: opts.pid } : {} }, opts)).killed;
  }
  async pause(vm: string, opts?: CallOptions): Promise<void> {
    await this.call(r.pause, { params: { name: vm } }, opts);
  }
  async resume(vm: string, opts?: CallOptions): Promise<void> {
    await this.call(r.resume, { params: { name: vm } }, opts);
  }
  async listenIncoming(vm: string, tuning: TransferTuning, address: string, opts?: CallOptions): Promise<{ address: string; port: number }> {
    const res = await this.call(r.incoming, { params: { name: vm }, body: { tuning, address } }, opts);
    return { address: res.address!, port: res.port! };
  }
  async restoreFrom(vm: string, file: string, tuning: TransferTuning, opts?: CallOptions): Promise<void> {
    await this.call(r.incoming, { params: { name: vm }, body: { tuning, file } }, opts);
  }
  async sendState(vm: string, target: TransferTarget, tuning: TransferTuning, opts?: CallOptions): Promise<void> {
    await this.call(r.send, { params: { name: vm }, body: { ...target, tuning } }, opts);
  }
  transfer(vm: string, opts?: CallOptions): Promise<TransferProgress> {
    return this.call(r.transfer, { params: { name: vm } }, opts, 5000);
  }
  async cancelTransfer(vm: string, opts?: CallOptions): Promise<void> {
    await this.call(r.cancelTransfer, { params: { name: vm } }, opts);
  }
  async startPostcopy(vm: string, opts?: CallOptions): Promise<void> {
    await this.call(r.postcopy, { params: { name: vm } }, opts);
  }
  async continueTransfer(vm: string, opts?: CallOptions): Promise<void> {
    await this.call(r.continueTransfer, { params: { name: vm } }, opts);
  }
  async announce(vm: string, opts?: CallOptions): Promise<{ bridge?: { name: string; port: string; learnt: boolean } }> {
    return this.call(r.announce, { params: { name: vm } }, opts);
  }
  measure(vm: string, ms: number, opts?: CallOptions): Promise<GuestMeasurement> {
    return this.call(r.measure, { params: { name: vm }, body: { ms } }, opts, ms + 20_000);
  }
  nic(vm: string, opts?: CallOptions): Promise<{ offered: Offload[]; negotiated: Offload[] }> {
    return this.call(r.nic, { params: { name: vm } }, opts, 5000);
  }
  exportDisk(vm: string, address: string, opts?: CallOptions): Promise<NbdEndpoint> {
    return this.call(r.exportDisk, { params: { name: vm }, body: { address } }, opts);
  }
  async unexportDisk(vm: string, opts?: CallOptions): Promise<void> {
    await this.call(r.unexportDisk, { params: { name: vm } }, opts);
  }
  mirrorDisk(vm: string, to: NbdEndpoint, opts?: CallOptions): Promise<{ bytes: number; ms: number }> {
    return this.call(r.mirror, { params: { name: vm }, body: to }, opts, LONG_MS);
  }
  endMirror(vm: string, complete: boolean, opts?: CallOptions): Promise<{ bytes: number }> {
    return this.call(r.endMirror, { params: { name: vm }, body: { complete } }, opts, 90_000);
  }
  freezeDisk(vm: string, overlay: string, mode: 'full' | 'incremental', opts?: CallOptions): Promise<FreezeResult> {
    return this.call(r.freeze, { params: { name: vm }, body: { overlay, mode } }, opts, 60_000);
  }
  mergeOverlay(vm: string, copied: boolean, opts?: CallOptions): Promise<{ base: string; overlay: string }> {
    return this.call(r.merge, { params: { name: vm }, body: { copied } }, opts, LONG_MS);
  }
  replicaSync(vm: string, to: NbdEndpoint, mode: 'full' | 'incremental', opts?: CallOptions): Promise<ReplicaSyncResult> {
    return this.call(r.replicaSync, { params: { name: vm }, body: { ...to, mode } }, opts, LONG_MS);
  }
  cancelReplicaSync(vm: string, opts?: CallOptions): Promise<{ cancelled: boolean }> {
    return this.call(r.cancelReplicaSync, { params: { name: vm } }, opts);
  }
  moveDisk(vm: string, target: string, sizeBytes: number, opts?: CallOptions): Promise<{ bytes: number; ms: number }> {
    return this.call(r.moveStorage, { params: { name: vm }, body: { target, sizeBytes } }, opts, LONG_MS);
  }
  async consoleInput(vm: string, data: string, opts?: CallOptions): Promise<void> {
    await this.call(r.consoleInput, { params: { name: vm }, body: { data } }, opts);
  }
  throughput(from: string, to: string, port: number, ms: number, opts?: CallOptions): Promise<{ bytesPerSec: number; bytes: number; ms: number }> {
    return this.call(r.throughput, { body: { from, to, port, ms } }, opts, ms + 15_000);
  }
  probe(from: string, to: string, port: number, opts?: CallOptions): Promise<{ ok: boolean; ms: number; error?: string }> {
    return this.call(r.probe, { body: { from, to, port, timeoutMs: 500 } }, opts, 3000);
  }
  /** The console stream (tests and the CLI's raw view). */
  console(vm: string): Promise<Response> {
    return this.api.open(r.console, { params: { name: vm } });
  }
}

/** Who answers at an agent's URL (its node and cluster), asked without a token. */
export async function identifyAgent(
  url: string,
  fetcher?: (input: string, init: RequestInit) => Promise<Response>,
): Promise<{ node: string; clusterId: string }> {
  const api = new ApiClient({ baseUrl: new URL(url).origin, timeoutMs: 3000, ...(fetcher ? { fetch: fetcher } : {}) });
  return api.call(r.health, {});
}
