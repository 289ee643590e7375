/** The store contract against the SQLite backend, in a file (two handles) and in memory. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import { storeContract } from '../../src/testing/store-contract.js';

storeContract('SQLite file', { handles: 'many' }, async (clock) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-store-'));
  const store = new SqliteStore(path.join(dir, 'store.db'), clock, 10);
  return {
    store,
    advance: (ms) => clock.advance(ms),
    second: async () => new SqliteStore(path.join(dir, 'store.db'), clock, 10),
    dispose: async () => {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
});

storeContract('SQLite in memory', { handles: 'one' }, async (clock) => {
  const store = new SqliteStore(':memory:', clock, 10);
  return { store, advance: (ms) => clock.advance(ms), dispose: () => store.close() };
});
