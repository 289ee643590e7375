/**
 * VMs that boot their own OS, over the strict fakes: a linked clone of a
 * library image (or a full copy), UEFI variables of their own, a cloud-init
 * seed with the VM's hostname, key and address; the guest agent's report and
 * clean shutdown; an image in use cannot be deleted; every refusal makes
 * nothing.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { isFerryError } from '../../src/domain/errors.js';
import { ComponentCluster } from '../../src/testing/component.js';
import type { VmCreate } from '../../src/controller/lifecycle.js';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ferry@test';

describe('VMs with their own OS', () => {
  let c: ComponentCluster;
  before(async () => {
    c = await ComponentCluster.start({ nodes: 2 });
    const incoming = path.join(c.layout.shared, 'incoming');
    c.world.files.add(path.join(incoming, 'deb.raw'));
    c.volume.probes.set(path.join(incoming, 'deb.raw'), { format: 'raw', virtualSizeBytes: 2.5 * 2 ** 30, head: mbr() });
    c.world.files.add(path.join(incoming, 'inst.iso'));
    c.volume.probes.set(path.join(incoming, 'inst.iso'), { format: 'raw', virtualSizeBytes: 1 << 20, head: iso() });
    await c.runtime.services.images.import({ file: path.join(incoming, 'deb.raw'), name: 'deb' });
    await c.runtime.services.images.import({ file: path.join(incoming, 'inst.iso'), name: 'inst' });
  });
  after(() => c?.stop());
  const base = { memoryMiB: 256, cpus: 1, workload: 'idle' };

  it('makes a linked clone at least the size of its image, with UEFI variables and a cloud-init seed', async () => {
    const s = c.runtime.services;
    const vm = await s.lifecycle.create({
      ...base,
      name: 'web',
      image: 'deb',
      firmware: 'uefi',
      cloudInit: { userData: '#cloud-config\npackages: [nginx]\n', sshKeys: [KEY] },
    });
    assert.equal(vm.diskGiB, 3, 'a 2.5 GiB image gives a 3 GiB disk');
    assert.deepEqual(vm.boot, {
      firmware: 'uefi',
      image: 'deb',
      linked: true,
      efiVarsPath: c.layout.efiVars('web'),
      seedPath: c.layout.seed('web'),
    });
    for (const f of [vm.diskPath, vm.boot!.efiVarsPath!, vm.boot!.seedPath!]) assert.ok(c.world.files.has(f), f);
    const seed = c.volume.isos.get(vm.boot!.seedPath!)!;
    assert.equal(seed.label, 'cidata');
    assert.deepEqual(parse(seed.files['meta-data']!), { 'instance-id': `ferry-web-${vm.createdAtMs}`, 'local-hostname': 'web' });
    assert.match(seed.files['user-data']!, /^#cloud-config\n/);
    assert.deepEqual(parse(seed.files['user-data']!), { packages: ['nginx'], ssh_authorized_keys: [KEY] });
    assert.deepEqual(parse(seed.files['network-config']!), {
      version: 1,
      config: [{ type: 'physical', name: 'eth0', mac_address: vm.mac, subnets: [{ type: 'static', address: vm.ip }] }],
    });
    const full = await s.lifecycle.create({ ...base, name: 'copy', image: 'deb', fullCopy: true, diskGiB: 4 });
    assert.deepEqual([full.boot, full.diskGiB], [{ firmware: 'bios', image: 'deb' }, 4]);
  });

  it('starts it with its boot in the spec; the agent reports the guest and shuts it down', async () => {
    const s = c.runtime.services;
    await s.lifecycle.start('web', { node: 'node-1' });
    const spec = c.hypervisor('node-1').spec('web');
    assert.equal(spec.boot?.firmware, 'uefi');
    const report = await s.guestOf('web');
    assert.ok(report.agent);
    assert.equal(report.hostname, 'web');
    const stopped = await s.lifecycle.stop('web', { timeoutMs: 5_000 });
    assert.deepEqual([stopped.shutdown?.by, stopped.shutdown?.via], ['guest', 'agent']);
  });

  it('refuses to delete an image a linked clone or an attached ISO needs; a full copy does not hold it', async () => {
    const s = c.runtime.services;
    await s.lifecycle.create({ ...base, name: 'installer', iso: 'inst' });
    await assert.rejects(
      s.images.delete('deb'),
      (e: unknown) => isFerryError(e, 'invalid-state') && /in use by VM web \(delete it first\)$/.test((e as Error).message),
    );
    await assert.rejects(s.images.delete('inst'), /in use by VM installer/);
    await s.lifecycle.delete('installer');
    await s.images.delete('inst');
    await s.lifecycle.delete('web');
    assert.ok(!c.world.files.has(c.layout.efiVars('web')) && !c.world.files.has(c.layout.seed('web')), 'the variables and the seed go with the VM');
    await s.images.delete('deb');
    assert.ok((await s.vms.find('copy'))?.boot?.image === 'deb', 'the full copy stays, its disk its own');
  });

  it('refuses bad boots with one line and makes nothing', async () => {
    const s = c.runtime.services;
    const incoming = path.join(c.layout.shared, 'incoming', 'deb2.raw');
    c.world.files.add(incoming);
    c.volume.probes.set(incoming, { format: 'raw', virtualSizeBytes: 2 ** 30, head: mbr() });
    await s.images.import({ file: incoming, name: 'deb2' });
    const files = new Set(c.world.files);
    const vms = (await s.vms.list()).map((v) => v.name);
    const cases: [Partial<VmCreate>, RegExp][] = [
      [{ image: 'nope' }, /^unknown image 'nope'/],
      [{ iso: 'deb2' }, /^image 'deb2' is a raw disk, not an ISO: use --image$/],
      [{ firmware: 'uefi' }, /^--firmware needs --image or --iso/],
      [{ fullCopy: true }, /^--full-copy needs --image$/],
      [{ cloudInit: { sshKeys: [KEY] } }, /^--cloud-init and --ssh-key need --image/],
      [{ image: 'deb2', workload: 'tcp' }, /^workloads run in Ferry's built-in guest/],
      [{ image: 'deb2', cloudInit: { userData: '#cloud-config\nusers: [\n' } }, /^the cloud-init user data is not valid YAML at line \d+, column \d+: /],
      [{ image: 'deb2', cloudInit: { userData: '#cloud-config\n- a\n- b\n' } }, /^the cloud-init user data must be a YAML mapping/],
      [{ image: 'deb2', cloudInit: { userData: '#!/bin/sh\necho hi\n' } }, /is not a #cloud-config document/],
      [{ image: 'deb2', cloudInit: { sshKeys: ['not a key'] } }, /^the SSH keys line 1 is not an SSH public key/],
    ];
    for (const [v, pattern] of cases) {
      await assert.rejects(
        s.lifecycle.create({ ...base, name: 'bad', ...v }),
        (e: unknown) => isFerryError(e, 'invalid-argument') && pattern.test((e as Error).message),
        JSON.stringify(v),
      );
    }
    assert.deepEqual(new Set(c.world.files), files, 'no file was made');
    assert.deepEqual(
      (await s.vms.list()).map((v) => v.name),
      vms,
      'no VM was made',
    );
  });
});

function mbr(): Uint8Array {
  const head = new Uint8Array(0x8006);
  head[510] = 0x55;
  head[511] = 0xaa;
  return head;
}

function iso(): Uint8Array {
  const head = new Uint8Array(0x8006);
  head.set(Buffer.from('CD001'), 0x8001);
  return head;
}
