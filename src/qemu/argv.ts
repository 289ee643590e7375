/**
 * VmSpec → QEMU command line. Pure: the same spec gives the same argv on the
 * source and on a migration target, which is what makes the target's device
 * model match the source's (a mismatch fails the migration's device load).
 */
import type { Accelerator, VmSpec } from '../domain/records.js';
import { NIC_ID, type NicAttachment, netdevArg, offloadProps } from './nic.js';

export interface QemuLaunch {
  spec: VmSpec;
  accelerator: Accelerator;
  cpuModel: string;
  kernelPath: string;
  initrdPath: string;
  qmpSocket: string;
  serialSocket: string;
  /** Where the NIC's frames go: a switch socket, a tap on a bridge, or nowhere. */
  nic: NicAttachment;
  pidFile: string;
  /** Start paused, waiting for migrate-incoming (a migration target). */
  incoming: boolean;
}

export function kernelCommandLine(spec: VmSpec): string {
  const parts = ['console=ttyS0', 'quiet', 'panic=-1', `ferry.name=${spec.name}`, `ferry.ip=${spec.ip}`, `ferry.workload=${spec.workload}`];
  if (spec.peerIp) parts.push(`ferry.peer=${spec.peerIp}`);
  return parts.join(' ');
}

export function qemuArgv(l: QemuLaunch): string[] {
  const s = l.spec;
  const argv = [
    '-name',
    `${s.name},debug-threads=on`,
    '-machine',
    `pc,accel=${l.accelerator}`,
    '-cpu',
    l.cpuModel,
    '-m',
    `${s.memoryMiB}`,
    '-smp',
    `${s.cpus}`,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-vga',
    'none',
    '-no-reboot',
    '-kernel',
    l.kernelPath,
    '-initrd',
    l.initrdPath,
    '-append',
    kernelCommandLine(s),
    '-chardev',
    `socket,id=qmp,path=${l.qmpSocket},server=on,wait=off`,
    '-mon',
    'chardev=qmp,mode=control',
    '-chardev',
    `socket,id=serial0,path=${l.serialSocket},server=on,wait=off`,
    '-serial',
    'chardev:serial0',
    '-netdev',
    netdevArg(l.nic),
    '-device',
    `virtio-net-pci,id=${NIC_ID},netdev=net0,mac=${s.mac},romfile=,${offloadProps(s.nicOffloads)}`,
    '-blockdev',
    `driver=file,filename=${s.diskPath},node-name=disk0-file,cache.direct=off,aio=threads`,
    '-blockdev',
    'driver=qcow2,file=disk0-file,node-name=disk0',
    '-device',
    'virtio-blk-pci,drive=disk0,id=disk0-dev',
    '-pidfile',
    l.pidFile,
  ];
  if (l.incoming) argv.push('-incoming', 'defer');
  return argv;
}
