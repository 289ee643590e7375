/**
 * QMP client: the wire to one QEMU process.
 *
 *   connect ──► greeting {"QMP":…} ──► qmp_capabilities ──► ready
 *   ready: execute(cmd) ─► {"return":…} | {"error":{class,desc}}
 *          events       ─► {"event":…,"data":…,"timestamp":…}
 *   socket closes ──► every pending command fails with qemu-died
 *
 * Commands are matched to answers by `id`, so several may be in flight.
 * Policy (retries, what a failure means) belongs to callers, not here.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { ErrorCode, FerryError, errors } from '../../domain/errors.js';
import type { QmpCommands, QmpEvent } from './types.js';

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export class QmpError extends FerryError {
  readonly errorClass: string;
  constructor(command: string, errorClass: string, desc: string) {
    super(ErrorCode.QmpError, `QEMU refused ${command}: ${desc}`, { details: { command, errorClass } });
    this.errorClass = errorClass;
  }
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  cleanup: () => void;
}

export interface ExecuteOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT_MS = 30_000;

export class QmpClient {
  private readonly socket: net.Socket;
  private readonly emitter = new EventEmitter();
  private readonly pending = new Map<string, Pending>();
  private buffer = '';
  private nextId = 1;
  private closedError: FerryError | undefined;
  greeting: QmpGreeting | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.emitter.setMaxListeners(0);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', () => {
      /* 'close' follows and fails what is pending */
    });
    socket.on('close', () => this.onClose());
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, options: ExecuteOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const socket = net.createConnection({ path });
    const client = new QmpClient(socket);
    try {
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          client.emitter.once('greeting', () => resolve());
          client.emitter.once('closed', (err: Error) => reject(err));
        }),
        timeoutMs,
        'QMP greeting',
        options.signal,
      );
      await client.execute('qmp_capabilities', {}, options);
      return client;
    } catch (e) {
      socket.destroy();
      throw e;
    }
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  execute<C extends keyof QmpCommands>(command: C, args: QmpCommands[C]['args'], options: ExecuteOptions = {}): Promise<QmpCommands[C]['ret']> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = `ferry-${this.nextId++}`;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(errors.timeout(`QMP ${command}`, timeoutMs));
      }, timeoutMs);
      const onAbort = () => {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(errors.aborted(`QMP ${command}`));
      };
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        command,
        resolve: resolve as (v: unknown) => void,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
        },
      });
      const message: Record<string, unknown> = { execute: command, id };
      if (args && Object.keys(args).length > 0) message.arguments = args;
      this.socket.write(JSON.stringify(message) + '\n');
    });
  }

  on(listener: (event: QmpEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }

  /** Resolves with the first event named `name` that satisfies `match`. */
  waitForEvent(name: string, options: ExecuteOptions & { match?: (event: QmpEvent) => boolean } = {}): Promise<QmpEvent> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise<QmpEvent>((resolve, reject) => {
      const finish = (err: Error | undefined, event?: QmpEvent) => {
        off();
        clearTimeout(timer);
        this.emitter.off('closed', onClosed);
        options.signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(event as QmpEvent);
      };
      const off = this.on((event) => {
        if (event.event === name && (options.match?.(event) ?? true)) finish(undefined, event);
      });
      const onClosed = (err: Error) => finish(err);
      const onAbort = () => finish(errors.aborted(`waiting for QMP event ${name}`));
      const timer = setTimeout(() => finish(errors.timeout(`QMP event ${name}`, timeoutMs)), timeoutMs);
      if (this.closedError) return finish(this.closedError);
      if (options.signal?.aborted) return onAbort();
      this.emitter.once('closed', onClosed);
      options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Resolves when the connection closes (QEMU exited or quit). */
  waitClosed(): Promise<void> {
    if (this.closedError) return Promise.resolve();
    return new Promise((resolve) => this.emitter.once('closed', () => resolve()));
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // QEMU only sends JSON; a broken line is dropped rather than killing the client
    }
    if ('QMP' in msg) {
      this.greeting = msg.QMP as QmpGreeting;
      this.emitter.emit('greeting');
      return;
    }
    if ('event' in msg) {
      this.emitter.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const pending = id ? this.pending.get(id) : undefined;
    if (!pending || !id) return;
    this.pending.delete(id);
    pending.cleanup();
    if ('error' in msg) {
      const err = msg.error as { class: string; desc: string };
      pending.reject(new QmpError(pending.command, err.class, err.desc));
    } else {
      pending.resolve(msg.return);
    }
  }

  private onClose(): void {
    if (this.closedError) return;
    this.closedError = new FerryError(ErrorCode.QemuDied, 'QEMU closed its QMP connection (the process exited)');
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.cleanup();
      p.reject(this.closedError);
    }
    this.emitter.emit('closed', this.closedError);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string, signal?: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal?.aborted) return reject(errors.aborted(what));
    const timer = setTimeout(() => reject(errors.timeout(what, ms)), ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(errors.aborted(what));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
