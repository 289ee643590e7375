import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ipFor, macFor } from '../../src/domain/addresses.js';
import { ERROR_CLASSES, FerryError, errors, isFerryError } from '../../src/domain/errors.js';
import { parseWorkloads } from '../../src/domain/workload.js';

const invalid = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (e: unknown) => isFerryError(e, 'invalid-argument') && pattern.test(e.message));

describe('VM addresses', () => {
  it('gives each VM index a distinct MAC and address', () => {
    assert.equal(macFor(1), '52:54:00:99:00:01');
    assert.equal(macFor(300), '52:54:00:99:01:2c');
    assert.equal(ipFor(1), '10.99.0.1/16');
    assert.equal(ipFor(300), '10.99.1.44/16');
  });
});

describe('workloads', () => {
  it('parses workloads and refuses what does not parse', () => {
    assert.deepEqual(parseWorkloads('memory:32+tcp'), [{ kind: 'memory', mibPerSec: 32 }, { kind: 'tcp' }]);
    assert.deepEqual(parseWorkloads('tcp-client:web'), [{ kind: 'tcp-client', peer: 'web' }]);
    invalid(() => parseWorkloads('memory:fast'), /workload 'memory:fast' does not parse/);
    invalid(() => parseWorkloads('memory:0'), /memory rate must be 1\.\.100000 MiB\/s/);
    invalid(() => parseWorkloads('tcp+tcp'), /names the same kind twice/);
    invalid(() => parseWorkloads('idle+tcp'), /idle cannot be combined/);
    invalid(() => parseWorkloads('tcp-client:Bad'), /not a valid VM name/);
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
