/**
 * What the controller's API adapter (src/api/) is given: the application
 * services the composition root (app.ts) built. The API calls these and
 * nothing else of the controller.
 */
import type { Failover } from './failover.js';
import type { ControllerDirectory } from './core/controllers.js';
import type { Clock } from '../domain/clock.js';
import type { ClusterConfig } from '../domain/cluster.js';
import type { MigrationRecord } from '../domain/migration.js';
import type { NodeLoad } from '../domain/placement.js';
import type { Duplex } from 'node:stream';
import type { GuestReport, NicLink, RunState, VmRecord } from '../domain/records.js';
import type { EventLog } from '../ports/events.js';
import type { StoreHealth } from '../ports/store.js';
import type { SwitchControl } from '../ports/switch-control.js';
import type { VmRepository } from '../ports/vm-repository.js';
import type { Volume } from '../ports/volume.js';
import type { Balancer } from './balancer.js';
import type { StoreNodes } from './core/nodes.js';
import type { StoreSettings } from './core/settings.js';
import type { CpuBaselines } from './cpu-baselines.js';
import type { Lifecycle } from './lifecycle.js';
import type { Maintenance } from './maintenance.js';
import type { Joining } from './joining.js';
import type { Membership } from './membership.js';
import type { Migrations } from './migration/service.js';
import type { ClusterNetworks } from './network/networks.js';
import type { VirtualSwitches } from './network/switches.js';
import type { IncomingReplicas } from './replica/incoming.js';
import type { Replicas } from './replica/replicas.js';
import type { Backups } from './storage/backups.js';
import type { BackupSchedules } from './storage/schedules.js';
import type { Images } from './storage/images.js';

export interface ControllerInfo {
  pid: number;
  /** The API's base URL. */
  url(): string;
  /** Where a browser opens the console. */
  consoleUrl(): string;
  /** The file that holds the API token. */
  tokenFile: string;
  /** The store's backend and whether it answers. */
  store(): StoreHealth;
}

export interface ControllerServices {
  config: () => ClusterConfig;
  info: ControllerInfo;
  token: string;
  clock: Clock;
  nodes: StoreNodes;
  loads: () => Promise<NodeLoad[]>;
  vms: VmRepository;
  lifecycle: Lifecycle;
  migrations: Migrations;
  maintenance: Maintenance;
  balancer: Balancer;
  membership: Membership;
  /** Join and login tokens, on a cluster of real hosts. */
  joining?: Joining;
  networks: ClusterNetworks;
  switches: VirtualSwitches;
  switchControl: SwitchControl;
  backups: Backups;
  schedules: BackupSchedules;
  images: Images;
  replicas: Replicas;
  incoming: IncomingReplicas;
  /** Host leases (renewed by heartbeats), HA restarts and lost VMs. */
  failover: Failover;
  controllers: ControllerDirectory;
  /** The leadership this controller leads under (on etcd; absent: a lone controller on SQLite). */
  leadership?: () => number | undefined;
  events: EventLog;
  settings: StoreSettings;
  baselines: CpuBaselines;
  volume: Volume;
  /** What a VM's NIC offers and its guest negotiated, asked of its node (for `vm show`). */
  /** Where a VM's screen is (it runs, with its own OS); throws naming why not. */
  displayTarget: (vm: string) => Promise<{ vm: string; node: string }>;
  /** The VM's screen through its node's agent (RFB bytes both ways). */
  displayOf: (vm: string) => Promise<Duplex>;
  /** What a running VM's guest agent says of it (a VM with its own OS). */
  guestOf: (vm: string) => Promise<GuestReport>;
  nicOf: (vm: string) => Promise<{ backend: string; offered: string[]; negotiated: string[] } | undefined>;
  /** Cancels every migration and shuts every VM down, each guest given `shutdownTimeoutMs` (`ferry down`). */
  down: (shutdownTimeoutMs: number) => Promise<{ stopped: string[]; forced: string[] }>;
  /** A VM with its running migration and its process's run state and NIC link as its node reports them. */
  viewVm: (vm: VmRecord) => Promise<VmRecord & { migrationId?: string; migration?: Partial<MigrationRecord>; runState?: RunState; network?: NicLink }>;
  /** The start actions after a `ferry down` (run once, when the nodes are up; later calls answer the same). */
  startActions: () => Promise<{ started: string[]; failed: { vm: string; error: string }[] }>;
}
