/**
 * Command-line parsing: positionals and --flags, checked against what each
 * command accepts so a typo is an error, not silently ignored.
 */
import { errors } from '../domain/errors.js';

export interface ParsedArgs {
  positionals: string[];
  flags: Map<string, string | true>;
}

/** Flags that never take a value. */
const BOOLEAN_FLAGS = new Set(['json', 'help', 'follow', 'quick', 'dry-run', 'force', 'check', 'plan', 'compat', 'inactive', 'settings', 'postcopy', 'incremental', 'off', 'planned', 'test']);

export function parseArgs(argv: string[]): ParsedArgs {
  const positionals: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
      if (!name) throw errors.usage(`malformed option '${a}'`);
      if (eq >= 0) flags.set(name, a.slice(eq + 1));
      else if (BOOLEAN_FLAGS.has(name)) flags.set(name, true);
      else {
        const value = argv[i + 1];
        if (value === undefined || value.startsWith('--')) throw errors.usage(`option --${name} needs a value`);
        flags.set(name, value);
        i++;
      }
    } else positionals.push(a);
  }
  return { positionals, flags };
}

export class Args {
  constructor(
    private readonly parsed: ParsedArgs,
    private readonly command: string,
  ) {}

  /** Refuses any flag the command does not know. */
  allow(...names: string[]): this {
    const known = new Set([...names, 'state', 'help']);
    for (const name of this.parsed.flags.keys()) {
      if (!known.has(name)) throw errors.usage(`'${this.command}' does not take --${name}`);
    }
    return this;
  }

  positional(i: number, what: string): string {
    const v = this.parsed.positionals[i];
    if (v === undefined) throw errors.usage(`'${this.command}' needs ${what}`);
    return v;
  }

  optionalPositional(i: number): string | undefined {
    return this.parsed.positionals[i];
  }

  maxPositionals(n: number): this {
    if (this.parsed.positionals.length > n) {
      throw errors.usage(`'${this.command}' got unexpected argument '${this.parsed.positionals[n]}'`);
    }
    return this;
  }

  string(name: string): string | undefined {
    const v = this.parsed.flags.get(name);
    if (v === true) throw errors.usage(`option --${name} needs a value`);
    return v;
  }

  /** Whether the flag was given at all (as --name or --name=VALUE). */
  has(name: string): boolean {
    return this.parsed.flags.has(name);
  }

  /** The raw value of a flag that may be bare (`true`) or carry a value. */
  raw(name: string): string | true | undefined {
    return this.parsed.flags.get(name);
  }

  bool(name: string): boolean {
    return this.parsed.flags.get(name) === true || this.parsed.flags.get(name) === 'true';
  }

  int(name: string, label = `--${name}`): number | undefined {
    const v = this.string(name);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw errors.invalid(name, `${label} must be a whole number, got '${v}'`);
    return Number(v);
  }
}
