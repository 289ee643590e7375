/**
 * The cluster store on etcd v3 (the etcd3 client over gRPC): the backend of a
 * cluster of real hosts. Keys live under a prefix (`/ferry/` by default);
 * values are JSON. Revisions, compare-and-set, leases and watches are
 * etcd's own, so the ClusterStore contract maps one to one:
 *
 *   put with expectRevision   a transaction comparing the key's mod (or, for
 *                             0, its create) revision
 *   grantLease(ms)            an etcd lease of ceil(ms / 1000) seconds
 *   watch(prefix, after)      an etcd watch from revision after + 1
 *
 * A call etcd does not answer within `callTimeoutMs` fails as
 * `store-unavailable`, naming the endpoints.
 */
import { ConsecutiveBreaker, ConstantBackoff, ExponentialBackoff, circuitBreaker, handleWhen, isBrokenCircuitError, noop, retry, wrap } from 'cockatiel';
import {
  Etcd3,
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  type ICompare as Compare,
  type IKeyValue,
  type IOptions,
  type IRequestOp as RequestOp,
  type IResponseOp,
  type IResponseHeader,
  isRecoverableError,
} from 'etcd3';
import { ErrorCode, FerryError, errors } from '../domain/errors.js';
import type { Change, ClusterStore, Entry, PutOptions } from '../ports/store.js';

export interface EtcdStoreOptions {
  /** Client URLs of the members, e.g. http://10.0.0.1:2379. */
  endpoints: string[];
  /** Every key is stored under this prefix (default /ferry/). */
  prefix?: string;
  /** How long one call may take before the store counts as unreachable (default 3000 ms). */
  callTimeoutMs?: number;
  /** TLS to the members: the CA that signed them, and this client's certificate. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
}

/** The first key after every key starting with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export class EtcdStore implements ClusterStore {
  private readonly client: Etcd3;
  private readonly options: IOptions;
  private readonly prefix: string;
  private readonly timeoutMs: number;
  /** Each watch's own connection (see watch), closed with it. */
  private readonly watchClients = new Set<Etcd3>();

  constructor(private readonly o: EtcdStoreOptions) {
    this.prefix = o.prefix ?? '/ferry/';
    this.timeoutMs = o.callTimeoutMs ?? 3000;
    this.options = {
      hosts: o.endpoints,
      dialTimeout: this.timeoutMs,
      faultHandling: {
        // A call a member refused (down, or skipped by its breaker) goes to the next member. One that a member
        // did not answer in time (its host cut off: the pings find it only a second or two later) is tried once
        // more on the next member: a put whose answer was lost may then have happened twice, which Ferry's writes
        // allow (a compare-and-set that finds its own write conflicts, and the caller reads again). A member that
        // failed three calls in a row is skipped for 2 s, so calls fail fast while etcd is away and resume soon after.
        global:
          o.endpoints.length > 1
            ? wrap(
                retry(
                  handleWhen((e) => e instanceof GRPCDeadlineExceededError),
                  { maxAttempts: 1 },
                ),
                retry(
                  handleWhen((e) => e instanceof GRPCUnavailableError || isBrokenCircuitError(e)),
                  { maxAttempts: o.endpoints.length * 2, backoff: new ConstantBackoff(20) },
                ),
              )
            : noop,
        host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 2000, breaker: new ConsecutiveBreaker(3) }),
        // A watch reconnects within a second or two of etcd's return, not the library's 30 s. (The client's
        // types predate cockatiel 3; it uses the backoff as its own default, the same class.)
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1500 }) as unknown as NonNullable<
          NonNullable<IOptions['faultHandling']>['watchBackoff']
        >,
      },
      ...(o.tls
        ? { credentials: { rootCertificate: o.tls.ca, ...(o.tls.key ? { privateKey: o.tls.key } : {}), ...(o.tls.cert ? { certChain: o.tls.cert } : {}) } }
        : {}),
      // Ferry decides what to do when etcd does not answer; the client only gives each call its deadline.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.timeoutMs }),
    };
    this.client = new Etcd3(this.options);
  }

  private key(k: string): Buffer {
    return Buffer.from(this.prefix + k);
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof FerryError) throw e;
      throw new FerryError(
        ErrorCode.StoreUnavailable,
        `the cluster store (etcd at ${this.o.endpoints.join(', ')}) did not answer ${what}: ${(e as Error).message}`,
        {
          cause: e,
          details: { endpoints: this.o.endpoints },
        },
      );
    }
  }

  private entry<T>(kv: IKeyValue): Entry<T> {
    const lease = String(kv.lease ?? '0');
    return {
      key: kv.key.toString().slice(this.prefix.length),
      value: JSON.parse(kv.value.toString()) as T,
      modRevision: Number(kv.mod_revision),
      createRevision: Number(kv.create_revision),
      ...(lease !== '0' ? { lease } : {}),
    };
  }

  async get<T>(key: string): Promise<Entry<T> | undefined> {
    const r = await this.call(`get ${key}`, () => this.client.kv.range({ key: this.key(key) }));
    return r.kvs[0] ? this.entry<T>(r.kvs[0]) : undefined;
  }

  async list<T>(prefix: string): Promise<Entry<T>[]> {
    const start = this.key(prefix);
    const r = await this.call(`list ${prefix}`, () =>
      this.client.kv.range({ key: start, range_end: prefixEnd(start), sort_order: 'Ascend', sort_target: 'Key' }),
    );
    return r.kvs.map((kv) => this.entry<T>(kv));
  }

  /**
   * From now on every write also requires `guard.key` to have been created
   * at `guard.createRevision`: a leader's writes are fenced by its
   * leadership, so once another controller leads (the key was created
   * again), a late write of the deposed one fails as `not-leader` and
   * changes nothing.
   */
  fenceWith(guard: { key: string; createRevision: number }): void {
    this.guard = guard;
  }

  private guard: { key: string; createRevision: number } | undefined;

  /** A write as one transaction: its own condition (if any) and the guard's; which one failed is read back. */
  private async write(
    what: string,
    key: string,
    cond: Compare | undefined,
    op: RequestOp,
  ): Promise<{ header: IResponseHeader; responses: Partial<IResponseOp>[] }> {
    const guard = this.guard;
    if (!guard && !cond) {
      if (op.request_put) return { header: (await this.call(what, () => this.client.kv.put(op.request_put!))).header, responses: [] };
      const r = await this.call(what, () => this.client.kv.deleteRange(op.request_delete_range!));
      return { header: r.header, responses: [{ response_delete_range: r }] };
    }
    const g = guard ? this.key(guard.key) : undefined;
    const compare: Compare[] = [
      ...(cond ? [cond] : []),
      ...(g ? [{ key: g, target: 'Create' as const, result: 'Equal' as const, create_revision: guard!.createRevision }] : []),
    ];
    const r = await this.call(what, () => this.client.kv.txn({ compare, success: [op], ...(g ? { failure: [{ request_range: { key: g } }] } : {}) }));
    if (r.succeeded) return r;
    const leader = r.responses[0]?.response_range?.kvs[0];
    if (guard && Number(leader?.create_revision ?? 0) !== guard.createRevision) {
      throw new FerryError(
        ErrorCode.NotLeader,
        `this controller no longer leads (its leadership from revision ${guard.createRevision} ended); ${what} was not written`,
        { details: { key, leadership: guard.createRevision } },
      );
    }
    throw conflict(key, Number((cond as { mod_revision?: number } | undefined)?.mod_revision ?? 0));
  }

  async put<T>(key: string, value: T, options: PutOptions = {}): Promise<number> {
    const k = this.key(key);
    const put = { key: k, value: Buffer.from(JSON.stringify(value)), ...(options.lease ? { lease: options.lease } : {}) };
    const expected = options.expectRevision;
    const cond: Compare | undefined =
      expected === undefined
        ? undefined
        : expected === 0
          ? { key: k, target: 'Create', result: 'Equal', create_revision: 0 }
          : { key: k, target: 'Mod', result: 'Equal', mod_revision: expected };
    return revisionOf((await this.write(`put ${key}`, key, cond, { request_put: put })).header);
  }

  async delete(key: string, options: { expectRevision?: number } = {}): Promise<boolean> {
    const k = this.key(key);
    const expected = options.expectRevision;
    const cond: Compare | undefined = expected === undefined ? undefined : { key: k, target: 'Mod', result: 'Equal', mod_revision: expected };
    const r = await this.write(`delete ${key}`, key, cond, { request_delete_range: { key: k } });
    return Number(r.responses[0]?.response_delete_range?.deleted ?? 0) > 0;
  }

  async revision(): Promise<number> {
    const r = await this.call('revision', () => this.client.kv.range({ key: this.key(''), count_only: true }));
    return revisionOf(r.header);
  }

  async grantLease(ttlMs: number): Promise<string> {
    const r = await this.call('grant a lease', () => this.client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlMs / 1000)), ID: 0 }));
    return String(r.ID);
  }

  /** One client per member, for renewals (see keepAlive), made when first needed. */
  private memberClients: Etcd3[] | undefined;

  /**
   * Renews a lease through every member at once; the first that renews it
   * wins. A renewal through one member only would wait out its deadline when
   * that member went silent (its host cut off), and a short lease (the
   * leader's) would run out meanwhile. The lease has expired only if a
   * member says so and none renewed it.
   */
  async keepAlive(lease: string): Promise<void> {
    this.memberClients ??= this.o.endpoints.length > 1 ? this.o.endpoints.map((e) => new Etcd3({ ...this.options, hosts: [e] })) : [this.client];
    const expired = new Error(`lease ${lease} has expired`);
    const renewOn = async (client: Etcd3): Promise<void> => {
      const stream = await client.leaseClient.leaseKeepAlive();
      try {
        const ttl = await new Promise<number>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
          stream.on('data', (res) => {
            clearTimeout(timer);
            resolve(Number(res.TTL));
          });
          stream.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
          });
          stream.write({ ID: lease });
        });
        if (ttl <= 0) throw expired;
      } finally {
        stream.cancel();
      }
    };
    try {
      await this.call(`keep lease ${lease} alive`, () =>
        Promise.any(this.memberClients!.map(renewOn)).catch((e: AggregateError) => {
          throw e.errors.includes(expired) ? expired : (e.errors[0] as Error);
        }),
      );
    } catch (e) {
      if ((e as FerryError).cause === expired) throw errors.invalid('lease', expired.message);
      throw e;
    }
  }

  async revokeLease(lease: string): Promise<void> {
    await this.call(`revoke lease ${lease}`, () => this.client.leaseClient.leaseRevoke({ ID: lease })).catch((e: unknown) => {
      // An expired lease is revoked already.
      if (!((e as FerryError).cause instanceof EtcdLeaseInvalidError)) throw e;
    });
  }

  watch(prefix: string, afterRevision: number, onChange: (change: Change) => void, onError?: (e: Error) => void): () => void {
    let stopped = false;
    let cancel: (() => Promise<void>) | undefined;
    let seen = afterRevision;
    // A connection of its own: a watch started again because it went quiet (a member that stopped answering
    // without closing its connection, see MirroredStore) must not queue behind the stream that hangs.
    const client = new Etcd3(this.options);
    this.watchClients.add(client);
    // The client reconnects a watch it has made; one that cannot be made yet (etcd away) is tried again here.
    const open = (): void => {
      if (stopped) return;
      client
        .watch()
        .prefix(this.prefix + prefix)
        .startRevision(String(seen + 1))
        .create()
        .then((w) => {
          cancel = () => w.cancel();
          if (stopped) void w.cancel();
          w.on('data', (res) => {
            if (stopped) return;
            for (const ev of res.events) {
              const key = ev.kv.key.toString().slice(this.prefix.length);
              const revision = Number(ev.kv.mod_revision);
              seen = Math.max(seen, revision);
              if (ev.type === 'Delete') onChange({ type: 'delete', key, revision });
              else {
                const lease = String(ev.kv.lease ?? '0');
                onChange({ type: 'put', key, value: JSON.parse(ev.kv.value.toString()) as unknown, revision, ...(lease !== '0' ? { lease } : {}) });
              }
            }
          });
          // Cancelled by etcd (e.g. the revision was compacted): the caller must reload.
          w.on('error', (e: Error) => onError?.(e));
        })
        .catch((e: Error) => {
          // etcd away: try again; refused for good (e.g. its revision was compacted): the caller reloads.
          if (isRecoverableError(e)) setTimeout(open, 500).unref();
          else onError?.(e);
        });
    };
    open();
    return () => {
      stopped = true;
      this.watchClients.delete(client);
      // Closing the connection ends the watch too, also one whose member no longer answers a cancel.
      void (cancel?.() ?? Promise.resolve()).catch(() => {});
      client.close();
    };
  }

  async close(): Promise<void> {
    for (const c of this.memberClients ?? []) if (c !== this.client) c.close();
    for (const c of this.watchClients) c.close();
    this.watchClients.clear();
    this.client.close();
  }
}

function revisionOf(h: IResponseHeader): number {
  return Number(h.revision);
}

function conflict(key: string, expected: number): FerryError {
  return errors.conflict(expected === 0 ? `${key} exists already` : `${key} changed since revision ${expected}`, { key, expectRevision: expected });
}
