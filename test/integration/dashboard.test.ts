/**
 * The cluster console end to end: Debian's Chromium driven by
 * playwright-core against a real cluster with real QEMU. Log in (a wrong
 * token is refused), create and start a VM, live-migrate it from the UI and
 * watch its steps and progress update until the report shows, drain a node
 * from the maintenance view, and see events arrive live. The page must log
 * no errors; it is used at 1280×800. Screenshots go to the test's state
 * directory, or to docs/screenshots/ with FERRY_SCREENSHOTS=docs (to refresh
 * the README's pictures): a test run leaves the work tree as it was.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, type Page, chromium } from 'playwright-core';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { TestCluster, screenshotDir } from '../helpers/cluster.js';
import { backupRoutes } from '../../src/api/routes/storage.js';
import { clusterRoutes } from '../../src/api/routes/cluster.js';

const CHROMIUM = process.env.FERRY_CHROMIUM ?? '/usr/bin/chromium';

describe('dashboard in Chromium', () => {
  let c: TestCluster;
  let browser: Browser;
  let page: Page;
  let base: string;
  const problems: string[] = [];
  /** Set while the test provokes a refusal on purpose (the browser logs the failed request). */
  let provoking = false;

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `Chromium is not installed at ${CHROMIUM} (npm test's setup installs Debian's chromium package)`);
    c = await TestCluster.start({ nodes: 3, nodeMemoryMiB: 1024 });
    base = readEndpoint(c.layout, 'controller')!.url;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Playwright gives each launch a new, empty profile; the rest keeps Chromium off this machine's closed network.
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('console', (m) => {
      if (m.type() === 'error' && !provoking) problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  });
  after(async () => {
    await browser?.close();
    await c?.stop();
  });

  it('refuses a wrong token and the API without a session', async () => {
    await page.goto(`${base}/`);
    assert.match(page.url(), /\/login$/, 'not signed in: the login page');
    await page.fill('#token', 'not-the-token');
    await page.click('button[type=submit]');
    await page.waitForURL(/\/login\?error=1$/);
    assert.equal(await page.isVisible('#login-error'), true);
    provoking = true;
    const status = await page.evaluate(async () => (await fetch('/api/v1/vms')).status);
    await page.waitForTimeout(300); // the browser logs the refused request a moment later
    provoking = false;
    assert.equal(status, 401);
  });

  it('signs in and shows the cluster overview', async () => {
    await page.fill('#token', c.token);
    await page.click('button[type=submit]');
    await page.waitForSelector('#nodes tbody tr[data-node]');
    assert.equal(await page.locator('#nodes tbody tr[data-node]').count(), 3);
    assert.match(await page.locator('#nodes').innerText(), /node-1\s+up\s+\S+ qemu64\s+tcg/);
    // A change made with the session cookie but without the CSRF header is refused.
    provoking = true;
    const forged = await page.evaluate(
      async () => (await fetch('/api/v1/vms', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"forged"}' })).status,
    );
    await page.waitForTimeout(300);
    provoking = false;
    assert.equal(forged, 400);
  });

  it('creates and starts a VM', async () => {
    await page.click('nav a[data-view=vms]');
    await page.fill('#create-vm [name=name]', 'web');
    await page.fill('#create-vm [name=memoryMiB]', '256');
    await page.fill('#create-vm [name=workload]', 'memory:16');
    await page.selectOption('#create-vm [name=node]', 'node-1');
    await page.click('#create-vm button[type=submit]');
    await page.waitForSelector('#vms tr[data-vm=web]');
    await page.click('#vms tr[data-vm=web] a');
    await page.waitForSelector('.actions[data-vm=web]');
    await page.click('.actions button[data-action=start]');
    await page.waitForSelector('#vms tr[data-vm=web] .badge.running', { timeout: 60_000 });
    await page.waitForFunction(() => document.querySelector('pre.console')?.textContent?.includes('ferry-tick'), undefined, { timeout: 60_000 });
    // Its HA status, as `vm show` has it; a change made by the CLI shows at once (the event re-renders the view).
    assert.equal(await page.locator('#vm-detail dd.ha').innerText(), 'off');
    await c.ferryOk(['vm', 'set', 'web', '--ha', 'on', '--ha-priority', '300']);
    await page.waitForFunction(() => document.querySelector('#vm-detail dd.ha')?.textContent === 'on (priority 300)', undefined, { timeout: 10_000 });
    await page.goto(`${base}/#/overview`);
    await page.waitForSelector('#nodes tr[data-node=node-1] td.vm-count');
    await page.screenshot({ path: path.join(screenshotDir(c.layout.dir), 'overview.png') });
  });

  it('live-migrates it from the UI, with the pre-flight check, live steps and progress, then the report', async () => {
    await page.goto(`${base}/#/vms/web`);
    await page.waitForSelector('#target');
    await page.selectOption('#target', 'node-2');
    await page.waitForSelector('#blockers li.ok');
    assert.equal(await page.locator('#blockers').innerText(), 'no blockers');
    await page.fill('#bandwidth', '24');
    await page.click('#live-migrate');
    await page.waitForURL(/#\/migrations\/m-/);
    // Watch it move: the memory step becomes current and the progress figures appear and change.
    await page.waitForSelector('#steps li.current[data-step=memory]', { timeout: 30_000 });
    await page.waitForSelector('#progress');
    const first = await page.locator('#progress').innerText();
    await page
      .waitForFunction(
        (before) => {
          const el = document.querySelector('#progress');
          return el !== null && el.textContent !== before;
        },
        first.replace(/\n/g, ''),
        { timeout: 15_000 },
      )
      .catch(() => undefined);
    await page.waitForSelector('#chart', { timeout: 15_000 });
    // A few seconds of samples, so the chart shows the rate over time.
    await page.waitForFunction(
      () => Number(document.querySelector<HTMLElement>('#chart')?.dataset.samples ?? 0) >= 5 && document.querySelector('#chart .uplot canvas'),
      undefined,
      {
        timeout: 15_000,
      },
    );
    // Values with units at the cursor: hover the plot, the legend shows both rates.
    const over = page.locator('#chart .u-over');
    const box = (await over.boundingBox())!;
    await page.mouse.move(box.x + box.width * 0.8, box.y + box.height / 2);
    await page.waitForFunction(() => /bandwidth\s*[\d.]+ (B|KiB|MiB|GiB)\/s/.test(document.querySelector('#chart .u-legend')?.textContent ?? ''), undefined, {
      timeout: 5_000,
    });
    assert.match(await page.locator('#chart .u-legend').innerText(), /dirty rate\s*[\d.]+ (B|KiB|MiB|GiB)\/s/);
    assert.match(await page.locator('#chart .u-legend').innerText(), /time\s*[\d.]+ s/);
    await page.screenshot({ path: path.join(screenshotDir(c.layout.dir), 'migration.png') });
    assert.ok((await page.locator('#steps li.done').count()) >= 3, 'connect, config and create are done');
    await page.waitForSelector('#report', { timeout: 120_000 });
    assert.match(await page.locator('#report').innerText(), /Status\s+completed/);
    assert.match(await page.locator('#blackout').innerText(), /^\d+(\.\d+)? (ms|s)$/);
    assert.equal(await page.locator('#steps li.done').count(), 7);
    assert.equal((await c.vm('web')).node, 'node-2');
  });

  it('plans and runs a drain from the maintenance view, then resumes the node', async () => {
    await page.click('nav a[data-view=maintenance]');
    await page.click('button[data-plan=node-2]');
    await page.waitForSelector('#plan tbody tr');
    assert.match(await page.locator('#plan').innerText(), /web\s+256 MiB\s+node-(1|3)/);
    await page.click('button[data-drain=node-2]');
    await page.waitForSelector('#maintenance tr[data-node=node-2] .badge.maintenance');
    await page.waitForFunction(() => document.querySelector('#maintenance tr[data-node=node-2] td:nth-child(3)')?.textContent === '0', undefined, {
      timeout: 60_000,
    });
    assert.notEqual((await c.vm('web')).node, 'node-2');
    await page.click('button[data-resume=node-2]');
    await page.waitForSelector('#maintenance tr[data-node=node-2] .badge.up');
  });

  it('shows events as they happen', async () => {
    await page.click('nav a[data-view=events]');
    await page.waitForSelector('#events');
    const before = await page.locator('#events li').count();
    await c.api.call(clusterRoutes.set, { params: { name: 'balanceThresholdPct' }, body: { value: 25 } });
    await page.waitForFunction((n) => document.querySelectorAll('#events li').length > n, before, { timeout: 10_000 });
    assert.match(await page.locator('#events li').first().innerText(), /cluster\.setting\s+balanceThresholdPct: 20 → 25/);
  });

  it('shows the cluster networks and the switch MAC table, and serves metrics and the OpenAPI description', async () => {
    await page.click('nav a[data-view=network]');
    await page.waitForSelector('#networks tbody tr');
    assert.match(await page.locator('#networks').innerText(), /migration\s+migration\s+100\s+127\.\d+\.1\.0\/24\s+up/);
    await page.waitForSelector('#macs tbody tr');
    assert.match(await page.locator('#macs').innerText(), /default\s+52:54:00:99:00:01\s+\S+\s+node-\d\s+web/);
    const metrics = await page.evaluate(async () => (await fetch('/metrics')).text());
    assert.match(metrics, /^ferry_migrations_total\{mode="live",status="completed"\} [1-9]\d*$/m);
    assert.match(metrics, /^ferry_vms\{node="node-\d",state="running"\} 1$/m);
    const api = await page.evaluate(async () => (await fetch('/api/v1/openapi.json')).json() as Promise<{ openapi: string; paths: Record<string, unknown> }>);
    assert.equal(api.openapi, '3.1.0');
    assert.ok(api.paths['/api/v1/vms/{name}/migrate']);
  });

  it('backs a VM up from the storage view and lists the backup', async () => {
    await page.click('nav a[data-view=storage]');
    await page.waitForSelector('#backup-form');
    await page.selectOption('#backup-form select[name=vm]', 'web');
    await page.click('#backup-form button[type=submit]');
    await page.waitForFunction(() => /completed/.test(document.querySelector('#backups tbody')?.textContent ?? ''), undefined, { timeout: 60_000 });
    assert.match(await page.locator('#backups tbody tr').first().innerText(), /^b-\S+\s+web\s+full\s+completed\b/);
    const [b] = await c.api.call(backupRoutes.list, { query: { vm: 'web' } });
    assert.deepEqual([b!.status, b!.verified], ['completed', true]);
    assert.match(await page.locator('#replicas').innerText(), /none/);
  });

  it('logged no errors in the browser', () => {
    assert.deepEqual(problems, []);
  });
});
