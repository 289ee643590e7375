#!/usr/bin/env node
/**
 * The `ferry` command, on commander: one file per noun under commands/,
 * options per command, `--help` on every command, `ferry completion bash`.
 * Exit codes: 0 success, 1 the operation failed, 2 bad usage or invalid
 * input. Errors are one line on stderr starting `error:`.
 */
import path from 'node:path';
import { Command } from 'commander';
import { defaultStateDir } from '../config/paths.js';
import { systemClock } from '../domain/clock.js';
import { toFerryError } from '../domain/errors.js';
import { openLayout } from '../config/host-config.js';
import { backupCommands } from './commands/backup.js';
import { clusterCommands } from './commands/cluster.js';
import { hostCommands } from './commands/host.js';
import { imageCommands } from './commands/image.js';
import { labCommands } from './commands/lab.js';
import { runDemo } from './commands/demo.js';
import { migrationCommands } from './commands/migration.js';
import { netCommands } from './commands/net.js';
import { nodeCommands } from './commands/node.js';
import { replicaCommands } from './commands/replica.js';
import { vmCommands } from './commands/vm.js';
import { Cluster, HelpShown, command, configure } from './context.js';
import { print } from './output.js';

export { Cluster } from './context.js';

/** The command tree; `exit` records the code a command wants besides success. */
export function program(): { program: Command; code: () => number } {
  let code = 0;
  const done = (c: number) => {
    code = c;
  };
  const p = configure(new Command('ferry'));
  p.description('a virtualization cluster manager: real QEMU VMs on a cluster of hosts, moved live between them')
    .option('--state <DIR>', 'the state directory (default $FERRY_STATE or ~/.ferry)')
    .addHelpText(
      'after',
      '\nworkloads: idle | memory:<MiB/s> | tcp | tcp-client:<VM> | disk:<writes/s>\nstate directory: --state DIR, or $FERRY_STATE, default ~/.ferry',
    );
  const layout = () => openLayout(path.resolve((p.opts() as { state?: string }).state ?? defaultStateDir()));
  const connect = () => Cluster.connect(layout());
  clusterCommands(p, layout, connect, done);
  hostCommands(p, layout, connect);
  nodeCommands(p, connect, done);
  vmCommands(p, connect, done);
  migrationCommands(p, connect);
  netCommands(p, connect);
  backupCommands(p, connect);
  replicaCommands(p, connect, done);
  labCommands(p, layout, done);
  imageCommands(p, connect);
  command(p, 'demo', 'a self-contained tour: live-migrate a VM under load (on a lab of 3 hosts as root, else on the single-machine cluster)')
    .option('--single', 'on the single-machine cluster even as root')
    .option('--json', 'print the migration report as JSON')
    .action(async (o: { json?: boolean; single?: boolean }) => done(await runDemo({ json: o.json === true, single: o.single === true })));
  command(p, 'completion', 'print a shell completion script (bash: eval "$(ferry completion bash)")')
    .argument('<shell>', 'a shell (bash)')
    .action((shell: string) => {
      if (shell !== 'bash') throw toFerryError(new Error(`no completion for '${shell}' (bash only)`));
      print(bashCompletion(p));
    });
  return { program: p, code: () => code };
}

/** A bash completion script from the command tree: commands, then each command's options. */
export function bashCompletion(root: Command): string {
  const cases: string[] = [];
  const walk = (cmd: Command, words: string[]) => {
    const subs = cmd.commands.map((c) => c.name());
    const opts = cmd.options.map((o) => o.long).filter(Boolean);
    cases.push(`    "${words.join(' ')}") words="${[...subs, ...opts, '--help'].join(' ')}" ;;`);
    for (const c of cmd.commands) walk(c, [...words, c.name()]);
  };
  walk(root, []);
  return `# ferry bash completion: eval "$(ferry completion bash)"
_ferry() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" w words=""
  for w in "\${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
    case "$w" in -*) ;; *) path="\${path:+$path }$w" ;; esac
  done
  while :; do
    case "$path" in
${cases.join('\n')}
      *) case "$path" in *" "*) path="\${path% *}" ;; *) path="" ;; esac; continue ;;
    esac
    break
  done
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
}
complete -F _ferry ferry`;
}

export async function cli(argv: string[]): Promise<number> {
  const { program: p, code } = program();
  try {
    if (argv.length === 0) {
      p.outputHelp({ error: true });
      return 2;
    }
    await p.parseAsync(argv, { from: 'user' });
    return code();
  } catch (e) {
    if (e instanceof HelpShown) return e.exitCode;
    const err = toFerryError(e);
    process.stderr.write(`error: ${err.message}\n`);
    return err.exitCode;
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/ferry') || process.argv[1]?.endsWith('cli/main.js')) {
  // A closed pipe (`ferry … | head -1`) ends the command quietly, like other Unix tools.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  void cli(process.argv.slice(2)).then(async (code) => {
    process.exitCode = code;
    // Let pending writes flush, then leave even if a console socket lingers.
    await systemClock.sleep(50);
    process.exit(code);
  });
}
