// Runs the checks and the four layers of tests, fastest first:
//   lint         ESLint, Prettier, and the layer and cycle rules (dependency-cruiser)
//   unit         pure rules and schemas, contract suites of the store
//   component    controller and agents in one process over the strict fake hypervisor
//   integration  real QEMU guests, a real switch, real sockets, one file at a time
//   guests       real operating systems (the Debian image) in the lab
// Integration files run one at a time, except that the few that start no
// guest worth the name (BESIDE) run in a second lane next to replica.test
// (a run of its own, first), which spends most of its two minutes waiting
// for its 30 s sync interval.
// `node scripts/run-tests.mjs unit component` runs some layers; further
// arguments filter test files by name.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const LAYERS = ['lint', 'unit', 'component', 'integration', 'guests'];
const args = process.argv.slice(2);
const chosen = args.filter((a) => LAYERS.includes(a));
const filters = args.filter((a) => !LAYERS.includes(a));
const parts = chosen.length ? chosen : LAYERS;
const FIRST = 'replica.test.js';
const BESIDE = ['cluster-etcd', 'hostile-requests', 'hypervisor-contract', 'images', 'init', 'lab', 'store-etcd'].map((n) => `${n}.test.js`);

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

// One `node --test` run; a lane that does not inherit stdout keeps its spec output to print after.
function runOnce(name, files, inherit, concurrency) {
  const tap = path.join(root, 'dist', `.${name}-results.tap`);
  const spec = path.join(root, 'dist', `.${name}-results.txt`);
  fs.rmSync(tap, { force: true });
  const child = spawn(
    process.execPath,
    [
      '--test',
      `--test-concurrency=${concurrency}`,
      '--test-reporter=spec',
      `--test-reporter-destination=${inherit ? 'stdout' : spec}`,
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      ...files,
    ],
    { stdio: 'inherit', cwd: root, env: { ...process.env, FERRY_TEST: '1' } },
  );
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      const read = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
      resolve({ status: signal ? 1 : code, tap: read(tap), spec: inherit ? '' : read(spec) });
    });
  });
}

// A lane: its runs one after another. Node runs the files of one run in the order of their names, whatever
// order they are given in, so a file that must come first is a run of its own.
async function runLane(lane, concurrency) {
  const out = { name: lane.name, status: 0, tap: '', spec: '' };
  for (const [i, files] of lane.runs.entries()) {
    const r = await runOnce(`${lane.name}-${i}`, files, lane.inherit, concurrency);
    if (r.status !== 0) out.status = r.status;
    out.tap += r.tap;
    out.spec += r.spec;
  }
  return out;
}

/**
 * Waits for better-sqlite3's build, which scripts/setup.sh leaves running in the background under npm test
 * (FERRY_SETUP_NATIVE_LATER=1) while the lint runs; every layer after the lint needs it.
 */
async function nativeBuilt() {
  const dir = path.join(root, 'node_modules', '.ferry-native');
  if (!fs.existsSync(dir)) return;
  const status = path.join(dir, 'status');
  for (let i = 0; i < 3000 && !fs.existsSync(status); i++) await sleep(200);
  if ((fs.existsSync(status) ? fs.readFileSync(status, 'utf8').trim() : '') !== '0') {
    const log = path.join(dir, 'log');
    process.stdout.write(`${fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : ''}\nFAILED: building better-sqlite3 (scripts/setup.sh)\n`);
    process.exit(1);
  }
  fs.rmSync(dir, { recursive: true, force: true });
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
    timings.push(`lint ${failed ? 'FAILED ' : ''}${((Date.now() - started) / 1000).toFixed(1)} s`);
    continue;
  }
  await nativeBuilt();
  const list = files(p);
  if (list.length === 0) continue;
  const concurrency = p === 'integration' || p === 'guests' ? 1 : 2;
  process.stdout.write(`\n# ${p} tests (${list.length} files)\n`);
  // The second lane only where its neighbour waits: replica.test runs first in the main lane.
  const beside = p === 'integration' && list.some((f) => f.endsWith(FIRST)) ? list.filter((f) => BESIDE.includes(path.basename(f))) : [];
  const main = list.filter((f) => !beside.includes(f));
  const first = beside.length ? main.filter((f) => f.endsWith(FIRST)) : [];
  const lanes = [{ name: p, runs: [first, main.filter((f) => !first.includes(f))].filter((r) => r.length), inherit: true }];
  if (beside.length) lanes.push({ name: `${p}-beside`, runs: [beside], inherit: false });
  const results = await Promise.all(lanes.filter((l) => l.runs.length).map((l) => runLane(l, concurrency)));
  for (const r of results) {
    if (r.spec) process.stdout.write(`\n# ${r.name} (beside ${FIRST})\n${r.spec}`);
    if (r.status !== 0) failed = true;
    const count = (name) => [...r.tap.matchAll(new RegExp(`^# ${name} (\\d+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
    passed += count('pass');
    failures += count('fail') + count('cancelled');
    skipped += count('skipped') + count('todo');
  }
  timings.push(`${p} ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
process.stdout.write(`\n${passed} passed, ${failures} failed${skipped ? `, ${skipped} skipped` : ''} (${timings.join(', ')})\n`);
process.exit(failed || failures > 0 ? 1 : 0);
