/**
 * The host's independent watchdog: a process of its own beside the agent,
 * so a hung or stopped agent fences too. The agent writes `fence.json` in
 * its run directory after every answered heartbeat (until when HA VMs may
 * run here, and which are HA); once that moment has passed, the watchdog
 * SIGKILLs each HA VM's QEMU by its pid file and notes the name in
 * `fenced` for the agent's next heartbeat. It ends when the agent is gone
 * and no HA VM it guards runs any more.
 *
 *   node dist/src/daemon/main.js watchdog --state DIR --node NAME --agent PID
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Clock } from '../domain/clock.js';
import type { FenceFile } from '../domain/ha.js';
import { readJsonFile, writeFileAtomic } from '../system/json-file.js';
import { pidAlive } from '../system/process.js';

/** The files the agent and its watchdog share in the host's run directory. */
export class FenceFiles {
  constructor(private readonly runDir: string) {}

  private get file(): string {
    return path.join(this.runDir, 'fence.json');
  }
  private get fencedFile(): string {
    return path.join(this.runDir, 'fenced');
  }
  get pidFile(): string {
    return path.join(this.runDir, 'watchdog.pid');
  }

  write(f: FenceFile): void {
    writeFileAtomic(this.file, JSON.stringify(f));
  }

  read(): FenceFile | undefined {
    return readJsonFile<FenceFile>(this.file);
  }

  noteFenced(name: string): void {
    fs.appendFileSync(this.fencedFile, `${name}\n`);
  }

  /** The names fenced since the last call (the file is emptied). */
  takeFenced(): string[] {
    try {
      const text = fs.readFileSync(this.fencedFile, 'utf8');
      fs.rmSync(this.fencedFile, { force: true });
      return [...new Set(text.split('\n').filter(Boolean))];
    } catch {
      return [];
    }
  }

  /** The running watchdog's pid, if its pid file names a live process that is a watchdog (not a reused pid). */
  watchdogPid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(this.pidFile, 'utf8'));
      return pid && pidAlive(pid) && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('watchdog') ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** The pid of an HA VM's QEMU, if its pid file names a live process that is that VM's QEMU. */
  qemuPid(vm: string): number | undefined {
    const pidFile = path.join(this.runDir, `${vm}.pid`);
    try {
      const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
      if (!pid || !pidAlive(pid)) return undefined;
      // A reused pid is not that QEMU: its command line names its own pid file.
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(pidFile) ? pid : undefined;
    } catch {
      return undefined;
    }
  }
}

/**
 * One look: kills every HA VM's QEMU once the lease has lapsed; returns what
 * it killed and whether any HA VM still runs. Before the lease lapses it
 * reads the VMs' pid files only when `askGuarding` (the agent is gone and the
 * watchdog decides whether to end).
 */
export function watchOnce(files: FenceFiles, nowMs: number, askGuarding = true): { killed: string[]; guarding: boolean } {
  const f = files.read();
  if (!f) return { killed: [], guarding: false };
  const lapsed = nowMs > f.validUntilMs;
  if (!lapsed && !askGuarding) return { killed: [], guarding: f.ha.length > 0 };
  const running = f.ha.map((vm) => ({ vm, pid: files.qemuPid(vm) })).filter((x) => x.pid !== undefined);
  if (!lapsed) return { killed: [], guarding: running.length > 0 };
  const killed: string[] = [];
  for (const { vm, pid } of running) {
    try {
      process.kill(pid!, 'SIGKILL');
      files.noteFenced(vm);
      killed.push(vm);
    } catch {
      /* it ended by itself */
    }
  }
  return { killed, guarding: false };
}

/** The watchdog's loop, every 100 ms, until the agent is gone and nothing is left to guard. */
export async function runWatchdog(o: { runDir: string; agentPid: number; clock: Clock; say: (line: string) => void }): Promise<void> {
  const files = new FenceFiles(o.runDir);
  fs.writeFileSync(files.pidFile, String(process.pid));
  for (;;) {
    const agentGone = !pidAlive(o.agentPid);
    const { killed, guarding } = watchOnce(files, o.clock.nowMs(), agentGone);
    for (const vm of killed) o.say(`fenced HA VM '${vm}': the host's lease ran out`);
    if (!guarding && agentGone) break;
    await o.clock.sleep(100);
  }
  if (fs.existsSync(files.pidFile) && fs.readFileSync(files.pidFile, 'utf8') === String(process.pid)) fs.rmSync(files.pidFile, { force: true });
}

/** Starts this host's watchdog beside the agent, replacing one an earlier agent left. */
export function startWatchdog(o: { stateDir: string; node: string; runDir: string; logFile: string }): void {
  const old = new FenceFiles(o.runDir).watchdogPid();
  if (old) process.kill(old, 'SIGKILL');
  const main = fileURLToPath(new URL('../daemon/main.js', import.meta.url));
  const log = fs.openSync(o.logFile, 'a');
  const child = spawn(process.execPath, [main, 'watchdog', '--state', o.stateDir, '--node', o.node, '--agent', String(process.pid)], {
    detached: true,
    stdio: ['ignore', log, log],
  });
  child.unref();
  fs.closeSync(log);
}

/** Stops the watchdog when no HA VM needs it (the agent stops on purpose and guards nothing). */
export function stopWatchdog(runDir: string): void {
  const files = new FenceFiles(runDir);
  const pid = files.watchdogPid();
  if (pid) process.kill(pid, 'SIGKILL');
  fs.rmSync(files.pidFile, { force: true });
}
