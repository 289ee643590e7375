import assert from 'node:assert/strict';
import { gunzipSync, gzipSync } from 'node:zlib';
import { describe, it } from 'node:test';
import { keptRunning, parseConsole } from '../../src/guest/console.js';
import { CpioWriter } from '../../src/guest/cpio.js';
import { kernelCommandLine, qemuArgv } from '../../src/qemu/argv.js';
import { OFFLOADS, validateOffloads } from '../../src/domain/nic.js';
import { offloadsIn } from '../../src/qemu/nic.js';
import type { VmSpec } from '../../src/domain/records.js';

const spec: VmSpec = {
  name: 'web',
  memoryMiB: 256,
  cpus: 2,
  diskPath: '/s/disks/web.qcow2',
  mac: '52:54:00:99:00:01',
  ip: '10.99.0.1/16',
  workload: 'tcp-client:db',
  peerIp: '10.99.0.2',
  consoleLogPath: '/s/consoles/web.log',
};

describe('guest console parsing', () => {
  const text = [
    'ferry-boot name=web boot_id=b1 ip=10.99.0.1/16 mac=52:54:00:99:00:01 workload=tcp',
    'ferry-tick n=1 uptime=2.10 boot_id=b1',
    'ferry-tcp-client received=100 last=100 gaps=0 reconnects=0 connected=1',
    'ferry-tick n=2 uptime=3.11 boot_id=b1',
    'ferry-tcp-client gap expected=101 got=105',
    'ferry-tcp-client received=200 last=204 gaps=1 reconnects=0 connected=1',
    '',
  ].join('\r\n');

  it('reads boots, ticks and the latest tcp-client report', () => {
    const c = parseConsole(text);
    assert.equal(c.boots.length, 1);
    assert.deepEqual(
      c.ticks.map((t) => t.n),
      [1, 2],
    );
    assert.deepEqual(c.tcpClient, { received: 200, last: 204, gaps: 1, reconnects: 0, connected: true });
    assert.equal(c.tcpGaps.length, 1);
    assert.deepEqual(keptRunning(c), { ok: true });
  });

  it('notices a reboot and a counter that skipped', () => {
    // A tick still being written when the log is read is not a tick yet: cut inside its boot_id it would name another boot.
    const reading = parseConsole(`${text}ferry-tick n=99 uptime=99.0 boot_id=a`);
    assert.deepEqual([reading.ticks.length, keptRunning(reading)], [2, { ok: true }]);
    const rebooted = parseConsole(text + 'ferry-boot name=web boot_id=b2 ip=x mac=y workload=tcp\nferry-tick n=1 uptime=1.0 boot_id=b2\n');
    assert.equal(keptRunning(rebooted).ok, false);
    const skipped = parseConsole(
      'ferry-boot name=w boot_id=b ip=x mac=y workload=idle\nferry-tick n=1 uptime=1 boot_id=b\nferry-tick n=3 uptime=3 boot_id=b\n',
    );
    assert.match(keptRunning(skipped).reason!, /tick 1 followed by 3/);
    assert.equal(keptRunning(skipped, { allowMissedLines: true }).ok, true, 'uptime covers the missing tick');
    const restarted = parseConsole(
      'ferry-boot name=w boot_id=b ip=x mac=y workload=idle\nferry-tick n=5 uptime=5 boot_id=b\nferry-tick n=9 uptime=6 boot_id=b\n',
    );
    assert.equal(keptRunning(restarted, { allowMissedLines: true }).ok, false, 'a counter that jumps faster than time is not a missed line');
  });
});

describe('QEMU command line', () => {
  it('passes identity and workload on the kernel command line', () => {
    assert.equal(
      kernelCommandLine(spec),
      'console=ttyS0 quiet panic=-1 cryptomgr.notests ferry.name=web ferry.ip=10.99.0.1/16 ferry.workload=tcp-client:db ferry.peer=10.99.0.2',
    );
  });

  it('builds the same device model for source and target, with -incoming only on the target', () => {
    const base = {
      spec,
      accelerator: 'tcg' as const,
      cpuModel: 'qemu64',
      kernelPath: '/k',
      initrdPath: '/i',
      qmpSocket: '/r/web.qmp',
      serialSocket: '/r/web.serial',
      nic: { kind: 'stream' as const, socket: '/sw/node-1.sock' },
      pidFile: '/r/web.pid',
      incoming: false,
    };
    const src = qemuArgv(base);
    const dst = qemuArgv({ ...base, incoming: true });
    assert.deepEqual(dst.slice(0, src.length), src);
    assert.deepEqual(dst.slice(src.length), ['-incoming', 'defer']);
    assert.ok(src.includes('stream,id=net0,server=off,reconnect-ms=1000,addr.type=unix,addr.path=/sw/node-1.sock'));
    assert.ok(
      src.includes(`virtio-net-pci,id=nic0,netdev=net0,mac=52:54:00:99:00:01,romfile=,${OFFLOADS.map((o) => `${o}=on`).join(',')}`),
      'every offload spelled out: a target gets exactly the same device',
    );
    assert.ok(src.includes('pc,accel=tcg'));
  });

  it('boots an own-OS VM through its firmware: OVMF with its own variables, the ISO first, the seed, the agent channel, VNC on a socket', () => {
    const launch = {
      spec: {
        ...spec,
        boot: { firmware: 'uefi' as const, isoFile: '/v/images/inst.iso', efiVarsPath: '/v/disks/web.vars.fd', seedPath: '/v/seeds/web.iso' },
      },
      accelerator: 'tcg' as const,
      cpuModel: 'qemu64',
      kernelPath: '/k',
      initrdPath: '/i',
      qmpSocket: '/r/web.qmp',
      serialSocket: '/r/web.serial',
      nic: { kind: 'none' as const },
      pidFile: '/r/web.pid',
      qgaSocket: '/r/web.qga',
      vncSocket: '/r/web.vnc',
      incoming: false,
    };
    const argv = qemuArgv(launch);
    const after = (flag: string) => argv.filter((_, i) => argv[i - 1] === flag);
    for (const f of ['-kernel', '-initrd', '-append', '-no-reboot']) assert.ok(!argv.includes(f), `${f}: the guest boots its own bootloader, and reboots`);
    assert.deepEqual(after('-machine'), ['pc,accel=tcg,pflash0=fw-code,pflash1=fw-vars']);
    assert.ok(after('-blockdev').includes('driver=file,filename=/usr/share/OVMF/OVMF_CODE_4M.fd,node-name=fw-code-file,read-only=on'));
    assert.ok(after('-blockdev').includes('driver=file,filename=/v/disks/web.vars.fd,node-name=fw-vars-file'), 'the variables are writable');
    assert.deepEqual(
      after('-device').filter((d) => /bootindex/.test(d)),
      ['ide-cd,drive=cd0,id=cd0-dev,bus=ide.1,unit=0,bootindex=0', 'virtio-blk-pci,drive=disk0,id=disk0-dev,bootindex=1'],
      'the ISO boots first, then the disk',
    );
    assert.ok(after('-device').includes('virtio-blk-pci,drive=seed0,id=seed0-dev'));
    assert.ok(after('-device').includes('virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0'));
    assert.deepEqual([after('-vga'), after('-vnc')], [['std'], ['unix:/r/web.vnc']]);
    // The built-in guest: its kernel directly, no screen, no agent.
    const builtIn = qemuArgv({ ...launch, spec, qgaSocket: undefined, vncSocket: undefined } as never);
    assert.ok(builtIn.includes('-kernel') && builtIn.includes('-no-reboot') && !builtIn.includes('-vnc'));
    assert.equal(builtIn[builtIn.indexOf('-vga') + 1], 'none');
  });

  it('spells the NIC offloads the VM asked for, and attaches the NIC to a tap or to nothing', () => {
    const base = {
      spec: { ...spec, nicOffloads: ['gso'] },
      accelerator: 'tcg' as const,
      cpuModel: 'qemu64',
      kernelPath: '/k',
      initrdPath: '/i',
      qmpSocket: '/q',
      serialSocket: '/s',
      nic: { kind: 'tap' as const, ifname: 'fyabcdv1234' },
      pidFile: '/p',
      incoming: false,
    };
    const argv = qemuArgv(base);
    assert.ok(argv.includes('tap,id=net0,ifname=fyabcdv1234,script=no,downscript=no,vnet_hdr=on'));
    const device = argv.find((a) => a.startsWith('virtio-net-pci'))!;
    assert.match(device, /,csum=off,guest_csum=off,gso=on,host_tso4=off,/);
    assert.ok(qemuArgv({ ...base, nic: { kind: 'none' } }).includes('hubport,id=net0,hubid=0'));
  });

  it('reads offloads from QEMU feature names and validates requests', () => {
    assert.deepEqual(
      offloadsIn([
        'VIRTIO_NET_F_GSO: Handling GSO-type packets supported',
        'VIRTIO_NET_F_HOST_TSO4: Device can receive TSOv4',
        'VIRTIO_NET_F_MAC: Device has given MAC address',
      ]),
      ['gso', 'host_tso4'],
    );
    assert.deepEqual(validateOffloads('guest_csum,csum'), ['csum', 'guest_csum']);
    assert.deepEqual(validateOffloads('none'), []);
    assert.throws(() => validateOffloads('csum,tso'), /unknown NIC offload tso \(known: csum, /);
  });
});

describe('cpio writer', () => {
  it('writes newc entries the kernel can unpack: headers, names, data, trailer, 4-byte alignment', () => {
    const w = new CpioWriter();
    w.dir('bin');
    w.file('init', Buffer.from('#!/bin/sh\n'), 0o755);
    const out = gunzipSync(gzipSync(w.finish()));
    assert.equal(out.subarray(0, 6).toString(), '070701');
    assert.equal(out.length % 4, 0);
    const text = out.toString('latin1');
    assert.ok(text.includes('bin\0'));
    assert.ok(text.includes('init\0'));
    assert.ok(text.includes('#!/bin/sh\n'));
    assert.ok(text.includes('TRAILER!!!\0'));
    const initHeader = text.indexOf('070701', text.indexOf('bin\0'));
    assert.equal(parseInt(text.slice(initHeader + 14, initHeader + 22), 16), 0o100755);
  });
});
