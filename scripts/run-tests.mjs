// Runs the checks and the four layers of tests, fastest first:
//   lint         ESLint, Prettier, and the layer and cycle rules (dependency-cruiser)
//   unit         pure rules and schemas, contract suites of the store
//   component    controller and agents in one process over the strict fake hypervisor
//   integration  real QEMU guests, a real switch, real sockets, one file at a time
//   guests       real operating systems (the Debian image) in the lab
// `node scripts/run-tests.mjs unit component` runs some layers; further
// arguments filter test files by name.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const LAYERS = ['lint', 'unit', 'component', 'integration', 'guests'];
const args = process.argv.slice(2);
const chosen = args.filter((a) => LAYERS.includes(a));
const filters = args.filter((a) => !LAYERS.includes(a));
const parts = chosen.length ? chosen : LAYERS;

function files(dir) {
  const abs = path.join(root, 'dist', 'test', dir);
  if (!fs.existsSync(abs)) return [];
  return fs
    .readdirSync(abs)
    .filter((f) => f.endsWith('.test.js'))
    .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
    .sort()
    .map((f) => path.join(abs, f));
}

function bin(name) {
  return path.join(root, 'node_modules', '.bin', name);
}

let failed = false;
let passed = 0;
let failures = 0;
let skipped = 0;
const timings = [];
for (const p of parts) {
  const started = Date.now();
  if (p === 'lint') {
    process.stdout.write('\n# lint: eslint, prettier, dependency-cruiser\n');
    for (const [what, cmd, argv] of [
      ['eslint', bin('eslint'), ['src', 'test', 'bench', 'scripts']],
      ['prettier', bin('prettier'), ['--check', '--log-level', 'warn', '.']],
      ['layers and cycles', bin('depcruise'), ['src', '--config', '.dependency-cruiser.cjs', '--output-type', 'err']],
    ]) {
      const r = spawnSync(cmd, argv, { stdio: 'inherit', cwd: root });
      process.stdout.write(`${r.status === 0 ? 'ok' : 'FAILED'}: ${what}\n`);
      if (r.status !== 0) failed = true;
    }
    timings.push(`lint ${((Date.now() - started) / 1000).toFixed(1)} s`);
    continue;
  }
  const list = files(p);
  if (list.length === 0) continue;
  const concurrency = p === 'integration' || p === 'guests' ? 1 : 2;
  process.stdout.write(`\n# ${p} tests (${list.length} files)\n`);
  const tap = path.join(root, 'dist', `.${p}-results.tap`);
  const r = spawnSync(
    process.execPath,
    [
      '--test',
      `--test-concurrency=${concurrency}`,
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      ...list,
    ],
    { stdio: 'inherit', cwd: root, env: { ...process.env, FERRY_TEST: '1' } },
  );
  if (r.status !== 0) failed = true;
  const text = fs.existsSync(tap) ? fs.readFileSync(tap, 'utf8') : '';
  const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  passed += count('pass');
  failures += count('fail') + count('cancelled');
  skipped += count('skipped') + count('todo');
  timings.push(`${p} ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
process.stdout.write(`\n${passed} passed, ${failures} failed${skipped ? `, ${skipped} skipped` : ''} (${timings.join(', ')})\n`);
process.exit(failed || failures > 0 ? 1 : 0);
