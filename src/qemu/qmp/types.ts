/**
 * The slice of QEMU's QAPI schema Ferry speaks (QEMU 7.2, qapi/migration.json,
 * qapi/run-state.json, qapi/machine-target.json). Names stay QEMU's here;
 * the rest of Ferry only sees the QEMU driver's own words.
 */

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export type QemuRunState =
  | 'running'
  | 'paused'
  | 'inmigrate'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'suspended'
  | 'shutdown'
  | 'internal-error'
  | 'io-error'
  | 'debug'
  | 'save-vm'
  | 'colo'
  | 'guest-panicked'
  | 'watchdog';

export type QemuMigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

export interface QemuMigrationRam {
  transferred: number;
  remaining: number;
  total: number;
  duplicate: number;
  normal: number;
  'normal-bytes': number;
  'dirty-pages-rate': number;
  mbps: number;
  'dirty-sync-count': number;
  'postcopy-requests': number;
  'page-size': number;
  'multifd-bytes': number;
  'pages-per-second': number;
  'precopy-bytes'?: number;
  'downtime-bytes'?: number;
  'postcopy-bytes'?: number;
}

export interface QemuMigrationInfo {
  status?: QemuMigrationStatus;
  ram?: QemuMigrationRam;
  'total-time'?: number;
  'expected-downtime'?: number;
  downtime?: number;
  'setup-time'?: number;
  'cpu-throttle-percentage'?: number;
  'error-desc'?: string;
  'blocked-reasons'?: string[];
}

export interface QemuCpuModelExpansion {
  model: { name: string; props?: Record<string, unknown> };
}

export interface QemuDirtyRateInfo {
  'dirty-rate'?: number;
  status: 'unstarted' | 'measuring' | 'measured';
  'start-time': number;
  'calc-time': number;
  'sample-pages': number;
  mode?: string;
}

type Cmd<A, R> = { args: A; ret: R };
type NoArgs = Record<string, never>;

export interface QmpCommands {
  qmp_capabilities: Cmd<NoArgs, Record<string, never>>;
  'query-status': Cmd<NoArgs, { running: boolean; status: QemuRunState; singlestep?: boolean }>;
  'query-version': Cmd<NoArgs, { qemu: { major: number; minor: number; micro: number }; package: string }>;
  cont: Cmd<NoArgs, Record<string, never>>;
  stop: Cmd<NoArgs, Record<string, never>>;
  quit: Cmd<NoArgs, Record<string, never>>;
  system_powerdown: Cmd<NoArgs, Record<string, never>>;
  'migrate-set-capabilities': Cmd<{ capabilities: { capability: string; state: boolean }[] }, Record<string, never>>;
  'migrate-set-parameters': Cmd<Record<string, unknown>, Record<string, never>>;
  'query-migrate-parameters': Cmd<NoArgs, Record<string, unknown>>;
  migrate: Cmd<{ uri: string; detach?: boolean; resume?: boolean }, Record<string, never>>;
  'migrate-incoming': Cmd<{ uri: string }, Record<string, never>>;
  migrate_cancel: Cmd<NoArgs, Record<string, never>>;
  'migrate-continue': Cmd<{ state: QemuMigrationStatus }, Record<string, never>>;
  'migrate-start-postcopy': Cmd<NoArgs, Record<string, never>>;
  'query-migrate': Cmd<NoArgs, QemuMigrationInfo>;
  'announce-self': Cmd<Record<string, unknown>, Record<string, never>>;
  'query-cpu-model-expansion': Cmd<{ type: 'static' | 'full'; model: { name: string; props?: Record<string, unknown> } }, QemuCpuModelExpansion>;
  'query-cpu-definitions': Cmd<NoArgs, { name: string; unavailable_features?: string[]; static: boolean }[]>;
  'calc-dirty-rate': Cmd<{ 'calc-time': number; 'calc-time-unit'?: 'second' | 'millisecond'; 'sample-pages'?: number; mode?: string }, Record<string, never>>;
  pmemsave: Cmd<{ val: number; size: number; filename: string }, Record<string, never>>;
  'x-query-virtio-status': Cmd<{ path: string }, { 'host-features': { 'dev-features'?: string[] }; 'guest-features': { 'dev-features'?: string[] } }>;
  'query-dirty-rate': Cmd<NoArgs, QemuDirtyRateInfo>;
  'human-monitor-command': Cmd<{ 'command-line': string }, string>;
}
