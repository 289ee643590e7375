/**
 * The API's request schemas: defaults, the limits from the domain, and one
 * line in Ferry's words for each kind of mistake.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { issueMessage } from '../../src/api/http.js';
import {
  BackupScheduleBody,
  MigrateBody,
  NetworkSetBody,
  PolicyOrName,
  SETTING_RULES,
  SettingName,
  TuningOverrides,
  VmCreateBody,
  VmName,
  type z,
} from '../../src/api/schemas.js';
import { QEMU_DEFAULTS_POLICY } from '../../src/domain/policy.js';
import { LIMITS } from '../../src/domain/records.js';

/** The one line a request with `value` gets. */
function refusal(schema: z.ZodType, value: unknown): string {
  const r = schema.safeParse(value);
  assert.equal(r.success, false, `expected ${JSON.stringify(value)} to be refused`);
  return issueMessage(r.error!.issues);
}
const ok = <S extends z.ZodType>(schema: S, value: unknown): z.output<S> => {
  const r = schema.safeParse(value);
  assert.ok(r.success, r.success ? '' : issueMessage(r.error.issues));
  return r.data as z.output<S>;
};

describe('VM creation', () => {
  it('fills defaults and takes compat as a boolean or on/off', () => {
    // The disk's size is left to the controller: 1 GiB, or the size of the image the VM is made from.
    assert.deepEqual(ok(VmCreateBody, { name: 'web' }), { name: 'web', memoryMiB: 256, cpus: 1, workload: 'idle' });
    assert.match(refusal(VmCreateBody, { name: 'web', image: 'debian', firmware: 'efi' }), /^--firmware must be bios or uefi, got 'efi'$/);
    assert.equal(ok(VmCreateBody, { name: 'web', compat: 'on' }).compat, true);
    assert.equal(ok(VmCreateBody, { name: 'web', compat: false }).compat, false);
    assert.match(refusal(VmCreateBody, { name: 'web', compat: 'yes' }), /^compat must be on or off, got 'yes'$/);
  });

  it('refuses malformed names with the name in the message', () => {
    for (const bad of ['', 'Web', '1vm', 'a_b', 'a'.repeat(40), '-x', 'x-', '../etc', '%ZZ']) {
      assert.match(refusal(VmName, bad), new RegExp(`^VM name '${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}' is malformed`));
    }
    assert.equal(ok(VmName, 'a'), 'a');
  });

  it('refuses memory and CPUs out of range, naming the limits from the domain', () => {
    assert.equal(refusal(VmCreateBody, { name: 'a', memoryMiB: 32 }), "memory (MiB) must be a whole number from 64 to 65536, got '32'");
    assert.equal(
      refusal(VmCreateBody, { name: 'a', memoryMiB: LIMITS.memoryMiB.max + 1 }),
      `memory (MiB) must be a whole number from 64 to 65536, got '${LIMITS.memoryMiB.max + 1}'`,
    );
    assert.equal(ok(VmCreateBody, { name: 'a', memoryMiB: LIMITS.memoryMiB.max }).memoryMiB, LIMITS.memoryMiB.max);
    assert.match(refusal(VmCreateBody, { name: 'a', memoryMiB: 100.5 }), /^memory/);
    assert.match(refusal(VmCreateBody, { name: 'a', cpus: 0 }), /^CPUs must be a whole number from 1 to 64/);
    assert.equal(refusal(VmCreateBody, { name: 'a', cpus: 'many' }), "CPUs must be a whole number from 1 to 64, got 'many' (a string)");
  });

  it('takes numbers only as numbers, and refuses unknown fields', () => {
    assert.equal(refusal(VmCreateBody, { name: 'a', memoryMiB: '128' }), "memory (MiB) must be a whole number from 64 to 65536, got '128' (a string)");
    assert.equal(refusal(VmCreateBody, { name: 'a', pad: 'x' }), "unknown field 'pad'");
    assert.equal(
      refusal(VmCreateBody, { name: 'a', workload: 'memory:fast' }),
      "workload 'memory:fast' does not parse: use idle, memory:<MiB/s>, tcp, tcp-client:<VM> or disk:<writes/s>",
    );
    assert.match(refusal(VmCreateBody, { name: 'a', offloads: 'tso' }), /^unknown NIC offload tso \(known: csum, guest_csum, gso,/);
  });
});

describe('migration requests', () => {
  it('needs a target and takes only known tuning fields, in range', () => {
    assert.equal(refusal(MigrateBody, {}), 'a migration needs a target node (--to NODE)');
    assert.equal(ok(TuningOverrides, { maxBandwidthBytesPerSec: 1048576 }).maxBandwidthBytesPerSec, 1048576);
    assert.equal(refusal(TuningOverrides, { speed: 1 }), "unknown field 'speed'");
    assert.match(refusal(TuningOverrides, { maxDowntimeMs: 0 }), /^maxDowntimeMs must be a whole number from 1 to 60000, got '0'$/);
    assert.match(refusal(TuningOverrides, { autoConverge: 'yes' }), /^autoConverge must be a boolean/);
    assert.equal(refusal(MigrateBody, { to: 'n', mode: 'teleport' }), "mode must be live or quick, got 'teleport'");
  });

  it('takes a policy by name or as fields, refusing unknown ones with a clear message', () => {
    assert.deepEqual(ok(PolicyOrName, { bandwidthMiBps: 'none', downtimeMs: 50 }), { bandwidthMiBps: null, downtimeMs: 50 });
    assert.deepEqual(ok(PolicyOrName, 'qemu-defaults'), QEMU_DEFAULTS_POLICY);
    assert.equal(refusal(PolicyOrName, 'fast'), "unknown policy 'fast' (named policies: ferry, qemu-defaults; or a JSON object)");
    assert.match(refusal(PolicyOrName, { speed: 1 }), /^unknown policy field 'speed' \(fields: bandwidthMiBps, downtimeMs,/);
    assert.equal(refusal(PolicyOrName, { downtimeMs: 0 }), "downtimeMs must be a whole number from 1 to 60000, got '0'");
    assert.equal(refusal(PolicyOrName, { downtimeMs: '30' }), "downtimeMs must be a whole number from 1 to 60000, got '30' (a string)");
    assert.match(refusal(PolicyOrName, { escalation: ['postcopy', 'postcopy'] }), /^escalation must list auto-converge and\/or postcopy, each once/);
    assert.match(refusal(PolicyOrName, { escalation: 'postcopy' }), /^escalation must list auto-converge and\/or postcopy, each once/);
    assert.equal(refusal(PolicyOrName, 7), 'a policy is a JSON object or a policy name');
  });
});

describe('cluster settings', () => {
  it('validates each setting by its own rule and refuses unknown names, prototype keys included', () => {
    assert.equal(ok(SETTING_RULES.migrationsPerNode, 2), 2);
    assert.equal(refusal(SETTING_RULES.migrationsPerNode, 0), "migrationsPerNode must be a whole number from 1 to 16, got '0'");
    assert.equal(refusal(SETTING_RULES.balanceAuto, 'maybe'), "balanceAuto must be true or false, got 'maybe'");
    // A lease shorter than 6 s leaves the agent, which fences 2 s before it lapses, too few heartbeats to miss.
    assert.equal(ok(SETTING_RULES.hostLeaseTtlS, 6), 6);
    assert.equal(refusal(SETTING_RULES.hostLeaseTtlS, 5), "hostLeaseTtlS must be a whole number from 6 to 10, got '5'");
    assert.equal(refusal(SETTING_RULES.hostLeaseTtlS, 11), "hostLeaseTtlS must be a whole number from 6 to 10, got '11'");
    for (const bad of ['speed', 'constructor', '__proto__', 'toString'])
      assert.match(refusal(SettingName, bad), new RegExp(`^unknown cluster setting '${bad}' \\(known: migrationsPerNode,`));
  });

  it('takes an absolute backup store outside pseudo file systems, or the default', () => {
    assert.equal(ok(SETTING_RULES.backupStore, '/srv/backups/'), '/srv/backups');
    assert.equal(ok(SETTING_RULES.backupStore, 'default'), '');
    for (const bad of ['relative/dir', '/proc/x', '/sys', '/srv/../etc', 3]) {
      assert.match(refusal(SETTING_RULES.backupStore, bad), /^backupStore must be an absolute directory outside \/proc, \/sys and \/dev/);
    }
  });
});

describe('networks and schedules', () => {
  it('checks network roles and metrics', () => {
    assert.equal(ok(NetworkSetBody, { role: 'none' }).role, 'none');
    assert.equal(refusal(NetworkSetBody, { role: 'fast' }), "network role must be one of management, migration, storage, none, got 'fast'");
    assert.match(refusal(NetworkSetBody, { metric: -1 }), /from 1 to 100000/);
  });

  it('parses a schedule with the domain rules', () => {
    assert.deepEqual(ok(BackupScheduleBody, { every: '15m', keep: 3, window: '22:00-04:00' }), {
      every: '15m',
      everyMs: 900_000,
      keep: 3,
      window: { startMin: 1320, endMin: 240, text: '22:00-04:00' },
    });
    assert.match(refusal(BackupScheduleBody, { every: '10x', keep: 3 }), /^--every must be a duration like 30s, 15m, 6h or 1d/);
    assert.match(refusal(BackupScheduleBody, { every: '10s', keep: 0 }), /^--keep must be a whole number from 1 to 1000/);
  });
});
