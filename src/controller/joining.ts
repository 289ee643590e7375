/**
 * Hosts joining over the network and CLIs logging in, with single-use,
 * expiring tokens (`ferry token join|login`). A join is checked whole
 * before anything changes (the token, the name, the shared volume, the
 * addresses), then the token is spent by compare-and-set (two hosts with one
 * token: one wins), the host becomes a member and gets a certificate signed
 * by the cluster's CA for the public key it sent. A refused join spends
 * nothing and changes nothing.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../domain/clock.js';
import { errors } from '../domain/errors.js';
import { TOKEN_TTL, type TokenKind, type TokenRecord, formatToken, parseToken } from '../domain/join-token.js';
import type { NicBackend } from '../domain/nic.js';
import { type VolumeSighting, judgeVolume } from '../domain/records.js';
import type { ClusterAuthority } from '../ports/authority.js';
import type { ClusterConfigStore } from '../ports/cluster-config.js';
import type { ClusterConfig } from '../domain/cluster.js';
import type { EventSink } from '../ports/events.js';
import type { ClusterStore } from '../ports/store.js';
import type { Membership } from './membership.js';

export interface JoiningDeps {
  store: ClusterStore;
  config: ClusterConfigStore;
  membership: Membership;
  authority: ClusterAuthority;
  clock: Clock;
  events: EventSink;
  /** The cluster's API token, handed to a CLI that logs in. */
  apiToken: string;
  /** The controllers' URLs, for a host's configuration. */
  controllers: () => Promise<string[]>;
  /** Notes a controller on a host that joined as one. */
  registerController: (entry: { name: string; url: string }) => Promise<unknown>;
  /** The mark the controller last wrote on the shared volume. */
  volumeMark: { clusterId: string; mark: string };
}

export interface JoinRequest {
  token: string;
  name: string;
  publicKeyPem: string;
  addresses: Record<string, string>;
  volume: VolumeSighting;
  memoryMiB?: number;
  cpuModel?: string;
  nicBackend?: NicBackend;
  controllerPublicKeyPem?: string;
}

export interface JoinAnswer {
  clusterId: string;
  clusterName: string;
  certPem: string;
  caPem: string;
  controllers: string[];
  migrationAddress: string;
  /** The API token, for the CLI on the new host (a member runs VMs and sees their disks: it is trusted like the first host). */
  apiToken: string;
  /** For a host that joined as a controller: what its controller runs on. */
  controller?: { config: ClusterConfig; caKeyPem: string; certPem: string; url: string };
}

const hash = (secret: string): string => createHash('sha256').update(secret).digest('hex');

function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}

export class Joining {
  constructor(private readonly d: JoiningDeps) {}

  /** What a newcomer sees before it trusts the cluster: the CA (checked against the token's fingerprint) and the networks. */
  info(): { clusterId: string; clusterName: string; caPem: string; networks: { name: string; subnet: string; role: string }[] } {
    const c = this.d.config.current();
    return {
      clusterId: c.id,
      clusterName: c.name,
      caPem: this.d.authority.caPem,
      networks: (c.networks ?? []).map((n) => ({ name: n.name, subnet: n.subnet, role: n.role })),
    };
  }

  async issue(kind: TokenKind, ttlMs: number = TOKEN_TTL.defaultMs, o: { controller?: boolean } = {}): Promise<{ token: string; expiresAtMs: number }> {
    if (!Number.isInteger(ttlMs) || ttlMs < TOKEN_TTL.minMs || ttlMs > TOKEN_TTL.maxMs)
      throw errors.invalid('ttl', `a token lives between ${TOKEN_TTL.minMs / 60_000} minute and ${TOKEN_TTL.maxMs / 86_400_000} days`);
    const now = this.d.clock.nowMs();
    await this.sweep(now);
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(24).toString('hex');
    if (o.controller && kind !== 'join') throw errors.invalid('controller', 'only a join token can let a host run a controller');
    const record: TokenRecord = {
      id,
      kind,
      secretHash: hash(secret),
      createdAtMs: now,
      expiresAtMs: now + ttlMs,
      ...(o.controller ? { controller: true as const } : {}),
    };
    await this.d.store.put(`tokens/${id}`, record, { expectRevision: 0 });
    await this.d.events.emit({
      type: 'token.issued',
      message: `a ${kind} token${o.controller ? ' for a controller host' : ''} was issued, valid until ${new Date(record.expiresAtMs).toISOString()}`,
    });
    return { token: formatToken({ kind, id, secret, fingerprint: this.d.authority.fingerprint }), expiresAtMs: record.expiresAtMs };
  }

  /** A join: every check first, then the token is spent, the host made a member and its certificate signed. */
  async join(req: JoinRequest): Promise<JoinAnswer> {
    const token = await this.check(req.token, 'join');
    const config = this.d.config.current();
    if (config.nodes.some((n) => n.name === req.name)) throw errors.alreadyExists('host', req.name);
    const volume = judgeVolume(this.d.volumeMark, req.volume);
    if (!volume.ok) throw errors.invalidState(`host '${req.name}' does not see the cluster's shared volume: ${volume.error ?? 'unknown'}`);
    if (req.controllerPublicKeyPem && token.entry.value.controller !== true)
      throw errors.unauthorized("the join token does not let a host run a controller; make one with 'ferry token join --controller'");
    const management = (config.networks ?? []).find((n) => n.role === 'management');
    const controllerAddress = management ? req.addresses[management.name] : undefined;
    if (req.controllerPublicKeyPem && !controllerAddress) throw errors.invalid('addresses', `a controller host needs an address on the management network`);
    let certPem: string;
    let controllerCertPem: string | undefined;
    try {
      certPem = this.d.authority.issueHost({ publicKeyPem: req.publicKeyPem, name: req.name, addresses: Object.values(req.addresses) });
    } catch {
      throw errors.invalid('publicKeyPem', 'the public key is not an RSA public key in PEM');
    }
    if (req.controllerPublicKeyPem) {
      try {
        controllerCertPem = this.d.authority.issueController({
          publicKeyPem: req.controllerPublicKeyPem,
          name: req.name,
          addresses: Object.values(req.addresses),
        });
      } catch {
        throw errors.invalid('controllerPublicKeyPem', 'the public key is not an RSA public key in PEM');
      }
    }
    await this.spend(token.entry, req.name);
    let member;
    try {
      member = await this.d.membership.add({
        name: req.name,
        addresses: req.addresses,
        nicBackend: req.nicBackend ?? 'bridge',
        ...(req.memoryMiB !== undefined ? { memoryMiB: req.memoryMiB } : {}),
        ...(req.cpuModel !== undefined ? { cpuModel: req.cpuModel } : {}),
      });
    } catch (e) {
      // The host did not join: its token is good for another try.
      await this.d.store.put(`tokens/${token.entry.value.id}`, token.entry.value).catch(() => {});
      throw e;
    }
    let controller: JoinAnswer['controller'];
    if (controllerCertPem) {
      const url = `https://${controllerAddress}:${config.controllerPort ?? 8470}`;
      await this.d.registerController({ name: req.name, url });
      controller = { config: this.d.config.current(), caKeyPem: this.d.authority.caKeyPem, certPem: controllerCertPem, url };
      await this.d.events.emit({ type: 'controller.joined', node: req.name, message: `${req.name} runs a controller too (standby at ${url})` });
    }
    return {
      clusterId: config.id,
      clusterName: config.name,
      certPem,
      caPem: this.d.authority.caPem,
      controllers: await this.d.controllers(),
      migrationAddress: member.migrationAddress,
      apiToken: this.d.apiToken,
      ...(controller ? { controller } : {}),
    };
  }

  /** A CLI logging in gets the API token and the CA, once per login token. */
  async login(text: string): Promise<{ token: string; caPem: string; url: string; controllers: string[] }> {
    const token = await this.check(text, 'login');
    await this.spend(token.entry, 'cli');
    const controllers = await this.d.controllers();
    return { token: this.d.apiToken, caPem: this.d.authority.caPem, url: controllers[0] ?? '', controllers };
  }

  private async check(text: string, kind: TokenKind): Promise<{ entry: { value: TokenRecord; modRevision: number } }> {
    const parsed = parseToken(text, kind);
    if ('error' in parsed) throw errors.unauthorized(parsed.error);
    if (parsed.fingerprint !== this.d.authority.fingerprint) throw errors.unauthorized(`the ${kind} token was made by another cluster (its CA differs)`);
    const entry = await this.d.store.get<TokenRecord>(`tokens/${parsed.id}`);
    if (!entry || entry.value.kind !== kind || !sameHex(entry.value.secretHash, hash(parsed.secret)))
      throw errors.unauthorized(`the ${kind} token is not one this cluster issued`);
    const t = entry.value;
    if (t.usedAtMs !== undefined)
      throw errors.unauthorized(
        `the ${kind} token was used already (by ${t.usedBy ?? 'someone'} at ${new Date(t.usedAtMs).toISOString()}); make another: ferry token ${kind}`,
      );
    if (t.expiresAtMs <= this.d.clock.nowMs())
      throw errors.unauthorized(`the ${kind} token expired at ${new Date(t.expiresAtMs).toISOString()}; make another: ferry token ${kind}`);
    return { entry };
  }

  /** Marks the token used; of two uses at once, the second finds it changed and is refused. */
  private async spend(entry: { value: TokenRecord; modRevision: number }, by: string): Promise<void> {
    const t = entry.value;
    try {
      await this.d.store.put<TokenRecord>(`tokens/${t.id}`, { ...t, usedAtMs: this.d.clock.nowMs(), usedBy: by }, { expectRevision: entry.modRevision });
    } catch (e) {
      if ((e as { code?: string }).code === 'conflict') throw errors.unauthorized(`the ${t.kind} token was used already; make another: ferry token ${t.kind}`);
      throw e;
    }
    await this.d.events.emit({ type: 'token.used', ...(by !== 'cli' ? { node: by } : {}), message: `a ${t.kind} token was used by ${by}` });
  }

  /** Tokens a day past their expiry are forgotten. */
  private async sweep(now: number): Promise<void> {
    for (const e of await this.d.store.list<TokenRecord>('tokens/')) {
      if (e.value.expiresAtMs + 86_400_000 < now) await this.d.store.delete(e.key, { expectRevision: e.modRevision }).catch(() => {});
    }
  }
}
