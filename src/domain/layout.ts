/**
 * The layout of a cluster's state directory: where each kind of file lives.
 * Pure path arithmetic.
 */
import path from 'node:path';

/** The layout of one cluster's state directory. */
export class StateLayout {
  /** `sharedDir`: where the cluster's shared volume is mounted on this host (default: `shared` in the state directory). */
  constructor(
    readonly dir: string,
    private readonly sharedDir?: string,
  ) {}
  get token(): string {
    return path.join(this.dir, 'token');
  }
  get cluster(): string {
    return path.join(this.dir, 'cluster.json');
  }
  get store(): string {
    return path.join(this.dir, 'store.db');
  }
  /** 0700: pid files, endpoints, sockets of the daemons. */
  get run(): string {
    return path.join(this.dir, 'run');
  }
  get logs(): string {
    return path.join(this.dir, 'logs');
  }
  /** The cluster's shared volume: disks, saved states, console logs. */
  get shared(): string {
    return this.sharedDir ?? path.join(this.dir, 'shared');
  }
  /** A host's own configuration on a cluster of real hosts (`ferry init`/`ferry join`). */
  get hostConfig(): string {
    return path.join(this.dir, 'host.json');
  }
  /** Where the CLI finds its controller, token and the cluster's CA (`ferry init`, `ferry login`). */
  get clientConfig(): string {
    return path.join(this.dir, 'client.json');
  }
  /** 0700: the cluster CA (on controller hosts), this host's keys and certificates. */
  get pki(): string {
    return path.join(this.dir, 'pki');
  }
  pkiFile(name: string): string {
    return path.join(this.pki, name);
  }
  get disks(): string {
    return path.join(this.shared, 'disks');
  }
  get consoles(): string {
    return path.join(this.shared, 'consoles');
  }
  /** Saved VM states (quick migration, vm save). */
  get states(): string {
    return path.join(this.shared, 'states');
  }
  /** Backup overlays: a frozen disk's writes until the backup merges them back. */
  get overlays(): string {
    return path.join(this.shared, 'overlays');
  }
  get switchDir(): string {
    return path.join(this.run, 'switch');
  }
  daemonFile(name: string): string {
    return path.join(this.run, `${name}.json`);
  }
  daemonLog(name: string): string {
    return path.join(this.logs, `${name}.log`);
  }
  /** One socket per virtual switch and node it is bound on: the port a VM's NIC connects to on that host. */
  switchSocket(sw: string, node: string): string {
    return path.join(this.switchDir, sw, `${node}.sock`);
  }
  /** 0700 directory of a node's QMP and serial sockets. */
  nodeRun(node: string): string {
    return path.join(this.run, 'nodes', node);
  }
  diskPath(vm: string): string {
    return path.join(this.disks, `${vm}.qcow2`);
  }
  /** A UEFI VM's firmware variables, beside its disk. */
  efiVars(vm: string): string {
    return path.join(this.disks, `${vm}.vars.fd`);
  }
  /** A VM's cloud-init seed. */
  seed(vm: string): string {
    return path.join(this.shared, 'seeds', `${vm}.iso`);
  }
  consoleLog(vm: string): string {
    return path.join(this.consoles, `${vm}.log`);
  }
}
