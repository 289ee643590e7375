/**
 * CPU identity from QEMU itself: a short-lived QEMU (`-machine none`) answers
 * query-cpu-model-expansion for a model, which lists every feature the model
 * turns on and its vendor. Nothing here is a hand-written feature table.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import type { Accelerator, CpuIdentity } from '../domain/records.js';
import type { QmpCommands } from './qmp/types.js';
import { ErrorCode, FerryError } from '../domain/errors.js';
import { qmpBatch } from './qmp-batch.js';

/** Property names that are settings, not CPUID feature flags. */
const NON_FEATURE_PROPS = new Set([
  'vendor',
  'model-id',
  'family',
  'model',
  'stepping',
  'level',
  'xlevel',
  'xlevel2',
  'min-level',
  'min-xlevel',
  'min-xlevel2',
  'full-cpuid-auto-level',
  'phys-bits',
  'host-phys-bits',
  'host-phys-bits-limit',
  'tsc-frequency',
  'apic-id',
  'core-id',
  'die-id',
  'socket-id',
  'thread-id',
  'node-id',
  'hv-vendor-id',
  'hv-spinlocks',
  'hv-version-id-build',
  'hv-version-id-major',
  'hv-version-id-minor',
  'hv-version-id-spack',
  'hv-version-id-sbranch',
  'hv-version-id-snumber',
  'legacy-cache',
  'x-intel-pt-auto-level',
  'check',
  'enforce',
  'migratable',
  'lbr-fmt',
  'ucode-rev',
  'kvm-no-smi-migration',
  'pmu',
  'l3-cache',
  'start-powered-off',
  'fill-mtrr-mask',
  'cpuid-0xb',
  'x-force-features',
  'kvm',
  'lmce',
  'hotplugged',
  'realized',
  'hotpluggable',
  'unavailable-features',
  'filtered-features',
  'crash-information',
  'feature-words',
  'tcg-cpuid',
  'type',
  'parent_bus',
  'x-l1-cache-per-thread',
  'avx512-vp2intersect',
]);

export interface CpuModelExpansion {
  vendor: string;
  features: string[];
}

/** A -cpu value (`Westmere` or `Westmere,aes=off`) as QMP's CpuModelInfo. */
export function modelArgument(value: string): { name: string; props?: Record<string, boolean> } {
  const [name, ...settings] = value.split(',');
  if (settings.length === 0) return { name: name! };
  const props: Record<string, boolean> = {};
  for (const s of settings) {
    const [key, v] = s.split('=');
    props[key!] = v !== 'off';
  }
  return { name: name!, props };
}

/** Runs QEMU once and asks it to expand each model (a -cpu value, optionally with features on or off). */
export async function expandCpuModels(models: string[], accelerator: Accelerator): Promise<Map<string, CpuModelExpansion>> {
  const answers = await qmpBatch(
    ['-machine', `none,accel=${accelerator}`],
    models.map((name) => ({ execute: 'query-cpu-model-expansion', arguments: { type: 'full', model: modelArgument(name) } })),
    'expand CPU models',
  );
  const result = new Map<string, CpuModelExpansion>();
  models.forEach((name, i) => {
    const msg = answers.get(i);
    if (!msg) throw new FerryError(ErrorCode.QmpError, `QEMU did not expand CPU model '${name}'`);
    if (msg.error) throw new FerryError(ErrorCode.QmpError, `QEMU cannot expand CPU model '${name}': ${msg.error.desc}`);
    const props = (msg.return as QmpCommands['query-cpu-model-expansion']['ret']).model.props ?? {};
    const features = Object.entries(props)
      .filter(([k, v]) => v === true && !NON_FEATURE_PROPS.has(k) && !k.includes('_') && !/^(vmx|hv|kvm|x)-/.test(k))
      .map(([k]) => k)
      .sort();
    result.set(name, { vendor: String(props.vendor ?? 'unknown'), features });
  });
  return result;
}

/** The host CPU's vendor and model name as the kernel reports them. */
export function hostCpu(): { vendor: string; modelName: string } {
  const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
  return {
    vendor: /vendor_id\s*:\s*(.+)/.exec(info)?.[1]?.trim() ?? 'unknown',
    modelName: /model name\s*:\s*(.+)/.exec(info)?.[1]?.trim() ?? 'unknown',
  };
}

export async function cpuIdentity(accelerator: Accelerator, model: string): Promise<CpuIdentity> {
  const expansion = (await expandCpuModels([model], accelerator)).get(model)!;
  return { vendor: expansion.vendor, model, features: expansion.features };
}

export async function qemuVersion(): Promise<string> {
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('qemu-system-x86_64', ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let s = '';
    child.stdout.on('data', (c: Buffer) => (s += c.toString()));
    child.on('error', reject);
    child.on('exit', () => resolve(s));
  });
  return /version (\S+)/.exec(out)?.[1] ?? 'unknown';
}
