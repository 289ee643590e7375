/**
 * What every CLI command shares: the state directory, the typed client of
 * the running cluster's controller, a command tree whose mistakes are one
 * line in Ferry's words, and following a migration to its end.
 */
import { Command, type CommanderError } from 'commander';
import { ApiClient } from '../api/client.js';
import { migrationRoutes } from '../api/routes/migrations.js';
import { readEndpoint, readToken } from '../config/cluster-config.js';
import { controllerUrls, readClientConfig } from '../config/host-config.js';
import { tlsFetch } from '../api/tls.js';
import { ErrorCode, FerryError, errors, isFerryError } from '../domain/errors.js';
import type { StateLayout } from '../domain/layout.js';
import type { MigrationRecord, MigrationReport } from '../domain/migration.js';
import { pidAlive } from '../system/process.js';

/** The running cluster's controller, found through the state directory. */
export class Cluster {
  constructor(
    readonly layout: StateLayout,
    readonly api: ApiClient,
    readonly token: string,
  ) {}

  static connect(layout: StateLayout): Cluster {
    // A CLI of a cluster of real hosts (`ferry init`, `ferry login`): HTTPS to the controller, verified against the cluster's CA.
    const client = readClientConfig(layout);
    if (client) {
      const urls = controllerUrls(client);
      let at = 0;
      const api = new ApiClient({ baseUrl: () => urls[at]!, token: client.token, fetch: tlsFetch({ caPem: client.caPem }), timeoutMs: 60_000 });
      return new Cluster(
        layout,
        nextControllerWhenUnreachable(api, urls.length, () => (at = (at + 1) % urls.length)),
        client.token,
      );
    }
    const endpoint = readEndpoint(layout, 'controller');
    const token = readToken(layout);
    if (!endpoint || !token || !pidAlive(endpoint.pid)) throw errors.clusterNotRunning(layout.dir);
    const base = new ApiClient({ baseUrl: endpoint.url, token, timeoutMs: 60_000 });
    return new Cluster(layout, notRunningWhenUnreachable(base, layout), token);
  }

  get baseUrl(): string {
    return this.api.baseUrl;
  }
}

/** How long the CLI keeps looking for a controller that answers: a standby leads within its lease and a start. */
const TAKEOVER_WAIT_MS = 15_000;

/**
 * A controller nobody listens at (it died, or it was the leader and a
 * standby is taking over) or a standby that knows no leader yet sends the
 * request to the next one, round and round for up to TAKEOVER_WAIT_MS; a
 * request cut off in the middle is not repeated (it may have happened).
 */
function nextControllerWhenUnreachable(api: ApiClient, count: number, next: () => void): ApiClient {
  const call = api.call.bind(api);
  const open = api.open.bind(api);
  const retry = async <T>(fn: () => Promise<T>, method: string): Promise<T> => {
    const deadline = Date.now() + TAKEOVER_WAIT_MS;
    let refusals = 0;
    for (let i = 1; ; i++) {
      try {
        return await fn();
      } catch (e) {
        // A read cut off in the middle is asked again (it changed nothing); a change is not. A standby that
        // could not forward (no leader yet) did nothing with the request.
        const unreachable = isFerryError(e, ErrorCode.AgentUnreachable) && (e.details.duringRequest !== true || method === 'get');
        const standby = isFerryError(e, ErrorCode.NotLeader) && e.details.standby === true;
        if (!(unreachable || standby) || Date.now() > deadline) throw e;
        // A standby that answered is asked again (it leads or knows the new leader soon); one that did not answer is passed over.
        if (standby && ++refusals % 3 !== 0) {
          await new Promise((r) => setTimeout(r, 300));
          continue;
        }
        next();
        if (i % count === 0) await new Promise((r) => setTimeout(r, 300));
      }
    }
  };
  api.call = ((route, input, opts) => retry(() => call(route, input, opts), route.method)) as ApiClient['call'];
  api.open = ((route, input, opts) => retry(() => open(route, input, opts), route.method)) as ApiClient['open'];
  return api;
}

/** A controller that does not answer is a cluster that is not running. */
function notRunningWhenUnreachable(api: ApiClient, layout: StateLayout): ApiClient {
  const call = api.call.bind(api);
  const open = api.open.bind(api);
  const wrap = <T>(p: Promise<T>): Promise<T> =>
    p.catch((e: unknown) => {
      // Nobody listening is a cluster that is not running (exit 2); a controller lost in the middle of a request is a failed operation (exit 1).
      if (isFerryError(e, ErrorCode.AgentUnreachable) && e.details.url === api.baseUrl && e.details.duringRequest !== true)
        throw errors.clusterNotRunning(layout.dir);
      throw e;
    });
  api.call = ((route, input, opts) => wrap(call(route, input, opts))) as ApiClient['call'];
  api.open = ((route, input, opts) => wrap(open(route, input, opts))) as ApiClient['open'];
  return api;
}

/** Waits for a migration to end, calling `onUpdate` with each state. */
export async function followMigration(
  api: ApiClient,
  id: string,
  onUpdate: (m: MigrationRecord) => void,
  sleep: (ms: number) => Promise<void>,
): Promise<MigrationRecord & { report: MigrationReport }> {
  for (;;) {
    const m = (await api.call(migrationRoutes.show, { params: { id } })) as MigrationRecord & { report?: MigrationReport };
    onUpdate(m);
    if (m.report) return m as MigrationRecord & { report: MigrationReport };
    await sleep(200);
  }
}

/** A command's words as a user typed them: 'vm create'. */
function wordsOf(cmd: Command): string {
  const words: string[] = [];
  for (let c: Command | null = cmd; c && c.parent; c = c.parent) words.unshift(c.name());
  return words.join(' ');
}

/** Commander's complaints about what was typed, as Ferry's one-line usage errors. */
function translate(err: CommanderError, cmd: Command): FerryError {
  const words = wordsOf(cmd);
  const quoted = /'([^']+)'/.exec(err.message)?.[1] ?? '';
  switch (err.code) {
    case 'commander.unknownOption':
      return errors.usage(`'${words || 'ferry'}' does not take ${quoted}`);
    case 'commander.missingArgument': {
      const arg = cmd.registeredArguments.find((a) => a.name() === quoted);
      return errors.usage(`'${words}' needs ${arg?.description || quoted}`);
    }
    case 'commander.unknownCommand':
      return errors.usage(words ? `unknown command '${words} ${quoted}' (see 'ferry ${words} --help')` : `unknown command '${quoted}' (see 'ferry help')`);
    case 'commander.excessArguments': {
      const extra = cmd.args[cmd.registeredArguments.length];
      return errors.usage(`'${words}' got unexpected argument '${extra ?? ''}'`);
    }
    case 'commander.optionMissingArgument':
      return errors.usage(`option ${quoted.split(' ')[0]} needs a value`);
    case 'commander.missingMandatoryOptionValue':
      return errors.usage(`'${words}' needs ${quoted}`);
    default:
      return errors.usage(err.message.replace(/^error: /, ''));
  }
}

/** Help and version output end the program with this code. */
export class HelpShown extends Error {
  constructor(readonly exitCode: number) {
    super('help shown');
  }
}

/** A command whose mistakes come back as FerryErrors (and whose help is printed, not exited on). */
export function command(parent: Command, spec: string, description: string): Command {
  const cmd = parent.command(spec).description(description);
  configure(cmd);
  return cmd;
}

export function configure(cmd: Command): Command {
  return cmd
    .exitOverride((err) => {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') throw new HelpShown(0);
      if (err.code === 'commander.help') {
        // A command group typed without one of its commands.
        throw cmd.parent ? errors.usage(`'${wordsOf(cmd)}' needs a command (see 'ferry ${wordsOf(cmd)} --help')`) : new HelpShown(0);
      }
      throw translate(err, cmd);
    })
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? '' : s), outputError: () => {} })
    .showSuggestionAfterError(false)
    .allowExcessArguments(false);
}

/** Digits as a number; anything else goes to the API as typed, whose schema says what is wrong with it. */
export function numberOrText(v: string): number | string {
  return /^\d+$/.test(v) ? Number(v) : v;
}

/** A whole number the CLI needs itself (not checked by the API). */
export function wholeNumber(label: string): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v)) throw errors.usage(`${label} must be a whole number, got '${v}'`);
    return Number(v);
  };
}
