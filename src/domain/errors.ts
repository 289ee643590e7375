/**
 * Ferry's one error type. Code branches on `code`, never on message text.
 * One table (`ERROR_CLASSES`) maps each code to its HTTP status and CLI exit
 * code, so the API and the CLI agree on what a failure means.
 */

export const ErrorCode = {
  // bad input or refused request (exit 2)
  InvalidArgument: 'invalid-argument',
  Usage: 'usage',
  VmNotFound: 'vm-not-found',
  NodeNotFound: 'node-not-found',
  MigrationNotFound: 'migration-not-found',
  AlreadyExists: 'already-exists',
  InvalidState: 'invalid-state',
  NotClusterMember: 'not-cluster-member',
  InsufficientResources: 'insufficient-resources',
  Conflict: 'conflict',
  /** A disk has no change bitmap to build an incremental backup on. */
  BitmapMissing: 'bitmap-missing',
  Unauthorized: 'unauthorized',
  /** A request body past the limit. */
  TooLarge: 'too-large',
  ClusterNotRunning: 'cluster-not-running',
  // the operation was attempted and failed (exit 1)
  QmpError: 'qmp-error',
  QemuDied: 'qemu-died',
  Timeout: 'timeout',
  Aborted: 'aborted',
  AgentUnreachable: 'agent-unreachable',
  /** The cluster store (etcd) does not answer. */
  StoreUnavailable: 'store-unavailable',
  /** A controller that no longer leads tried to write (its leadership ended; another controller leads). */
  NotLeader: 'not-leader',
  MigrationFailed: 'migration-failed',
  ImageBuild: 'image-build',
  Internal: 'internal',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

interface ErrorClass {
  httpStatus: number;
  exitCode: 1 | 2;
  retryable: boolean;
}

export const ERROR_CLASSES: Record<ErrorCode, ErrorClass> = {
  'invalid-argument': { httpStatus: 400, exitCode: 2, retryable: false },
  usage: { httpStatus: 400, exitCode: 2, retryable: false },
  'vm-not-found': { httpStatus: 404, exitCode: 2, retryable: false },
  'node-not-found': { httpStatus: 404, exitCode: 2, retryable: false },
  'migration-not-found': { httpStatus: 404, exitCode: 2, retryable: false },
  'already-exists': { httpStatus: 409, exitCode: 2, retryable: false },
  'invalid-state': { httpStatus: 409, exitCode: 2, retryable: false },
  'not-cluster-member': { httpStatus: 422, exitCode: 2, retryable: false },
  'insufficient-resources': { httpStatus: 422, exitCode: 2, retryable: false },
  conflict: { httpStatus: 409, exitCode: 2, retryable: true },
  'bitmap-missing': { httpStatus: 409, exitCode: 2, retryable: false },
  unauthorized: { httpStatus: 401, exitCode: 2, retryable: false },
  'too-large': { httpStatus: 413, exitCode: 2, retryable: false },
  'cluster-not-running': { httpStatus: 503, exitCode: 2, retryable: true },
  'qmp-error': { httpStatus: 500, exitCode: 1, retryable: false },
  'qemu-died': { httpStatus: 500, exitCode: 1, retryable: false },
  timeout: { httpStatus: 504, exitCode: 1, retryable: true },
  aborted: { httpStatus: 499, exitCode: 1, retryable: false },
  'agent-unreachable': { httpStatus: 502, exitCode: 1, retryable: true },
  'store-unavailable': { httpStatus: 503, exitCode: 1, retryable: true },
  'not-leader': { httpStatus: 503, exitCode: 1, retryable: true },
  'migration-failed': { httpStatus: 500, exitCode: 1, retryable: true },
  'image-build': { httpStatus: 500, exitCode: 1, retryable: false },
  internal: { httpStatus: 500, exitCode: 1, retryable: false },
};

export interface FerryErrorJson {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: { details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FerryError';
    this.code = code;
    this.details = options.details ?? {};
    this.retryable = ERROR_CLASSES[code].retryable;
  }

  get httpStatus(): number {
    return ERROR_CLASSES[this.code].httpStatus;
  }

  get exitCode(): 1 | 2 {
    return ERROR_CLASSES[this.code].exitCode;
  }

  toJSON(): FerryErrorJson {
    const out: FerryErrorJson = { code: this.code, message: this.message };
    if (Object.keys(this.details).length > 0) out.details = this.details;
    return out;
  }

  static fromJSON(json: FerryErrorJson): FerryError {
    const code = typeof json.code === 'string' && Object.hasOwn(ERROR_CLASSES, json.code) ? json.code : ErrorCode.Internal;
    return new FerryError(code, json.message, { details: json.details });
  }
}

export function isFerryError(e: unknown, code?: ErrorCode): e is FerryError {
  return e instanceof FerryError && (code === undefined || e.code === code);
}

/** Wraps anything thrown into a FerryError, keeping the original as cause. */
export function toFerryError(e: unknown): FerryError {
  if (e instanceof FerryError) return e;
  if (e instanceof Error && e.name === 'AbortError') return new FerryError(ErrorCode.Aborted, 'operation aborted', { cause: e });
  const message = e instanceof Error ? e.message : String(e);
  return new FerryError(ErrorCode.Internal, message, { cause: e });
}

/** Factories: one per thing that goes wrong, so messages stay consistent. */
export const errors = {
  invalid: (what: string, message: string) => new FerryError(ErrorCode.InvalidArgument, message, { details: { field: what } }),
  usage: (message: string) => new FerryError(ErrorCode.Usage, message),
  vmNotFound: (name: string) => new FerryError(ErrorCode.VmNotFound, `unknown VM '${name}'`, { details: { vm: name } }),
  nodeNotFound: (name: string) => new FerryError(ErrorCode.NodeNotFound, `unknown node '${name}'`, { details: { node: name } }),
  migrationNotFound: (id: string) => new FerryError(ErrorCode.MigrationNotFound, `unknown migration '${id}'`, { details: { migration: id } }),
  alreadyExists: (kind: string, name: string) => new FerryError(ErrorCode.AlreadyExists, `${kind} '${name}' already exists`, { details: { kind, name } }),
  invalidState: (message: string, details: Record<string, unknown> = {}) => new FerryError(ErrorCode.InvalidState, message, { details }),
  notClusterMember: (node: string) =>
    new FerryError(
      ErrorCode.NotClusterMember,
      `node '${node}' is not a member of this cluster: live migration only moves VMs between hosts of the same cluster`,
      { details: { node } },
    ),
  insufficientResources: (message: string, details: Record<string, unknown> = {}) => new FerryError(ErrorCode.InsufficientResources, message, { details }),
  conflict: (message: string, details: Record<string, unknown> = {}) => new FerryError(ErrorCode.Conflict, message, { details }),
  unauthorized: (message = 'missing or wrong API token') => new FerryError(ErrorCode.Unauthorized, message),
  tooLarge: (maxBytes: number) =>
    new FerryError(ErrorCode.TooLarge, `the request body is larger than ${maxBytes >= 1 << 20 ? `${maxBytes / (1 << 20)} MiB` : `${maxBytes} bytes`}`, {
      details: { maxBytes },
    }),
  strangerHeartbeat: (node: string, clusterId?: string) =>
    new FerryError(
      ErrorCode.NotClusterMember,
      clusterId === undefined
        ? `heartbeat from node '${node}', which is not a member of this cluster`
        : `heartbeat from node '${node}' of another cluster (${clusterId})`,
      { details: { node, ...(clusterId === undefined ? {} : { clusterId }) } },
    ),
  clusterNotRunning: (stateDir: string) => new FerryError(ErrorCode.ClusterNotRunning, `no cluster is running in ${stateDir} (start one with 'ferry up')`),
  timeout: (what: string, ms: number) => new FerryError(ErrorCode.Timeout, `${what} timed out after ${ms} ms`, { details: { timeoutMs: ms } }),
  aborted: (what: string) => new FerryError(ErrorCode.Aborted, `${what} was cancelled`),
  agentUnreachable: (node: string, cause?: unknown) =>
    new FerryError(ErrorCode.AgentUnreachable, `agent of node '${node}' is unreachable`, { details: { node }, cause }),
  internal: (message: string, cause?: unknown) => new FerryError(ErrorCode.Internal, message, { cause }),
  migrationFailed: (message: string, details: Record<string, unknown> = {}) => new FerryError(ErrorCode.MigrationFailed, message, { details }),
};
