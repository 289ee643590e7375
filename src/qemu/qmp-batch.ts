/**
 * A short-lived QEMU answering a fixed list of QMP commands on stdio, for
 * questions only QEMU can answer (CPU model expansion, what a NIC backend
 * offers). Commands carry numeric ids; the answers come back by id.
 */
import { spawn } from 'node:child_process';
import { ErrorCode, FerryError } from '../domain/errors.js';

export interface QmpAnswer {
  return?: unknown;
  error?: { desc: string };
}

/** Runs QEMU with `args` and `-qmp stdio`, sends each command (id = its index) and returns the answers by id. */
export function qmpBatch(args: string[], commands: { execute: string; arguments?: unknown }[], what: string): Promise<Map<number, QmpAnswer>> {
  const lines = [
    JSON.stringify({ execute: 'qmp_capabilities' }),
    ...commands.map((c, id) => JSON.stringify({ ...c, id })),
    JSON.stringify({ execute: 'quit' }),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-system-x86_64', [...args, '-nodefaults', '-no-user-config', '-display', 'none', '-qmp', 'stdio'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new FerryError(ErrorCode.QemuDied, `cannot run qemu-system-x86_64: ${e.message}`));
    });
    child.on('exit', () => {
      clearTimeout(timer);
      const answers = new Map<number, QmpAnswer>();
      for (const line of out.split('\n')) {
        if (!line.trim().startsWith('{')) continue;
        const msg = JSON.parse(line) as QmpAnswer & { id?: unknown };
        if (typeof msg.id === 'number') answers.set(msg.id, msg);
      }
      if (answers.size === 0) reject(new FerryError(ErrorCode.QemuDied, `QEMU could not ${what}: ${err.trim().split('\n').pop() || 'no answer'}`));
      else resolve(answers);
    });
    child.stdin.end(lines.join('\n') + '\n');
  });
}
