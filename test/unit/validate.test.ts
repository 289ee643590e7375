import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ipFor, macFor, validateName, validateVmCreate } from '../../src/domain/validate.js';
import { ERROR_CLASSES, FerryError, errors, isFerryError } from '../../src/domain/errors.js';
import { parseWorkloads } from '../../src/domain/workload.js';

const invalid = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (e: unknown) => isFerryError(e, 'invalid-argument') && pattern.test(e.message));

describe('VM creation rules', () => {
  it('fills defaults', () => {
    assert.deepEqual(validateVmCreate({ name: 'web' }), { name: 'web', memoryMiB: 256, cpus: 1, diskGiB: 1, workload: 'idle', compat: false });
    assert.equal(validateVmCreate({ name: 'web', compat: 'on' }).compat, true);
    assert.throws(() => validateVmCreate({ name: 'web', compat: 'yes' as never }), /compat must be on or off, got 'yes'/);
  });

  it('refuses malformed names with the name in the message', () => {
    for (const bad of ['', 'Web', '1vm', 'a_b', 'a'.repeat(40), '-x', 'x-', '../etc']) {
      invalid(() => validateName('VM', bad), new RegExp(`VM name '${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}' is malformed`));
    }
    assert.equal(validateName('VM', 'a'), 'a');
    assert.equal(validateName('node', 'node-12'), 'node-12');
  });

  it('refuses memory and CPUs out of range, naming the limits', () => {
    invalid(() => validateVmCreate({ name: 'a', memoryMiB: 32 }), /memory \(MiB\) must be a whole number from 64 to 65536, got '32'/);
    invalid(() => validateVmCreate({ name: 'a', memoryMiB: 100.5 }), /memory/);
    invalid(() => validateVmCreate({ name: 'a', cpus: 0 }), /CPUs must be a whole number from 1 to 64/);
    invalid(() => validateVmCreate({ name: 'a', cpus: 'many' as never }), /got 'many'/);
  });

  it('parses workloads and refuses what does not parse', () => {
    assert.deepEqual(parseWorkloads('memory:32+tcp'), [{ kind: 'memory', mibPerSec: 32 }, { kind: 'tcp' }]);
    assert.deepEqual(parseWorkloads('tcp-client:web'), [{ kind: 'tcp-client', peer: 'web' }]);
    invalid(() => parseWorkloads('memory:fast'), /workload 'memory:fast' does not parse/);
    invalid(() => parseWorkloads('memory:0'), /memory rate must be 1\.\.100000 MiB\/s/);
    invalid(() => parseWorkloads('tcp+tcp'), /names the same kind twice/);
    invalid(() => parseWorkloads('idle+tcp'), /idle cannot be combined/);
    invalid(() => parseWorkloads('tcp-client:Bad'), /not a valid VM name/);
    invalid(() => validateVmCreate({ name: 'web', workload: 'tcp-client:web' }), /cannot be its own tcp-client peer/);
  });

  it('gives each VM index a distinct MAC and address', () => {
    assert.equal(macFor(1), '52:54:00:99:00:01');
    assert.equal(macFor(300), '52:54:00:99:01:2c');
    assert.equal(ipFor(1), '10.99.0.1/16');
    assert.equal(ipFor(300), '10.99.1.44/16');
  });
});

describe('errors', () => {
  it('maps every code to an exit code and HTTP status, bad input to exit 2', () => {
    for (const [code, cls] of Object.entries(ERROR_CLASSES)) {
      assert.ok([1, 2].includes(cls.exitCode), code);
      assert.ok(cls.httpStatus >= 400, code);
    }
    assert.equal(errors.vmNotFound('x').exitCode, 2);
    assert.equal(errors.timeout('x', 1).exitCode, 1);
  });

  it('survives a round trip through JSON', () => {
    const e = errors.notClusterMember('far-1');
    const back = FerryError.fromJSON(JSON.parse(JSON.stringify(e.toJSON())));
    assert.equal(back.code, 'not-cluster-member');
    assert.equal(back.message, e.message);
    assert.deepEqual(back.details, { node: 'far-1' });
  });
});
