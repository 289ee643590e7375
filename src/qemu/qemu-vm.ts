/**
 * One QEMU process on this host, as the node agent sees it.
 *
 * QEMU runs detached in its own session, so it outlives an agent that dies or
 * restarts: a VM must not stop because its manager did. The agent writes a
 * descriptor (launch parameters and pid) beside the QMP socket and a new
 * agent adopts every QEMU whose descriptor, pid and QMP socket still agree.
 *
 * The serial console is a QEMU socket chardev; the agent keeps it connected,
 * appends everything to the VM's console log and relays it to attached
 * consoles.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { ErrorCode, FerryError } from '../domain/errors.js';
import { QmpClient } from './qmp/client.js';
import { type QemuLaunch, qemuArgv } from './argv.js';
import { pidAlive } from '../system/process.js';
export { pidAlive };

export interface QemuVmDescriptor {
  name: string;
  pid: number;
  launch: QemuLaunch;
  startedAtMs: number;
}

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return check();
}

export class QemuVm {
  private serial: net.Socket | undefined;
  private readonly consoleListeners = new Set<(chunk: Buffer) => void>();
  private closing = false;
  /** Resolves when QEMU's QMP connection closes: the process is gone. */
  readonly gone: Promise<void>;

  private constructor(
    readonly descriptor: QemuVmDescriptor,
    readonly qmp: QmpClient,
  ) {
    this.gone = qmp.waitClosed();
    this.connectSerial();
  }

  get name(): string {
    return this.descriptor.name;
  }

  get pid(): number {
    return this.descriptor.pid;
  }

  static async launch(launch: QemuLaunch, descriptorPath: string, stderrPath: string): Promise<QemuVm> {
    for (const p of [launch.qmpSocket, launch.serialSocket, launch.pidFile]) fs.rmSync(p, { force: true });
    const errFd = fs.openSync(stderrPath, 'w');
    const child = spawn('qemu-system-x86_64', qemuArgv(launch), { detached: true, stdio: ['ignore', errFd, errFd] });
    fs.closeSync(errFd);
    let exited = false;
    child.on('exit', () => (exited = true));
    child.on('error', () => (exited = true));
    child.unref();
    const pid = child.pid;
    // QEMU creates its chardev sockets one after the other: wait for both.
    const ready = await waitFor(() => exited || (fs.existsSync(launch.qmpSocket) && fs.existsSync(launch.serialSocket)), 15_000);
    if (exited || !ready || pid === undefined) {
      const stderr = fs.existsSync(stderrPath) ? fs.readFileSync(stderrPath, 'utf8').trim() : '';
      if (pid !== undefined && !exited) killHard(pid);
      throw new FerryError(
        ErrorCode.QemuDied,
        `QEMU for '${launch.spec.name}' did not start: ${stderr.split('\n').pop() || (ready ? 'it exited' : 'no QMP socket within 15 s')}`,
      );
    }
    let qmp: QmpClient;
    try {
      fs.chmodSync(launch.qmpSocket, 0o600);
      fs.chmodSync(launch.serialSocket, 0o600);
      qmp = await QmpClient.connect(launch.qmpSocket);
    } catch (e) {
      // Never leave a QEMU behind that nobody manages.
      killHard(pid);
      throw e;
    }
    const descriptor: QemuVmDescriptor = { name: launch.spec.name, pid, launch, startedAtMs: Date.now() };
    fs.writeFileSync(descriptorPath, JSON.stringify(descriptor), { mode: 0o600 });
    return new QemuVm(descriptor, qmp);
  }

  /** Takes over a QEMU started by an earlier agent; undefined when it is gone. */
  static async adopt(descriptorPath: string): Promise<QemuVm | undefined> {
    let descriptor: QemuVmDescriptor;
    try {
      descriptor = JSON.parse(fs.readFileSync(descriptorPath, 'utf8')) as QemuVmDescriptor;
    } catch {
      return undefined;
    }
    if (!pidAlive(descriptor.pid)) return undefined;
    try {
      const qmp = await QmpClient.connect(descriptor.launch.qmpSocket, { timeoutMs: 3_000 });
      return new QemuVm(descriptor, qmp);
    } catch {
      return undefined;
    }
  }

  onConsole(listener: (chunk: Buffer) => void): () => void {
    this.consoleListeners.add(listener);
    return () => this.consoleListeners.delete(listener);
  }

  writeConsole(data: Buffer): void {
    this.serial?.write(data);
  }

  /** Asks QEMU to quit, then kills it if it has not gone within `graceMs`. */
  async quit(graceMs = 3_000): Promise<void> {
    this.closing = true;
    try {
      await this.qmp.execute('quit', {}, { timeoutMs: graceMs });
    } catch {
      /* it may already be gone, or hung: the kill below settles it */
    }
    if (!(await waitFor(() => !pidAlive(this.pid), graceMs))) killHard(this.pid);
    await waitFor(() => !pidAlive(this.pid), 5_000);
    this.cleanup();
  }

  /** SIGKILL: for a QEMU that must not run one instant longer (a failed migration target). */
  async kill(): Promise<void> {
    this.closing = true;
    killHard(this.pid);
    if (!(await waitFor(() => !pidAlive(this.pid), 5_000))) {
      throw new FerryError(ErrorCode.Internal, `QEMU pid ${this.pid} of '${this.name}' survived SIGKILL`);
    }
    this.cleanup();
  }

  /** Stops talking to QEMU without stopping it (agent shutdown). */
  detach(): void {
    this.closing = true;
    this.serial?.destroy();
    this.qmp.close();
  }

  private cleanup(): void {
    this.serial?.destroy();
    this.qmp.close();
    const l = this.descriptor.launch;
    for (const p of [l.qmpSocket, l.serialSocket, l.pidFile]) fs.rmSync(p, { force: true });
  }

  private connectSerial(): void {
    const log = fs.openSync(this.descriptor.launch.spec.consoleLogPath, 'a');
    const sock = net.createConnection({ path: this.descriptor.launch.serialSocket });
    this.serial = sock;
    sock.on('data', (chunk: Buffer) => {
      fs.writeSync(log, chunk);
      for (const l of this.consoleListeners) l(chunk);
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      fs.closeSync(log);
      if (!this.closing && !this.qmp.closed) setTimeout(() => !this.closing && this.connectSerial(), 200);
    });
  }
}

function killHard(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}
