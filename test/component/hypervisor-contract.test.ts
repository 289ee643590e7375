/** The Hypervisor contract against the strict fake (the QEMU run is an integration test). */
import { ScaledClock } from '../../src/domain/clock.js';
import type { VmSpec } from '../../src/domain/records.js';
import { FakeHypervisor, FakeWorld } from '../../src/testing/fake-hypervisor.js';
import { hypervisorContract } from '../../src/testing/hypervisor-contract.js';

hypervisorContract('strict fake', async () => {
  const world = new FakeWorld();
  const clock = new ScaledClock(50);
  const spec = async (name: string): Promise<VmSpec> => {
    const diskPath = `/shared/disks/${name}.qcow2`;
    world.files.add(diskPath);
    return {
      name,
      memoryMiB: 128,
      cpus: 1,
      diskPath,
      mac: '52:54:00:99:00:01',
      ip: '10.99.0.1/16',
      workload: 'idle',
      consoleLogPath: `/shared/consoles/${name}.log`,
    };
  };
  return {
    a: new FakeHypervisor('a', world),
    b: new FakeHypervisor('b', world),
    spec,
    address: '127.0.0.1',
    file: (n) => `/shared/states/${n}`,
    cpuModel: 'qemu64',
    until: async (_what, check) => {
      while (!(await check())) await clock.sleep(10);
    },
    dispose: async () => {
      if (world.violations.length) throw new Error(`violations: ${world.violations.join('; ')}`);
    },
  };
});
