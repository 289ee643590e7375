/**
 * VMs that boot through their firmware, with real QEMU, in CI: a GRUB
 * rescue ISO (BIOS and UEFI in one hybrid image, grub-mkrescue) that holds
 * the built-in guest's kernel stands in for an installer, and a linked
 * clone of a blank library image is the disk. SeaBIOS and OVMF both boot it
 * from the CD-ROM; the UEFI VM live-migrates with its own variables; a
 * backup of a linked clone leaves the library's image untouched and says it
 * was not quiesced (this guest has no agent); the agent-less guest is
 * reported in one line and shuts down by the ACPI button. (The Debian image,
 * with cloud-init and qemu-guest-agent, is test/guests/.)
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VmRecord } from '../../src/domain/records.js';
import { chromium } from 'playwright-core';
import { readEndpoint } from '../../src/config/cluster-config.js';
import { findImage } from '../../src/guest/image.js';
import { TestCluster, screenshotDir, waitFor } from '../helpers/cluster.js';

const CHROMIUM = process.env.FERRY_CHROMIUM ?? '/usr/bin/chromium';
const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

describe('VMs that boot through their firmware', () => {
  let c: TestCluster;
  let blank: string;
  before(async () => {
    c = await TestCluster.start({ nodes: 2 });
    const incoming = path.join(c.layout.shared, 'incoming');
    const tree = path.join(incoming, 'iso-tree');
    fs.mkdirSync(path.join(tree, 'boot', 'grub'), { recursive: true });
    const guest = findImage()!;
    fs.copyFileSync(guest.kernelPath, path.join(tree, 'boot', 'vmlinuz'));
    fs.copyFileSync(guest.initrdPath, path.join(tree, 'boot', 'initrd.img'));
    // The guest names itself from the command line; both VMs boot the same CD, so it is named 'from-cd'.
    fs.writeFileSync(
      path.join(tree, 'boot', 'grub', 'grub.cfg'),
      'set timeout=0\nlinux /boot/vmlinuz console=tty0 console=ttyS0 ferry.name=from-cd ferry.ip=10.99.0.250/16 ferry.workload=idle\ninitrd /boot/initrd.img\nboot\n',
    );
    execFileSync('grub-mkrescue', ['-o', path.join(incoming, 'tiny.iso'), tree], { stdio: 'ignore' });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(incoming, 'blank.qcow2'), '1G']);
    await c.ferryOk(['image', 'import', path.join(incoming, 'tiny.iso'), '--name', 'tiny']);
    blank = (await c.ferryJson<{ file: string }>(['image', 'import', path.join(incoming, 'blank.qcow2'), '--name', 'blank'])).file;
  });
  after(async () => {
    await c?.stop();
  });

  let uefi: VmRecord;
  it('boots an ISO under SeaBIOS and under OVMF, the disk a linked clone of a library image', async () => {
    const bios = await c.ferryJson<VmRecord>(['vm', 'create', 'cd-bios', '--iso', 'tiny', '--memory', '256', '--node', 'node-1']);
    uefi = await c.ferryJson<VmRecord>([
      'vm',
      'create',
      'cd-uefi',
      '--image',
      'blank',
      '--iso',
      'tiny',
      '--firmware',
      'uefi',
      '--memory',
      '256',
      '--node',
      'node-1',
    ]);
    assert.deepEqual(bios.boot, { firmware: 'bios', iso: 'tiny', isoFile: path.join(c.layout.shared, 'images', 'tiny.iso') });
    assert.deepEqual([uefi.boot?.firmware, uefi.boot?.image, uefi.boot?.linked, uefi.boot?.efiVarsPath], ['uefi', 'blank', true, c.layout.efiVars('cd-uefi')]);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', uefi.diskPath], { encoding: 'utf8' })) as { 'backing-filename'?: string };
    assert.equal(info['backing-filename'], blank);
    await Promise.all(['cd-bios', 'cd-uefi'].map((vm) => c.ferryOk(['vm', 'start', vm])));
    for (const vm of ['cd-bios', 'cd-uefi']) await waitFor(`${vm} to boot from its CD-ROM`, 120_000, () => c.console(vm).ticks.length > 0);
    // The guest kernel's own log says which firmware started it.
    assert.match(c.consoleText('cd-uefi'), /efi: EFI v[\d.]+ by EDK II/);
    assert.doesNotMatch(c.consoleText('cd-bios'), /efi: EFI v/);
    assert.match(c.consoleText('cd-bios'), /DMI: .*BIOS [\d.]+-debian/, 'SeaBIOS, as Debian builds it');
    assert.match(await c.ferryOk(['vm', 'show', 'cd-uefi']), /^boot +UEFI from linked clone of image blank, ISO tiny first$/m);
  });

  it('says in one line that a guest without an agent has none', async () => {
    const shown = await c.ferryJson<{ guest?: { agent: boolean; reason?: string } }>(['vm', 'show', 'cd-uefi']);
    assert.deepEqual(shown.guest, { agent: false, reason: 'no guest agent answered' });
    assert.match(await c.ferryOk(['vm', 'show', 'cd-uefi']), /^guest +no agent: no guest agent answered$/m);
  });

  it('live-migrates the UEFI VM: the same boot goes on on the target', async () => {
    const bootId = c.console('cd-uefi').ticks.at(-1)!.bootId;
    await c.ferryOk(['vm', 'migrate', 'cd-uefi', '--to', 'node-2']);
    assert.equal((await c.vm('cd-uefi')).node, 'node-2');
    const ticks = c.console('cd-uefi').ticks.length;
    await waitFor('the guest to tick on node-2', 20_000, () => c.console('cd-uefi').ticks.length > ticks + 1);
    assert.deepEqual([...new Set(c.console('cd-uefi').ticks.map((t) => t.bootId))], [bootId], 'one boot, not a restart');
  });

  it('shows the screen in Chromium through noVNC, before and after a live migration', async () => {
    assert.ok(fs.existsSync(CHROMIUM), `Chromium is not installed at ${CHROMIUM} (npm test's setup installs Debian's chromium package)`);
    const url = (await c.ferryOk(['vm', 'vnc', 'cd-uefi'])).trim();
    const base = readEndpoint(c.layout, 'controller')!.url;
    assert.equal(url, `${base}/display?vm=cd-uefi`);
    const refused = await c.ferry(['vm', 'vnc', 'cd-bios-none']);
    assert.equal(refused.stderr.trim(), "error: unknown VM 'cd-bios-none'");
    // Without a session or the token the WebSocket is refused before it opens.
    const { WebSocket } = await import('ws');
    const anonymous = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/api/v1/vms/cd-uefi/display`);
      ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => resolve(101));
      ws.on('error', () => {});
    });
    assert.equal(anonymous, 401);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1024, height: 800 } });
      const problems: string[] = [];
      page.on('pageerror', (e) => problems.push(e.message));
      await page.goto(url);
      assert.match(page.url(), /\/login$/, 'the screen needs a session');
      await page.fill('#token', c.token);
      await page.click('button[type=submit]');
      await page.waitForURL(`${base}/`);
      await page.goto(url);
      /** The share of the screen's pixels that are not black: the guest's kernel messages on its VGA text console. */
      const lit = () =>
        page.evaluate(() => {
          const canvas = document.querySelector('#screen canvas') as HTMLCanvasElement | null;
          if (!canvas || canvas.width < 100) return 0;
          const px = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
          let on = 0;
          for (let i = 0; i < px.length; i += 4) if (px[i]! + px[i + 1]! + px[i + 2]! > 60) on++;
          return on / (px.length / 4);
        });
      await page.waitForSelector('body[data-state=connected]', { timeout: 20_000 });
      await waitFor('the guest screen to be drawn', 20_000, async () => (await lit()) > 0.005);
      const shots = screenshotDir(c.layout.dir);
      fs.mkdirSync(shots, { recursive: true });
      await page.screenshot({ path: path.join(shots, 'vnc-before-migration.png') });
      await c.ferryOk(['vm', 'migrate', 'cd-uefi', '--to', 'node-1']);
      // The source QEMU closed the stream; the page connects again, now through node-1's agent.
      await page.waitForSelector('body[data-connects="2"][data-state=connected]', { timeout: 30_000 });
      await waitFor('the screen after the move', 20_000, async () => (await lit()) > 0.005);
      await page.screenshot({ path: path.join(shots, 'vnc-after-migration.png') });
      assert.deepEqual(problems, []);
    } finally {
      await browser.close();
    }
  });

  it("backs up a linked clone into a standalone file without touching the library's image, not quiesced", async () => {
    const before = sha256(blank);
    const b = await c.ferryJson<{ status: string; quiesced?: boolean; quiesceNote?: string; file: string }>(['backup', 'create', 'cd-uefi']);
    assert.deepEqual([b.status, b.quiesced, b.quiesceNote], ['completed', false, 'no guest agent answered']);
    assert.match(await c.ferryOk(['backup', 'list', 'cd-uefi']), / no$/m);
    assert.equal(sha256(blank), before, "the merge went into the clone, not the library's image");
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', b.file], { encoding: 'utf8' })) as { 'backing-filename'?: string };
    assert.equal(info['backing-filename'], undefined, 'the backup stands alone');
    const disk = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', (await c.vm('cd-uefi')).diskPath], { encoding: 'utf8' })) as {
      'backing-filename'?: string;
    };
    assert.equal(disk['backing-filename'], blank, 'the VM is back on its clone');
  });

  it('shuts an agent-less guest down with the ACPI button, and frees the image only when no VM needs it', async () => {
    for (const vm of ['cd-bios', 'cd-uefi']) {
      const r = await c.ferryJson<{ shutdown?: { by: string; via?: string } }>(['vm', 'stop', vm]);
      assert.deepEqual([r.shutdown?.by, r.shutdown?.via], ['guest', 'acpi'], vm);
    }
    const refused = await c.ferry(['image', 'delete', 'tiny']);
    assert.equal(refused.code, 2);
    assert.equal(refused.stderr.trim(), "error: image 'tiny' is in use by VMs cd-bios, cd-uefi (delete them first)");
    await c.ferryOk(['vm', 'delete', 'cd-uefi']);
    assert.ok(!fs.existsSync(uefi.boot!.efiVarsPath!), 'the variables go with the VM');
    assert.match((await c.ferry(['image', 'delete', 'blank'])).stdout, /image blank deleted/);
    await c.ferryOk(['vm', 'delete', 'cd-bios']);
    await c.ferryOk(['image', 'delete', 'tiny']);
  });
});
