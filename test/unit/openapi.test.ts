/** The OpenAPI description matches the routes the controller serves, and its schemas the server's limits. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OPERATIONS, openApiDocument } from '../../src/api/openapi.js';
import { controllerRouter } from '../../src/api/routes.js';
import { renderMetrics } from '../../src/api/metrics.js';
import { LIMITS } from '../../src/domain/records.js';
import { validateVmCreate } from '../../src/domain/validate.js';

describe('OpenAPI description', () => {
  // Routing only: no route handler runs here.
  const router = controllerRouter({} as never, {} as never, 'token', () => {}, {} as never);
  const served = router.list()
    .filter((r) => r.path.startsWith('/api/') || r.path === '/metrics')
    .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`)
    .sort();

  it('describes every API route the controller serves, and nothing it does not', () => {
    assert.deepEqual(Object.keys(OPERATIONS).sort(), served);
  });

  it('is OpenAPI 3.1 with request schemas built from the validators\' limits', () => {
    const doc = openApiDocument() as { openapi: string; paths: Record<string, Record<string, unknown>>; components: { schemas: Record<string, { properties: Record<string, { minimum?: number; maximum?: number }> }> } };
    assert.equal(doc.openapi, '3.1.0');
    const vm = doc.components.schemas.VmCreate!.properties;
    assert.deepEqual([vm.memoryMiB!.minimum, vm.memoryMiB!.maximum], [LIMITS.memoryMiB.min, LIMITS.memoryMiB.max]);
    // What the schema allows at the edge, the server accepts; one past it, the server refuses.
    assert.equal(validateVmCreate({ name: 'edge', memoryMiB: LIMITS.memoryMiB.max }).memoryMiB, LIMITS.memoryMiB.max);
    assert.throws(() => validateVmCreate({ name: 'edge', memoryMiB: LIMITS.memoryMiB.max + 1 }));
    assert.ok(doc.paths['/api/v1/vms/{name}/migrate']!.post);
  });
});

describe('Prometheus metrics', () => {
  it('counts migrations by mode and status, with histograms, the queue and VMs per node', () => {
    const m = (id: string, status: string, extra = {}) => ({ id, vm: 'a', mode: 'live', from: 'n1', to: 'n2', phase: status, status, requestedAtMs: 0, priority: 'manual', steps: [], tuning: {}, ...extra });
    const text = renderMetrics(
      [m('1', 'completed', { totalMs: 1500, downtimeMs: 20, guestBlackoutMs: 60, transferredBytes: 1000 }), m('2', 'failed'), m('3', 'queued')] as never,
      [{ name: 'a', node: 'n2', state: 'running' }, { name: 'b', node: '', state: 'stopped' }] as never,
      [{ name: 'n1', state: 'up' }, { name: 'n2', state: 'maintenance' }] as never,
    );
    assert.match(text, /^ferry_migrations_total\{mode="live",status="completed"\} 1$/m);
    assert.match(text, /^ferry_migrations_total\{mode="live",status="failed"\} 1$/m);
    assert.match(text, /^ferry_migration_duration_seconds_bucket\{le="2"\} 1$/m);
    assert.match(text, /^ferry_migration_duration_seconds_bucket\{le="1"\} 0$/m);
    assert.match(text, /^ferry_migration_guest_blackout_seconds_sum 0.06$/m);
    assert.match(text, /^ferry_migration_transferred_bytes_total 1000$/m);
    assert.match(text, /^ferry_migration_queue_length 1$/m);
    assert.match(text, /^ferry_vms\{node="n2",state="running"\} 1$/m);
    assert.match(text, /^ferry_node_up\{node="n2",state="maintenance"\} 0.5$/m);
  });
});
