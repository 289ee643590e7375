/** Storage roots: which directories a user may put a disk or a backup in. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { insideRoots, parseStorageRoots } from '../../src/domain/storage-roots.js';

const roots = ['/var/lib/ferry/shared', '/srv/vm'];
const ROOTS = 'storage roots: /var/lib/ferry/shared, /srv/vm (cluster setting storageRoots)';

describe('storage roots', () => {
  it('takes a directory inside a root, normalised', () => {
    assert.equal(insideRoots('/srv/vm', roots, '--to'), '/srv/vm');
    assert.equal(insideRoots('/srv/vm/a/../b/', roots, '--to'), '/srv/vm/b');
    assert.equal(insideRoots('/var/lib/ferry/shared/volume-2', roots, '--to'), '/var/lib/ferry/shared/volume-2');
  });

  it('refuses anything else with one line naming the roots', () => {
    const cases: [string, string][] = [
      ['/etc', "--to must be inside a storage root, got '/etc'"],
      ['/srv/vmx', "--to must be inside a storage root, got '/srv/vmx'"],
      ['/srv/vm/../../etc', "--to must be inside a storage root, got '/srv/vm/../../etc'"],
      ['../../etc', "--to must be an absolute directory inside a storage root, got '../../etc'"],
      ['srv/vm', "--to must be an absolute directory inside a storage root, got 'srv/vm'"],
      ['/proc/1', "--to cannot be under /proc, /sys, /dev, got '/proc/1'"],
      ['', "--to must be a directory, got ''"],
      ['/srv/vm/\0x', "--to must be a directory, got '/srv/vm/?x'"],
    ];
    for (const [given, message] of cases) assert.throws(() => insideRoots(given, roots, '--to'), { message: `${message}; ${ROOTS}` }, given);
    assert.throws(
      () => insideRoots(`/${'a'.repeat(5000)}`, roots, '--to'),
      (e: Error) => e.message.length < 300,
    );
  });

  it('parses the setting: absolute directories, comma-separated, none for just the shared volume', () => {
    assert.deepEqual(parseStorageRoots('/srv/a, /srv/b/,/srv/a'), ['/srv/a', '/srv/b']);
    assert.deepEqual(parseStorageRoots(''), []);
    assert.deepEqual(parseStorageRoots('none'), []);
    for (const bad of ['relative', '/srv/../etc', '/', '/proc', '/sys/x', '/dev']) assert.throws(() => parseStorageRoots(bad), /storage ?[rR]oot/, bad);
  });
});
