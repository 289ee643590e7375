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
import { GuestAgent } from './guest-agent.js';
import { type QemuLaunch, qemuArgv } from './argv.js';
import { pidAlive } from '../system/process.js';

/**
 * How often an unanswered ACPI power button is pressed again during a
 * shutdown. A guest a few seconds after boot misses the first press (its
 * ACPI is not listening yet): every second keeps that wait short, and is far
 * below what a guest counts as a held button (systemd: 7 presses in 2 s).
 */
const POWER_BUTTON_REPEAT_MS = 1000;
import type { NicLink } from '../domain/records.js';
export { pidAlive };

export interface QemuVmDescriptor {
  name: string;
  pid: number;
  launch: QemuLaunch;
  startedAtMs: number;
}

/** What a QEMU printed last on stderr (an error and the hint under it: up to three lines, ` | ` between); '' when nothing. */
export function lastWords(stderrPath: string): string {
  return fs.existsSync(stderrPath) ? fs.readFileSync(stderrPath, 'utf8').trim().split('\n').slice(-3).join(' | ') : '';
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
  /** The guest agent's channel, for a VM with its own OS. */
  readonly agent: GuestAgent | undefined;

  /** The NIC's link to its switch (a stream NIC only): from QEMU's events, first asked when taken over. */
  network: NicLink | undefined;

  private constructor(
    readonly descriptor: QemuVmDescriptor,
    readonly qmp: QmpClient,
  ) {
    this.gone = qmp.waitClosed();
    this.agent = descriptor.launch.qgaSocket ? new GuestAgent(descriptor.launch.qgaSocket) : undefined;
    this.connectSerial();
    if (descriptor.launch.nic.kind === 'stream') {
      qmp.on((e) => {
        if (e.event === 'NETDEV_STREAM_CONNECTED') this.network = 'connected';
        if (e.event === 'NETDEV_STREAM_DISCONNECTED') this.network = 'disconnected';
      });
      void this.askNetwork();
    }
  }

  /** What QEMU says of the stream NIC now: `unix:PATH` once connected, `connecting` while it retries. */
  private async askNetwork(): Promise<void> {
    const info: string = await this.qmp.execute('human-monitor-command', { 'command-line': 'info network' }, { timeoutMs: 2_000 }).catch(() => '');
    const line = info.split('\n').find((l) => l.includes('net0:') && l.includes('type=stream'));
    if (line && this.network === undefined) this.network = line.includes('connecting') ? 'disconnected' : 'connected';
  }

  get name(): string {
    return this.descriptor.name;
  }

  get pid(): number {
    return this.descriptor.pid;
  }

  static async launch(launch: QemuLaunch, descriptorPath: string, stderrPath: string): Promise<QemuVm> {
    for (const p of runtimeFiles(launch)) fs.rmSync(p, { force: true });
    const errFd = fs.openSync(stderrPath, 'w');
    const child = spawn('qemu-system-x86_64', qemuArgv(launch), { detached: true, stdio: ['ignore', errFd, errFd] });
    fs.closeSync(errFd);
    let exited = false;
    child.on('exit', () => (exited = true));
    child.on('error', () => (exited = true));
    child.unref();
    const pid = child.pid;
    // QEMU creates its chardev sockets one after the other: wait for both.
    const sockets = [launch.qmpSocket, launch.serialSocket, ...(launch.qgaSocket ? [launch.qgaSocket] : [])];
    const ready = await waitFor(() => exited || sockets.every((p) => fs.existsSync(p)), 15_000);
    /** QEMU's own last words, or `otherwise`: why it did not start. */
    const didNotStart = (otherwise: string) =>
      new FerryError(ErrorCode.QemuDied, `QEMU for '${launch.spec.name}' did not start: ${lastWords(stderrPath) || otherwise}`);
    if (exited || !ready || pid === undefined) {
      if (pid !== undefined && !exited) killHard(pid);
      throw didNotStart(ready ? 'it exited' : 'no QMP socket within 15 s');
    }
    let qmp: QmpClient;
    try {
      fs.chmodSync(launch.qmpSocket, 0o600);
      fs.chmodSync(launch.serialSocket, 0o600);
      for (const p of [launch.qgaSocket, launch.vncSocket]) if (p && fs.existsSync(p)) fs.chmodSync(p, 0o600);
      qmp = await QmpClient.connect(launch.qmpSocket);
    } catch (e) {
      // Never leave a QEMU behind that nobody manages. One that exited after making its sockets (a disk it could
      // not open or lock: another QEMU holds it) says why in its last words.
      if (await waitFor(() => exited, 1000)) throw didNotStart(e instanceof Error ? e.message : String(e));
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
    await this.cleanup();
  }

  /**
   * Asks the guest to power off: through its agent when it has one that
   * answers, else with the ACPI power button; then up to `timeoutMs` for it to
   * go, and `quit` if it has not.
   */
  async shutdown(timeoutMs: number, guestRuns: boolean): Promise<'agent' | 'acpi' | 'force'> {
    const deadline = Date.now() + timeoutMs;
    if (guestRuns && this.agent) {
      this.closing = true;
      const asked = await this.agent.call('guest-shutdown', { mode: 'powerdown' }, { noReply: true }).then(
        () => true,
        () => false,
      );
      if (asked && (await waitFor(() => !pidAlive(this.pid), deadline - Date.now(), 50))) {
        await this.cleanup();
        return 'agent';
      }
    }
    if (guestRuns && Date.now() < deadline) {
      this.closing = true;
      // A guest that misses the press (still booting, its ACPI not listening yet, too busy) gets another every
      // second until the timeout; one already shutting down ignores them.
      let pressedOnce = false;
      while (Date.now() < deadline) {
        const pressed = await this.qmp.execute('system_powerdown', {}, { timeoutMs: 2_000 }).then(
          () => true,
          () => false,
        );
        if (!pressed && !pressedOnce) break;
        pressedOnce ||= pressed;
        if (await waitFor(() => !pidAlive(this.pid), Math.min(POWER_BUTTON_REPEAT_MS, deadline - Date.now()), 50)) {
          await this.cleanup();
          return 'acpi';
        }
      }
    }
    await this.quit();
    return 'force';
  }

  /** SIGKILL: for a QEMU that must not run one instant longer (a failed migration target). */
  async kill(): Promise<void> {
    this.closing = true;
    killHard(this.pid);
    if (!(await waitFor(() => !pidAlive(this.pid), 5_000))) {
      throw new FerryError(ErrorCode.Internal, `QEMU pid ${this.pid} of '${this.name}' survived SIGKILL`);
    }
    await this.cleanup();
  }

  /** Stops talking to QEMU without stopping it (agent shutdown). */
  detach(): void {
    this.closing = true;
    this.serial?.destroy();
    this.qmp.close();
  }

  /** After QEMU has gone: the console's last words are read (until its socket closes, briefly), then everything is closed. */
  private async cleanup(): Promise<void> {
    const serial = this.serial;
    if (serial && !serial.destroyed)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 500);
        serial.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    this.serial?.destroy();
    this.qmp.close();
    for (const p of runtimeFiles(this.descriptor.launch)) fs.rmSync(p, { force: true });
  }

  /** Console output that could not be written (a full or failing disk), counted until it can be said in the log. */
  droppedConsoleBytes = 0;
  private consoleFd: number | undefined;
  private droppedPending = 0;
  private droppedSince: string | undefined;

  /** Appends console output to the log; a full or failing disk drops it (counted) instead of stopping the agent. */
  private appendConsole(chunk: Buffer): void {
    try {
      this.consoleFd ??= fs.openSync(this.descriptor.launch.spec.consoleLogPath, 'a', 0o600);
      if (this.droppedSince) {
        fs.writeSync(
          this.consoleFd,
          `\n[ferry: ${this.droppedPending} bytes of console output dropped since ${this.droppedSince}: the log could not be written]\n`,
        );
        this.droppedSince = undefined;
        this.droppedPending = 0;
      }
      fs.writeSync(this.consoleFd, chunk);
    } catch (e) {
      this.droppedConsoleBytes += chunk.length;
      this.droppedPending += chunk.length;
      this.droppedSince ??= `${new Date().toISOString()} (${(e as NodeJS.ErrnoException).code ?? 'error'})`;
    }
  }

  private closeConsoleLog(): void {
    if (this.consoleFd === undefined) return;
    try {
      fs.closeSync(this.consoleFd);
    } catch {
      /* already closed */
    }
    this.consoleFd = undefined;
  }

  private connectSerial(): void {
    const sock = net.createConnection({ path: this.descriptor.launch.serialSocket });
    this.serial = sock;
    sock.on('data', (chunk: Buffer) => {
      this.appendConsole(chunk);
      for (const l of this.consoleListeners) l(chunk);
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closeConsoleLog();
      if (!this.closing && !this.qmp.closed) setTimeout(() => !this.closing && this.connectSerial(), 200);
    });
  }
}

function runtimeFiles(l: QemuLaunch): string[] {
  return [l.qmpSocket, l.serialSocket, l.pidFile, ...(l.qgaSocket ? [l.qgaSocket] : []), ...(l.vncSocket ? [l.vncSocket] : [])];
}

function killHard(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}
