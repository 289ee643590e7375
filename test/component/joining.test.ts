/**
 * Hosts joining with tokens, in process over the strict fakes: a token is
 * good once (two joins at once: one wins), a refused join spends nothing
 * and changes nothing, tokens expire, login tokens and join tokens do not
 * stand in for each other, and the single-machine cluster says it has no
 * joining.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { joinRoutes } from '../../src/api/routes/join.js';
import { nodeRoutes } from '../../src/api/routes/nodes.js';
import { isFerryError } from '../../src/domain/errors.js';
import { ComponentCluster } from '../../src/testing/component.js';
import { PemAuthority, createAuthority, generateKeyPair, identityOf, signedBy } from '../../src/system/pki.js';

describe('hosts joining a cluster of real hosts', () => {
  let c: ComponentCluster;
  let authority: PemAuthority;
  const key = generateKeyPair().publicKeyPem;
  before(async () => {
    authority = new PemAuthority(createAuthority('component-cluster', 'ferry'), 'component-cluster');
    c = await ComponentCluster.start({ nodes: 2, authority });
  });
  after(() => c?.stop());

  const token = async (kind: 'join' | 'login' = 'join') => (await c.api.call(joinRoutes.issue, { body: { kind } })).token;
  /** The next free addresses of each network, as a joining host would name them. */
  const addresses = (host: number) => Object.fromEntries((c.config.networks ?? []).map((n) => [n.name, n.subnet.replace(/0\/24$/, String(100 + host))]));
  const join = (t: string, name: string, host: number, extra: Record<string, unknown> = {}) =>
    c.api.call(joinRoutes.join, {
      body: { token: t, name, publicKeyPem: key, addresses: addresses(host), volume: { clusterId: 'component-cluster', mark: '' }, ...extra },
    });
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => assert.fail('expected a refusal'),
      (e: unknown) => {
        assert.ok(isFerryError(e), String(e));
        return e.message;
      },
    );
  const members = async () => (await c.api.call(nodeRoutes.list, {})).map((n) => n.name).sort();

  it('lets one of two joins with the same token in, and signs its certificate for the key it sent', async () => {
    const t = await token();
    const both = await Promise.allSettled([join(t, 'host-a', 1), join(t, 'host-b', 2)]);
    const won = both.filter((r) => r.status === 'fulfilled');
    assert.equal(won.length, 1, JSON.stringify(both.map((r) => r.status)));
    const lost = both.find((r) => r.status === 'rejected')!;
    assert.match((lost.reason as Error).message, /^the join token was used already/);
    const answer = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof join>>>).value;
    assert.ok(signedBy(answer.certPem, authority.caPem));
    const id = identityOf(answer.certPem)!;
    assert.equal(id.role, 'host');
    assert.equal(id.clusterId, 'component-cluster');
    assert.ok(['host-a', 'host-b'].includes(id.name));
    assert.deepEqual(await members(), ['node-1', 'node-2', id.name].sort());
  });

  it('spends nothing and changes nothing when it refuses a join', async () => {
    const t = await token();
    const before = await members();
    const taken = addresses(1);
    assert.match(await refusal(join(t, 'host-c', 3, { addresses: { ...addresses(3), management: Object.values(taken)[0] } })), /host-a|host-b/);
    assert.match(await refusal(join(t, 'host-c', 3, { addresses: { ...addresses(3), management: '10.0.0.1' } })), /^10\.0\.0\.1 is not in network management/);
    assert.match(await refusal(join(t, 'host-c', 3, { addresses: { nowhere: '1.2.3.4' } })), /^the cluster has no network 'nowhere'/);
    assert.match(
      await refusal(join(t, 'host-c', 3, { volume: { error: '/mnt/ferry/.ferry-volume does not exist' } })),
      /does not see the cluster's shared volume/,
    );
    assert.match(await refusal(join(t, 'host-c', 3, { volume: { clusterId: 'other', mark: 'x' } })), /volume of another cluster/);
    assert.match(await refusal(join(t, 'node-1', 3)), /^host 'node-1' already exists$/);
    assert.match(await refusal(join(t, 'host-c', 3, { publicKeyPem: 'not a key' })), /not an RSA public key/);
    assert.deepEqual(await members(), before);
    await join(t, 'host-c', 3);
    assert.deepEqual(await members(), [...before, 'host-c'].sort());
  });

  it('refuses an expired token, a token of the wrong kind, and one it never issued', async () => {
    const t = await token();
    const key = `tokens/${t.split('.')[1]}`;
    const rec = (await c.store.get<{ expiresAtMs: number }>(key))!;
    await c.store.put(key, { ...rec.value, expiresAtMs: c.clock.nowMs() - 1 });
    assert.match(await refusal(join(t, 'host-d', 4)), /^the join token expired at \S+; make another: ferry token join$/);
    const l = await token('login');
    assert.match(await refusal(join(l, 'host-d', 4)), /^that is a login token; this needs a join token/);
    assert.match(await refusal(join(t.replace(/\.[0-9a-f]{48}\./, `.${'0'.repeat(48)}.`), 'host-d', 4)), /^the join token is not one this cluster issued$/);
    assert.match(await refusal(join(t.replace(/[0-9a-f]{64}$/, 'f'.repeat(64)), 'host-d', 4)), /^the join token was made by another cluster/);
    const ttl = await refusal(c.api.call(joinRoutes.issue, { body: { kind: 'join', ttlMs: 1000 } }));
    assert.match(ttl, /^a token lives at least 1 minute$/);
  });

  it('hands a CLI logging in the API token and the CA, once', async () => {
    const l = await token('login');
    const answer = await c.api.call(joinRoutes.login, { body: { token: l } });
    assert.equal(answer.token, 'component-token');
    assert.equal(answer.caPem, authority.caPem);
    assert.match(await refusal(c.api.call(joinRoutes.login, { body: { token: l } })), /^the login token was used already \(by cli at /);
  });
});

describe('the single-machine cluster', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 1 });
  });
  after(() => c?.stop());

  it('has no joining, and says so in one line', async () => {
    await assert.rejects(
      c.api.call(joinRoutes.issue, { body: { kind: 'join' } }),
      /^FerryError: this cluster runs on one machine \('ferry up'\); hosts join a cluster made with 'ferry init'$/,
    );
  });
});
