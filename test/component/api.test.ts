/**
 * API tests through the app's in-process request (no sockets): the served
 * routes and the OpenAPI document match in both directions, the document's
 * limits are the domain's, every answer fits its route's response schema,
 * and bad requests get one clear line without harming the daemon.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { RouteDef } from '../../src/api/client.js';
import { clusterRoutes } from '../../src/api/routes/cluster.js';
import { eventRoutes } from '../../src/api/routes/events.js';
import { migrationRoutes } from '../../src/api/routes/migrations.js';
import { networkRoutes, switchRoutes } from '../../src/api/routes/networks.js';
import { nodeRoutes } from '../../src/api/routes/nodes.js';
import { joinRoutes } from '../../src/api/routes/join.js';
import { imageRoutes } from '../../src/api/routes/images.js';
import { replicaRoutes } from '../../src/api/routes/replicas.js';
import { backupRoutes } from '../../src/api/routes/storage.js';
import { requestMigration, vmRoutes } from '../../src/api/routes/vms.js';
import { controllerApp, OPENAPI_PATH } from '../../src/api/controller/app.js';
import { LIMITS } from '../../src/domain/records.js';
import { ComponentCluster } from '../../src/testing/component.js';

const ALL: Record<string, Record<string, RouteDef>> = {
  clusterRoutes,
  eventRoutes,
  migrationRoutes,
  networkRoutes,
  switchRoutes,
  nodeRoutes,
  replicaRoutes,
  backupRoutes,
  vmRoutes,
  joinRoutes,
  imageRoutes,
};

describe('the controller API in process', () => {
  let c: ComponentCluster;
  let app: ReturnType<typeof controllerApp>;
  const auth = { authorization: 'Bearer component-token' };
  before(async () => {
    c = await ComponentCluster.start({ nodes: 2 });
    await c.runVm('web', 'node-1');
    app = controllerApp(c.runtime.services, { assetDirs: [] });
  });
  after(() => c?.stop());

  it('serves exactly the routes its OpenAPI document describes, generated from the same definitions', async () => {
    const doc = (await (await app.request(OPENAPI_PATH, { headers: auth })).json()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
    assert.equal(doc.openapi, '3.1.0');
    const described = Object.entries(doc.paths)
      .flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`))
      .sort();
    const served = [
      ...new Set(
        app.routes
          .filter((r) => (r.path.startsWith('/api/') && r.path !== '/api/*' && r.path !== OPENAPI_PATH) || r.path === '/metrics')
          .filter((r) => r.method !== 'ALL')
          .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`),
      ),
    ].sort();
    assert.deepEqual(described, served);
    const defined = Object.values(ALL)
      .flatMap((routes) => Object.values(routes).map((r) => `${r.method.toUpperCase()} ${r.path}`))
      .concat('GET /metrics')
      .sort();
    assert.deepEqual(described, defined, 'every route definition is served and described');
  });

  it("takes its limits from the domain's", async () => {
    const doc = (await (await app.request(OPENAPI_PATH, { headers: auth })).json()) as {
      components: { schemas: Record<string, { properties: Record<string, { minimum?: number; maximum?: number }> }> };
    };
    const vm = doc.components.schemas.VmCreate!.properties;
    assert.deepEqual([vm.memoryMiB!.minimum, vm.memoryMiB!.maximum], [LIMITS.memoryMiB.min, LIMITS.memoryMiB.max]);
    assert.deepEqual([vm.cpus!.minimum, vm.cpus!.maximum], [LIMITS.cpus.min, LIMITS.cpus.max]);
  });

  it('answers every read with what its response schema says', async () => {
    const m = await requestMigration(c.api, 'web', { to: 'node-2' });
    await c.until('the migration to end', async () => (await c.api.call(migrationRoutes.show, { params: { id: m.id } })).report !== undefined);
    const reads: [RouteDef, Record<string, unknown>][] = [
      [clusterRoutes.status, {}],
      [clusterRoutes.settings, {}],
      [clusterRoutes.baselines, {}],
      [clusterRoutes.policy, {}],
      [nodeRoutes.list, {}],
      [vmRoutes.list, {}],
      [vmRoutes.show, { name: 'web' }],
      [migrationRoutes.list, {}],
      [migrationRoutes.show, { id: m.id }],
      [networkRoutes.list, {}],
      [switchRoutes.list, {}],
      [switchRoutes.bindings, {}],
      [backupRoutes.list, {}],
      [backupRoutes.schedules, {}],
      [replicaRoutes.status, {}],
      [eventRoutes.list, {}],
    ];
    for (const [route, params] of reads) {
      const path = route.path.replace(/\{(\w+)\}/g, (_, k: string) => String(params[k]));
      const res = await app.request(path, { headers: auth });
      assert.equal(res.status, 200, `${route.method} ${route.path}`);
      const schema = route.responses[200]!.content!['application/json']!.schema;
      const parsed = schema.safeParse(await res.json());
      assert.ok(parsed.success, `${route.method} ${route.path}: ${parsed.success ? '' : JSON.stringify(parsed.error.issues[0])}`);
    }
  });

  it('refuses a request without the token before reading it', async () => {
    const res = await app.request('/api/v1/vms', { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(2 << 20) });
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { error: { code: 'unauthorized', message: 'missing or wrong API token' } });
  });

  it('answers malformed paths, bodies and fields with one clear line, and keeps serving', async () => {
    const cases: [string, RequestInit, number, RegExp][] = [
      ['/api/v1/vms/%ZZ', { headers: auth }, 400, /^VM name '%ZZ' is malformed/],
      ['/api/v1/vms', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"name":"a","pad":1}' }, 400, /^unknown field 'pad'$/],
      ['/api/v1/vms', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"name":' }, 400, /^request body is not valid JSON$/],
      [
        '/api/v1/vms',
        { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'a', pad: 'x'.repeat(2 << 20) }) },
        413,
        /^the request body is larger than 1 MiB$/,
      ],
      [
        '/api/v1/vms',
        { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"name":"a","memoryMiB":"128"}' },
        400,
        /got '128' \(a string\)$/,
      ],
      [
        '/api/v1/cluster/settings/__proto__',
        { method: 'PUT', headers: { ...auth, 'content-type': 'application/json' }, body: '{"value":1}' },
        400,
        /^unknown cluster setting '__proto__'/,
      ],
      ['/api/v1/nothing', { headers: auth }, 404, /^no such endpoint: GET \/api\/v1\/nothing$/],
    ];
    for (const [path, init, status, message] of cases) {
      const res = await app.request(path, init);
      const body = (await res.json()) as { error: { message: string } };
      assert.equal(res.status, status, `${path}: ${body.error.message}`);
      assert.match(body.error.message, message, path);
      assert.doesNotMatch(body.error.message, /\n/, 'one line');
    }
    assert.equal((await app.request('/api/v1/status', { headers: auth })).status, 200, 'still serving');
  });
});
