// Runs the test suite: unit and component tests first (fast, in parallel),
// then integration tests with real QEMU one file at a time (two cores).
// `node scripts/run-tests.mjs unit` or `... integration` runs one part;
// further arguments filter files by name.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const [part, ...filters] = process.argv.slice(2);
const parts = part && ['unit', 'integration'].includes(part) ? [part] : ['unit', 'integration'];
if (part && !['unit', 'integration'].includes(part)) filters.unshift(part);

function files(dir) {
  const abs = path.join(root, 'dist', 'test', dir);
  if (!fs.existsSync(abs)) return [];
  return fs.readdirSync(abs)
    .filter((f) => f.endsWith('.test.js'))
    .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
    .sort()
    .map((f) => path.join(abs, f));
}

let failed = false;
let passed = 0;
let failures = 0;
let skipped = 0;
for (const p of parts) {
  const list = files(p);
  if (list.length === 0) continue;
  const concurrency = p === 'unit' ? 2 : 1;
  process.stdout.write(`\n# ${p} tests (${list.length} files)\n`);
  const tap = path.join(root, 'dist', `.${p}-results.tap`);
  const r = spawnSync(process.execPath, [
    '--test', `--test-concurrency=${concurrency}`,
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    '--test-reporter=tap', `--test-reporter-destination=${tap}`,
    ...list,
  ], { stdio: 'inherit', cwd: root, env: { ...process.env, FERRY_TEST: '1' } });
  if (r.status !== 0) failed = true;
  const text = fs.existsSync(tap) ? fs.readFileSync(tap, 'utf8') : '';
  const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  passed += count('pass');
  failures += count('fail') + count('cancelled');
  skipped += count('skipped') + count('todo');
}
process.stdout.write(`\n${passed} passed, ${failures} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exit(failed || failures > 0 ? 1 : 0);
