/**
 * Real guests in the lab (root): Debian 12 built by `ferry image build
 * debian` from Debian's packages, booted from its own bootloader under
 * SeaBIOS and under OVMF, set up by cloud-init (hostname, the SSH key, Ferry's
 * address) and reported by qemu-guest-agent; SSH from the lab's real Linux
 * client; a live migration under a running SSH session; a quiesced backup
 * whose restored file system fsck finds clean; a clean shutdown through the
 * agent; an installer ISO that boots; and bad input refused with one line,
 * leaving nothing behind.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { labRun } from '../../src/lab/lab.js';
import type { GuestReport, VmRecord } from '../../src/domain/records.js';
import { findImage } from '../../src/guest/image.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';

type Shown = VmRecord & { guest?: GuestReport };

/** Where partition 2 (the ext4 root) starts on the Debian image, in 512-byte sectors (scripts/build-debian-image.sh). */
const ROOT_START_SECTOR = 133120;

describe('real guests', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  let c: TestCluster;
  let work: string;
  let key: string;
  before(async () => {
    c = await TestCluster.lab(['--hosts', '2', '--node-memory', '1536']);
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-guests-'));
    key = path.join(work, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ferry-test', '-f', key]);
    fs.writeFileSync(path.join(work, 'user-data.yaml'), '#cloud-config\nwrite_files:\n  - path: /etc/ferry-test\n    content: "made by cloud-init\\n"\n');
  });
  after(async () => {
    await c?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  const show = (vm: string) => c.ferryJson<Shown>(['vm', 'show', vm]);
  const ipOf = (vm: VmRecord) => vm.ip.split('/')[0]!;
  const sshArgs = (ip: string, command: string) => [
    'ssh',
    '-i',
    key,
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'ConnectTimeout=5',
    '-o',
    'LogLevel=ERROR',
    `debian@${ip}`,
    command,
  ];
  /** Runs a command in the guest over SSH from the lab's client. */
  const ssh = async (ip: string, command: string) => labRun(c.labbed!.client, sshArgs(ip, command));
  /** Waits for the guest agent to answer and cloud-init to have finished. */
  const readyGuest = (vm: string) =>
    waitFor(
      `${vm}'s guest agent and cloud-init`,
      300_000,
      async () => {
        const v = await show(vm);
        return v.guest?.agent && v.guest.cloudInit?.state !== 'not-run' ? v : undefined;
      },
      2_000,
    );
  const whereQemuRuns = async (vm: string): Promise<string[]> => {
    const all = await c.instances(['host-1', 'host-2']);
    return [...all.values()].flat().flatMap((i) => (i.name === vm && i.pid ? [TestCluster.netnsOf(i.pid)] : []));
  };

  let bios: VmRecord;
  let uefi: VmRecord;

  it('builds the Debian image into the library, boots it under BIOS and UEFI, applies cloud-init and reports the guest', async () => {
    const built = await c.ferry(['image', 'build', 'debian', '--name', 'debian-12', '--json'], { timeoutMs: 900_000 });
    assert.equal(built.code, 0, built.stderr);
    const image = JSON.parse(built.stdout) as { format: string; virtualSizeBytes: number };
    assert.deepEqual([image.format, image.virtualSizeBytes], ['raw', 2 * 2 ** 30]);

    const common = ['--image', 'debian-12', '--memory', '512', '--ssh-key', `${key}.pub`, '--json'];
    bios = await c.ferryJson<VmRecord>(['vm', 'create', 'deb-bios', ...common, '--cloud-init', path.join(work, 'user-data.yaml'), '--node', 'host-1']);
    uefi = await c.ferryJson<VmRecord>(['vm', 'create', 'deb-uefi', ...common, '--firmware', 'uefi', '--disk', '3', '--node', 'host-2']);
    assert.deepEqual(bios.boot && [bios.boot.firmware, bios.boot.image, bios.boot.linked, bios.diskGiB], ['bios', 'debian-12', true, 2]);
    assert.deepEqual(uefi.boot && [uefi.boot.firmware, uefi.diskGiB], ['uefi', 3]);
    // A linked clone: a qcow2 over the library's file, grown to the size asked for.
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', uefi.diskPath], { encoding: 'utf8' })) as {
      'backing-filename': string;
      'virtual-size': number;
    };
    assert.deepEqual([info['backing-filename'], info['virtual-size']], [path.join(c.layout.shared, 'images', 'debian-12.raw'), 3 * 2 ** 30]);
    assert.ok(fs.existsSync(uefi.boot!.efiVarsPath!), "the UEFI VM's own variables are on the shared volume");

    // Both boot at once: each a minute or so under TCG.
    await Promise.all([c.ferryOk(['vm', 'start', 'deb-bios']), c.ferryOk(['vm', 'start', 'deb-uefi'])]);
    const [b, u] = await Promise.all([readyGuest('deb-bios'), readyGuest('deb-uefi')]);
    for (const [v, rec] of [
      [b, bios],
      [u, uefi],
    ] as const) {
      const g = v.guest as Extract<GuestReport, { agent: true }>;
      assert.match(g.os ?? '', /Debian GNU\/Linux 12/);
      assert.equal(g.hostname, rec.name, 'cloud-init set the hostname to the VM name');
      assert.equal(g.cloudInit?.state, 'done', JSON.stringify(g.cloudInit));
      assert.match(g.cloudInit?.datasource ?? '', /NoCloud/);
      const nic = g.interfaces.find((n) => n.mac === rec.mac);
      assert.ok(nic?.addresses.includes(rec.ip), `the agent reports ${rec.ip} on the NIC: ${JSON.stringify(g.interfaces)}`);
    }
    const text = await c.ferryOk(['vm', 'show', 'deb-bios']);
    assert.match(text, /^boot +BIOS from linked clone of image debian-12, cloud-init seed$/m);
    assert.match(text, new RegExp(`^guest nic +eth0 ${bios.mac}: ${bios.ip.replace(/\./g, '\\.')}`, 'm'));
    assert.match(text, /^cloud-init +applied/m);
  });

  it('lets the real client in over SSH with the key cloud-init installed', async () => {
    for (const [vm, firmware] of [
      [bios, 'bios'],
      [uefi, 'uefi'],
    ] as const) {
      const r = await waitFor(`SSH into ${vm.name}`, 60_000, async () => {
        const x = await ssh(ipOf(vm), 'hostname; test -d /sys/firmware/efi && echo uefi || echo bios; cat /etc/ferry-test 2>/dev/null || echo no-file');
        return x.code === 0 ? x : undefined;
      }).catch(async (e: Error) => {
        throw new Error(
          `${e.message}; the guest says ${JSON.stringify((await show(vm.name)).guest)}; its console ends: ${c.consoleText(vm.name).slice(-3000)}`,
        );
      });
      const [hostname, booted, file] = r.stdout.trim().split('\n');
      assert.deepEqual([hostname, booted], [vm.name, firmware]);
      assert.equal(file, vm.name === 'deb-bios' ? 'made by cloud-init' : 'no-file', "the user's #cloud-config ran only where it was given");
    }
    const noKey = sshArgs(ipOf(bios), 'true').filter((a) => a !== '-i' && a !== key);
    const refused = await labRun(c.labbed!.client, [noKey[0]!, '-o', 'IdentitiesOnly=yes', '-o', 'PubkeyAuthentication=no', ...noKey.slice(1)]);
    assert.equal(refused.code, 255, 'without the key there is no way in');
  });

  it('live-migrates the Debian VM while an SSH session prints every 100 ms; the session lives and the kernel logs no error', async () => {
    const session = ssh(ipOf(bios), 'for i in $(seq 1 100); do echo tick $i; sleep 0.1; done');
    await new Promise((r) => setTimeout(r, 2_000));
    const moved = await c.ferryJson<{ report?: { downtimeMs?: number } }>(['vm', 'migrate', 'deb-bios', '--to', 'host-2']);
    assert.ok(moved, 'the migration answered');
    const r = await session;
    assert.equal(r.code, 0, `the SSH session ended with ${r.code}: ${r.stderr}`);
    const ticks = r.stdout.trim().split('\n');
    assert.deepEqual(
      ticks,
      Array.from({ length: 100 }, (_, i) => `tick ${i + 1}`),
    );
    assert.deepEqual(await whereQemuRuns('deb-bios'), [c.labbed!.hosts.find((h) => h.name === 'host-2')!.netns]);
    const errs = await ssh(ipOf(bios), 'journalctl -k -b -p err --no-pager -q');
    assert.equal(errs.code, 0, errs.stderr);
    assert.equal(errs.stdout.trim(), '', `the guest kernel logged errors: ${errs.stdout}`);
    // The UEFI VM moves too: its variables are on the shared volume both hosts open.
    await c.ferryOk(['vm', 'migrate', 'deb-uefi', '--to', 'host-1']);
    const after = await ssh(ipOf(uefi), 'echo alive');
    assert.equal(after.stdout.trim(), 'alive');
  });

  it('takes a quiesced backup (the agent freezes the file systems) that restores to a file system fsck finds clean', async () => {
    const writer = await ssh(ipOf(bios), 'sudo sh -c "dd if=/dev/urandom of=/var/tmp/busy bs=64k count=200 status=none; sync"');
    assert.equal(writer.code, 0, writer.stderr);
    const backup = await c.ferryJson<{ id: string; quiesced?: boolean; quiesceNote?: string; status: string }>(['backup', 'create', 'deb-bios']);
    assert.deepEqual([backup.status, backup.quiesced], ['completed', true], backup.quiesceNote);
    assert.match(backup.quiesceNote ?? '', /file systems? frozen/);
    // Thawed right after: the guest writes again.
    const write = await ssh(ipOf(bios), 'sudo touch /var/tmp/after-backup && echo ok');
    assert.equal(write.stdout.trim(), 'ok');
    const restored = await c.ferryJson<VmRecord>(['backup', 'restore', backup.id, '--as', 'deb-restored']);
    assert.equal(restored.boot?.firmware, 'bios', 'the restored VM boots like its source');
    const rootFs = path.join(work, 'root.ext4');
    // The root partition alone, sparse: a raw view at the partition's offset over the restored qcow2 (a 512-byte qemu-img dd took minutes).
    execFileSync('qemu-img', [
      'convert',
      '--image-opts',
      `driver=raw,offset=${ROOT_START_SECTOR * 512},file.driver=qcow2,file.file.filename=${restored.diskPath}`,
      '-O',
      'raw',
      rootFs,
    ]);
    const fsck = execFileSync('e2fsck', ['-f', '-n', rootFs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    assert.match(fsck, /root: \d+\/\d+ files/, 'e2fsck exits 0: the file system is clean');
    fs.rmSync(rootFs);
    await c.ferryOk(['vm', 'delete', 'deb-restored']);
  });

  it('shuts the guest down cleanly through its agent', async () => {
    const stopped = await c.ferryJson<{ state: string; shutdown?: { by: string; via?: string } }>(['vm', 'stop', 'deb-bios']);
    assert.deepEqual([stopped.state, stopped.shutdown?.by, stopped.shutdown?.via], ['stopped', 'guest', 'agent']);
    assert.match(c.consoleText('deb-bios'), /reboot: Power down/);
    const u = await c.ferryJson<{ shutdown?: { by: string; via?: string } }>(['vm', 'stop', 'deb-uefi']);
    assert.deepEqual([u.shutdown?.by, u.shutdown?.via], ['guest', 'agent']);
  });

  it('boots an installer ISO from its CD-ROM', async () => {
    // A GRUB rescue ISO (BIOS) holding the built-in guest's kernel: what an installer's first screen would be.
    const guest = findImage()!;
    const tree = path.join(c.layout.shared, 'iso-tree');
    fs.mkdirSync(path.join(tree, 'boot', 'grub'), { recursive: true });
    fs.copyFileSync(guest.kernelPath, path.join(tree, 'boot', 'vmlinuz'));
    fs.copyFileSync(guest.initrdPath, path.join(tree, 'boot', 'initrd.img'));
    const vmIp = '10.99.0.200/16';
    fs.writeFileSync(
      path.join(tree, 'boot', 'grub', 'grub.cfg'),
      `set timeout=0\nlinux /boot/vmlinuz console=ttyS0 ferry.name=from-cd ferry.ip=${vmIp} ferry.workload=idle\ninitrd /boot/initrd.img\nboot\n`,
    );
    const iso = path.join(c.layout.shared, 'installer.iso');
    execFileSync('grub-mkrescue', ['-o', iso, tree], { stdio: 'ignore' });
    await c.ferryOk(['image', 'import', iso, '--name', 'installer']);
    const vm = await c.ferryJson<VmRecord>(['vm', 'create', 'from-cd', '--iso', 'installer', '--disk', '1', '--memory', '256', '--node', 'host-1']);
    assert.deepEqual([vm.boot?.iso, vm.boot?.image], ['installer', undefined]);
    await c.ferryOk(['vm', 'start', 'from-cd']);
    await waitFor('the guest on the CD to boot', 120_000, () => /ferry-ready name=from-cd/.test(c.consoleText('from-cd')));
    const del = await c.ferry(['image', 'delete', 'installer']);
    assert.equal(del.code, 2);
    assert.equal(del.stderr.trim(), "error: image 'installer' is in use by VM from-cd (delete it first)");
    await c.ferryOk(['vm', 'stop', 'from-cd', '--force']);
    await c.ferryOk(['vm', 'delete', 'from-cd']);
    await c.ferryOk(['image', 'delete', 'installer']);
  });

  it('refuses bad input with one line and makes nothing', async () => {
    const disks = () => fs.readdirSync(c.layout.disks).sort();
    const before = [await c.ferryOk(['vm', 'list', '--json']), disks()];
    fs.writeFileSync(path.join(work, 'bad.yaml'), '#cloud-config\nusers: [\n  - name: x\n');
    fs.writeFileSync(path.join(work, 'not-config.yaml'), 'hostname: x\n');
    fs.writeFileSync(path.join(work, 'not-a-key.pub'), 'hello\n');
    const cases: [string[], RegExp][] = [
      [['vm', 'create', 'x1', '--image', 'nope'], /^error: unknown image 'nope' \(ferry image list shows them\)$/],
      [
        ['vm', 'create', 'x1', '--image', 'debian-12', '--cloud-init', path.join(work, 'bad.yaml')],
        /^error: .*bad\.yaml is not valid YAML at line \d+, column \d+: /,
      ],
      [
        ['vm', 'create', 'x1', '--image', 'debian-12', '--cloud-init', path.join(work, 'not-config.yaml')],
        /^error: .*not-config\.yaml is not a #cloud-config document/,
      ],
      [
        ['vm', 'create', 'x1', '--image', 'debian-12', '--ssh-key', path.join(work, 'not-a-key.pub')],
        /^error: .*not-a-key\.pub line 1 is not an SSH public key/,
      ],
      [['vm', 'create', 'x1', '--image', 'debian-12', '--disk', '1'], /^error: image 'debian-12' is 2\.0 GiB: --disk must be at least 2$/],
      [['vm', 'create', 'x1', '--image', 'debian-12', '--workload', 'tcp'], /^error: workloads run in Ferry's built-in guest/],
      [['vm', 'create', 'x1', '--firmware', 'uefi'], /^error: --firmware needs --image or --iso/],
      [['vm', 'create', 'x1', '--image', 'debian-12', '--firmware', 'coreboot'], /^error: --firmware must be bios or uefi, got 'coreboot'$/],
      [['image', 'delete', 'debian-12'], /^error: image 'debian-12' is in use by VMs deb-bios, deb-uefi \(delete them first\)$/],
      [['image', 'build', 'arch'], /^error: no image recipe 'arch' \(recipes: debian\)$/],
    ];
    for (const [args, pattern] of cases) {
      const r = await c.ferry(args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr.trim(), pattern);
    }
    assert.deepEqual([await c.ferryOk(['vm', 'list', '--json']), disks()], before, 'nothing was made');
    assert.ok(!fs.existsSync(path.join(c.layout.shared, 'seeds', 'x1.iso')));
  });
});
