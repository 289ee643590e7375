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
  /** The guest agent's channel (a VM with its own OS). */
  qgaSocket?: string;
  /** The graphical console: QEMU's VNC server on a local socket only (a VM with its own OS). */
  vncSocket?: string;
  /** Start paused, waiting for migrate-incoming (a migration target). */
  incoming: boolean;
}

export function kernelCommandLine(spec: VmSpec): string {
  // cryptomgr.notests: the kernel's crypto self-tests are a tenth of the built-in guest's boot under TCG, and it uses no kernel crypto.
  const parts = [
    'console=ttyS0',
    'quiet',
    'panic=-1',
    'cryptomgr.notests',
    `ferry.name=${spec.name}`,
    `ferry.ip=${spec.ip}`,
    `ferry.workload=${spec.workload}`,
  ];
  if (spec.peerIp) parts.push(`ferry.peer=${spec.peerIp}`);
  return parts.join(' ');
}

/** OVMF from Debian's ovmf package: the firmware's code (read-only, shared) and the template of a VM's variables. */
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS_TEMPLATE = '/usr/share/OVMF/OVMF_VARS_4M.fd';
/** The guest agent's port name, which qemu-guest-agent looks for. */
export const QGA_PORT = 'org.qemu.guest_agent.0';

/** A read-only raw image as a CD-ROM on the IDE bus. */
function cdrom(id: string, file: string, unit: number, bootindex?: number): string[] {
  return [
    '-blockdev',
    `driver=file,filename=${file},node-name=${id}-file,read-only=on`,
    '-blockdev',
    `driver=raw,file=${id}-file,node-name=${id},read-only=on`,
    '-device',
    `ide-cd,drive=${id},id=${id}-dev,bus=ide.${unit >> 1},unit=${unit & 1}${bootindex === undefined ? '' : `,bootindex=${bootindex}`}`,
  ];
}

/** How the guest boots: the built-in guest's kernel directly, or its own bootloader through the firmware (with its CD-ROMs). */
function bootArgv(l: QemuLaunch): { machine: string[]; devices: string[]; diskBoot: string } {
  const b = l.spec.boot;
  if (!b) return { machine: [], devices: ['-no-reboot', '-kernel', l.kernelPath, '-initrd', l.initrdPath, '-append', kernelCommandLine(l.spec)], diskBoot: '' };
  const machine: string[] = [];
  const devices: string[] = [];
  if (b.firmware === 'uefi') {
    if (!b.efiVarsPath) throw new Error(`VM '${l.spec.name}' boots UEFI but has no variables file`);
    machine.push('pflash0=fw-code', 'pflash1=fw-vars');
    devices.push(
      '-blockdev',
      `driver=file,filename=${OVMF_CODE},node-name=fw-code-file,read-only=on`,
      '-blockdev',
      'driver=raw,file=fw-code-file,node-name=fw-code,read-only=on',
      '-blockdev',
      `driver=file,filename=${b.efiVarsPath},node-name=fw-vars-file`,
      '-blockdev',
      'driver=raw,file=fw-vars-file,node-name=fw-vars',
    );
  }
  if (b.isoFile) devices.push(...cdrom('cd0', b.isoFile, 2, 0));
  // The seed as a read-only virtio disk: its driver is in every cloud image's initramfs, so cloud-init's
  // first stage sees it at once (an IDE CD-ROM may still be probing then, and the seed is missed).
  if (b.seedPath)
    devices.push(
      '-blockdev',
      `driver=file,filename=${b.seedPath},node-name=seed0-file,read-only=on`,
      '-blockdev',
      'driver=raw,file=seed0-file,node-name=seed0,read-only=on',
      '-device',
      'virtio-blk-pci,drive=seed0,id=seed0-dev',
    );
  if (l.qgaSocket)
    devices.push(
      '-chardev',
      `socket,id=qga0,path=${l.qgaSocket},server=on,wait=off`,
      '-device',
      'virtio-serial-pci,id=vser0',
      '-device',
      `virtserialport,bus=vser0.0,chardev=qga0,name=${QGA_PORT}`,
    );
  return { machine, devices, diskBoot: `,bootindex=${b.isoFile ? 1 : 0}` };
}

export function qemuArgv(l: QemuLaunch): string[] {
  const s = l.spec;
  const boot = bootArgv(l);
  const argv = [
    '-name',
    `${s.name},debug-threads=on`,
    '-machine',
    ['pc', `accel=${l.accelerator}`, ...boot.machine].join(','),
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
    s.boot ? 'std' : 'none',
    ...(l.vncSocket ? ['-vnc', `unix:${l.vncSocket}`] : []),
    ...boot.devices,
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
    `virtio-blk-pci,drive=disk0,id=disk0-dev${boot.diskBoot}`,
    '-pidfile',
    l.pidFile,
  ];
  if (l.incoming) argv.push('-incoming', 'defer');
  return argv;
}
