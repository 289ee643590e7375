/** The Hypervisor contract against QEMU: two hosts' hypervisors on this machine, the built-in guest. */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { systemClock } from '../../src/domain/clock.js';
import type { VmSpec } from '../../src/domain/records.js';
import { cacheDir, ensureImage } from '../../src/guest/image.js';
import { QemuHypervisor } from '../../src/qemu/hypervisor.js';
import { hypervisorContract } from '../../src/testing/hypervisor-contract.js';

hypervisorContract('QEMU', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-hv-'));
  const image = await ensureImage();
  const hosts = ['a', 'b'].map((n) => {
    const runDir = path.join(dir, 'run', n);
    fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
    return new QemuHypervisor({ runDir, node: n, image, cacheDir: cacheDir() });
  });
  const facts = await hosts[0]!.probeHost({ nicBackend: 'stream' });
  await hosts[1]!.probeHost({ nicBackend: 'stream' });
  fs.mkdirSync(path.join(dir, 'shared'), { recursive: true });
  const spec = async (name: string): Promise<VmSpec> => {
    const diskPath = path.join(dir, 'shared', `${name}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', diskPath, '64M']);
    return {
      name,
      memoryMiB: 128,
      cpus: 1,
      diskPath,
      mac: '52:54:00:99:00:01',
      ip: '10.99.0.1/16',
      workload: 'idle',
      consoleLogPath: path.join(dir, 'shared', `${name}.log`),
    };
  };
  return {
    a: hosts[0]!,
    b: hosts[1]!,
    spec,
    address: '127.0.0.1',
    file: (n) => path.join(dir, 'shared', n),
    cpuModel: facts.cpu.model,
    until: async (what, check) => {
      const deadline = systemClock.nowMs() + 60_000;
      while (!(await check())) {
        if (systemClock.nowMs() > deadline) throw new Error(`timed out waiting for ${what}`);
        await systemClock.sleep(50);
      }
    },
    dispose: async () => {
      for (const hv of hosts) for (const g of await hv.list()) await hv.kill(g.name);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
});
