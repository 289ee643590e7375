/**
 * Runs a phase table (see domain/phases.ts) against an operation's record:
 * saves each phase before it acts, persists undo steps as they are
 * registered, undoes in reverse on failure or cancel, and resumes or undoes
 * after a controller restart.
 */
import { ErrorCode, FerryError, isFerryError, toFerryError } from '../../domain/errors.js';
import type { Clock } from '../../domain/clock.js';
import type { PhasedRecord, RestartAction, UndoStep } from '../../domain/phases.js';

export interface PhaseContext {
  readonly signal: AbortSignal;
  /** Registers (and saves) an undo step: from now on a failure runs it. */
  onUndo(step: UndoStep): Promise<void>;
  /** Registers (and saves) a step that runs at the end whatever happens. */
  always(step: UndoStep): Promise<void>;
  /** The point of no return: registered undo steps are dropped; later failures are warnings. */
  commit(): Promise<void>;
  /** Drops registered undo steps of this action (the resource is gone by design). */
  forget(action: string): Promise<void>;
}

export interface Phase {
  name: string;
  run(ctx: PhaseContext): Promise<void>;
  /** A restarted controller found this phase saved last (default: undo). */
  onRestart?: RestartAction | (() => Promise<RestartAction>);
  /**
   * A failure past the commit cannot be undone. `warn` (default): noted, the
   * operation still succeeds. `fail`: the operation fails naming this phase
   * (what was committed stays; the phases after it still run).
   */
  afterCommit?: 'warn' | 'fail';
}

// The table's actions take whatever arguments their steps were saved with.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type UndoTable = Record<string, (args: any) => Promise<void>>;

export interface RecordAccess<R extends PhasedRecord> {
  load(): Promise<R>;
  save(change: (r: R) => R): Promise<R>;
}

export interface Outcome {
  /** Every phase ran (possibly with warnings past the commit). */
  ok: boolean;
  cancelled: boolean;
  error?: FerryError;
  /** Failures after the commit. */
  warnings: string[];
  /** The operation failed past its commit (a phase marked `afterCommit: 'fail'`): nothing was undone. */
  committed?: boolean;
}

export interface RunnerOptions<R extends PhasedRecord> {
  /** What kind of operation this is (live-migration, quick-migration, backup, replica-sync). */
  operation?: string;
  phases: Phase[];
  record: RecordAccess<R>;
  undo: UndoTable;
  /** Called as a phase starts (after it is saved): step times, events. */
  onPhase?: (name: string) => Promise<void>;
  /** The phase name saved while undoing. */
  rollingBackPhase?: string;
  /** How a failure past the commit is worded: `${latePrefix}: what failed`. */
  latePrefix?: string;
  clock: Clock;
  /** Asked before each phase runs (component tests inject a failure or a hang there). */
  gate?: PhaseGate;
}

/** Called with the operation's kind and the phase about to run; may throw or never return. */
export type PhaseGate = (operation: string, phase: string) => Promise<void>;

function isCancel(e: unknown, signal: AbortSignal): boolean {
  return signal.aborted || (e instanceof Error && e.name === 'AbortError') || isFerryError(e, ErrorCode.Aborted);
}

export class PhaseRunner<R extends PhasedRecord> {
  constructor(private readonly opts: RunnerOptions<R>) {}

  /** Runs the table from its first phase (or from `from`). */
  async run(signal: AbortSignal, from = 0): Promise<Outcome> {
    const { phases, record } = this.opts;
    const ctx = this.context(signal);
    const warnings: string[] = [];
    let late: FerryError | undefined;
    for (let i = from; i < phases.length; i++) {
      const phase = phases[i]!;
      await record.save((r) => ({ ...r, phase: phase.name }));
      await this.opts.onPhase?.(phase.name);
      try {
        if (signal.aborted) throw signal.reason ?? new Error('aborted');
        await this.opts.gate?.(this.opts.operation ?? 'operation', phase.name);
        await phase.run(ctx);
      } catch (e) {
        const current = await record.load();
        const err = toFerryError(e);
        if (current.committedAtMs !== undefined) {
          // Past the point of no return: note it and go on.
          if (phase.afterCommit === 'fail' && !isCancel(e, signal)) {
            late ??= new FerryError(err.code, `${phase.name}: ${err.message}`, { details: { ...err.details, phase: phase.name }, cause: err });
            continue;
          }
          const w = `${this.opts.latePrefix ?? 'after the point of no return'}: ${isCancel(e, signal) ? 'cancel came too late' : err.message}`;
          warnings.push(w);
          await record.save((r) => ({ ...r, warnings: [...(r.warnings ?? []), w] }));
          continue;
        }
        const cancelled = isCancel(e, signal);
        await this.undo();
        await this.finalCleanup();
        return { ok: false, cancelled, ...(cancelled ? {} : { error: err }), warnings };
      }
    }
    await this.finalCleanup();
    await record.save((r) => ({ ...r, undo: [] }));
    if (late) return { ok: false, cancelled: false, error: late, warnings, committed: true };
    return { ok: true, cancelled: false, warnings };
  }

  /**
   * After a controller restart: carry on from the saved phase or undo, as
   * the record and that phase's `onRestart` say.
   */
  async recover(signal: AbortSignal): Promise<Outcome & { action: RestartAction }> {
    const r = await this.opts.record.load();
    const i = this.opts.phases.findIndex((p) => p.name === r.phase);
    if (i < 0) {
      // Not started (or already rolling back): undo whatever was registered.
      await this.undo();
      await this.finalCleanup();
      return { ok: false, cancelled: false, warnings: [], action: 'undo' };
    }
    const phase = this.opts.phases[i]!;
    let action: RestartAction;
    if (r.committedAtMs !== undefined) action = 'rerun';
    else if (typeof phase.onRestart === 'function') action = await phase.onRestart().catch((): RestartAction => 'undo');
    else action = phase.onRestart ?? 'undo';
    if (action === 'undo') {
      await this.undo();
      await this.finalCleanup();
      return { ok: false, cancelled: false, warnings: [], action };
    }
    return { ...(await this.run(signal, action === 'next' ? i + 1 : i)), action };
  }

  private context(signal: AbortSignal): PhaseContext {
    const { record } = this.opts;
    return {
      signal,
      onUndo: async (step) => {
        await record.save((r) => ({ ...r, undo: [...(r.undo ?? []), step] }));
      },
      always: async (step) => {
        await record.save((r) => ({ ...r, always: [...(r.always ?? []), step] }));
      },
      commit: async () => {
        await record.save((r) => ({ ...r, undo: [], committedAtMs: r.committedAtMs ?? this.opts.clock.nowMs() }));
      },
      forget: async (action) => {
        await record.save((r) => ({ ...r, undo: (r.undo ?? []).filter((s) => s.action !== action) }));
      },
    };
  }

  /** Runs the registered undo steps newest first; each failure is kept beside the cause. */
  private async undo(): Promise<void> {
    const { record, undo, rollingBackPhase } = this.opts;
    const r = await record.save((cur) => (rollingBackPhase ? { ...cur, phase: rollingBackPhase } : cur));
    for (const step of [...(r.undo ?? [])].reverse()) await this.runStep(step, undo);
    await record.save((cur) => ({ ...cur, undo: [] }));
  }

  private async finalCleanup(): Promise<void> {
    const { record, undo } = this.opts;
    const r = await record.load();
    for (const step of [...(r.always ?? [])].reverse()) await this.runStep(step, undo);
    await record.save((cur) => ({ ...cur, always: [] }));
  }

  private async runStep(step: UndoStep, table: UndoTable): Promise<void> {
    const fn = table[step.action];
    try {
      if (!fn) throw new Error(`no undo action '${step.action}'`);
      await fn(step.args);
    } catch (e) {
      const msg = `${step.action}: ${toFerryError(e).message}`;
      await this.opts.record.save((cur) => ({ ...cur, cleanupErrors: [...(cur.cleanupErrors ?? []), msg] }));
    }
  }
}
