/**
 * Which accelerator actually works here. /dev/kvm existing is not enough:
 * under nested virtualisation KVM can hang at boot. So we boot the guest
 * kernel with no root under KVM and wait for its panic (or exit) for a few
 * seconds; no answer means TCG. The answer is cached per host boot.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Accelerator } from '../domain/records.js';

export interface AcceleratorChoice {
  accelerator: Accelerator;
  reason: string;
}

const PROBE_TIMEOUT_MS = 6_000;

export async function detectAccelerator(kernelPath: string, cacheDir: string): Promise<AcceleratorChoice> {
  const forced = process.env.FERRY_ACCEL;
  if (forced === 'tcg' || forced === 'kvm') return { accelerator: forced, reason: `FERRY_ACCEL=${forced}` };
  if (!fs.existsSync('/dev/kvm')) return { accelerator: 'tcg', reason: '/dev/kvm does not exist' };
  const bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const cacheFile = path.join(cacheDir, `accel-${bootId}.json`);
  try {
    return JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as AcceleratorChoice;
  } catch {
    /* not probed since this boot */
  }
  const choice = await probeKvm(kernelPath);
  fs.mkdirSync(cacheDir, { recursive: true });
  fs.writeFileSync(cacheFile, JSON.stringify(choice));
  return choice;
}

function probeKvm(kernelPath: string): Promise<AcceleratorChoice> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(
      'qemu-system-x86_64',
      [
        '-machine',
        'pc,accel=kvm',
        '-cpu',
        'host',
        '-m',
        '128',
        '-nodefaults',
        '-no-user-config',
        '-display',
        'none',
        '-no-reboot',
        '-serial',
        'stdio',
        '-kernel',
        kernelPath,
        '-append',
        'console=ttyS0 panic=-1',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let done = false;
    const finish = (choice: AcceleratorChoice) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(choice);
    };
    const timer = setTimeout(
      () => finish({ accelerator: 'tcg', reason: `KVM probe boot gave no sign of life within ${PROBE_TIMEOUT_MS} ms (nested KVM hangs); using TCG` }),
      PROBE_TIMEOUT_MS,
    );
    const onOutput = (chunk: Buffer) => {
      out += chunk.toString('utf8');
      if (/Kernel panic|VFS: Unable to mount root/.test(out)) {
        finish({ accelerator: 'kvm', reason: `KVM probe boot reached the kernel in ${Date.now() - started} ms` });
      }
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.on('error', (e) => finish({ accelerator: 'tcg', reason: `cannot run QEMU with KVM: ${e.message}` }));
    child.on('exit', (code) => {
      if (/Kernel panic|VFS: Unable to mount root/.test(out)) {
        finish({ accelerator: 'kvm', reason: `KVM probe boot reached the kernel in ${Date.now() - started} ms` });
      } else {
        const line = out.trim().split('\n').pop() ?? '';
        finish({ accelerator: 'tcg', reason: `KVM probe exited with ${code}${line ? `: ${line}` : ''}; using TCG` });
      }
    });
  });
}
