/**
 * Structured logs with pino: each daemon writes JSON lines (to its log file
 * under STATE/logs when `ferry up` starts it), with the VM, node and
 * migration ids as fields. `ferry logs` shows them readable on a terminal.
 */
import pino from 'pino';
import type { Logger } from '../ports/logger.js';

class PinoLogger implements Logger {
  constructor(private readonly p: pino.Logger) {}
  info(fields: Record<string, unknown>, message: string): void {
    this.p.info(fields, message);
  }
  warn(fields: Record<string, unknown>, message: string): void {
    this.p.warn(fields, message);
  }
  error(fields: Record<string, unknown>, message: string): void {
    this.p.error(fields, message);
  }
  debug(fields: Record<string, unknown>, message: string): void {
    this.p.debug(fields, message);
  }
  child(fields: Record<string, unknown>): Logger {
    return new PinoLogger(this.p.child(fields));
  }
}

/** Log lines a full or failing disk could not take (the daemon goes on without them). */
export let droppedLogWrites = 0;

/** A daemon's logger: JSON lines on stdout (its log file), named by its role. A write that fails (ENOSPC, EIO) is dropped and counted, never fatal. */
export function daemonLogger(name: string, level = process.env.FERRY_LOG_LEVEL ?? 'info'): Logger {
  const out = pino.destination({ fd: 1, sync: true });
  out.on('error', () => {
    droppedLogWrites++;
  });
  return new PinoLogger(pino({ name, level, base: { pid: process.pid } }, out));
}
