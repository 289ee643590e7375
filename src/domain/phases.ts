/**
 * Long operations as saved phase tables (live and quick migration, backups,
 * replica syncs). Each is a list of named phases run in order. Before a
 * phase acts, its name is saved on the operation's record; the moment a
 * phase creates something that must go again on failure (a target QEMU, an
 * overlay, an export), it registers an undo step, saved at once with the
 * data it needs. On failure the runner undoes in reverse and keeps each
 * cleanup error beside the cause. Past `commit` (the point of no return, a
 * migration's handover) nothing is undone: later trouble is a warning.
 *
 *   phase 1 ──► phase 2 ──► … ──commit──► … ──► done (always-steps run)
 *      │ fails      │ fails                  │ fails: warning, done
 *      ▼            ▼
 *   undo registered steps, newest first; always-steps; failed
 *
 * A restarted controller finds the saved phase and undo steps on the record
 * and carries on or undoes from there (`onRestart`); nothing is inferred
 * from files on disk.
 */

/** One saved undo (or always) step: an action of the operation's undo table and its arguments. */
export interface UndoStep {
  action: string;
  args: Record<string, unknown>;
}

/** What every phased record carries. */
export interface PhasedRecord {
  /** The phase being run (saved before it acts). */
  phase: string;
  /** Undo steps registered so far, oldest first. */
  undo?: UndoStep[];
  /** Final cleanup that runs whatever happens (a state file, a probe). */
  always?: UndoStep[];
  /** Set at the point of no return. */
  committedAtMs?: number;
  cleanupErrors?: string[];
  warnings?: string[];
}

/**
 * What a restarted controller does with an operation whose last saved phase
 * is this one: undo what was registered, run the phase again, or go on with
 * the next (the phase's effect is known to have happened).
 */
export type RestartAction = 'undo' | 'rerun' | 'next';
