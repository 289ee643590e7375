/**
 * Virtual switches as cluster objects (R8): each switch, its settings and
 * its bindings (which node interface carries it). A VM's NIC attaches to one
 * switch and runs only on nodes where that switch is bound.
 */
import type { VmRecord } from './records.js';

/** The switch every node carries on eth0 and new VMs attach to. */
export const DEFAULT_SWITCH = 'default';

export interface SwitchSettings {
  /** How long a MAC stays learnt without traffic. */
  macAgeingS: number;
}

export const DEFAULT_SWITCH_SETTINGS: SwitchSettings = { macAgeingS: 300 };

export interface SwitchBinding {
  node: string;
  iface: string;
}

export interface VirtualSwitch {
  name: string;
  settings: SwitchSettings;
  bindings: SwitchBinding[];
  createdAtMs: number;
}

export interface SwitchView extends VirtualSwitch {
  vms: string[];
  runningVms: string[];
}

export interface ScrubRequest {
  inactive?: boolean;
  settings?: boolean;
  name?: string;
  force?: boolean;
}

export interface ScrubResult {
  removedSwitches: string[];
  removedBindings: string[];
  resetSettings: string[];
  disconnectedVms: string[];
}

/** Interfaces every local node has; a real host reports its NICs. */
export const NODE_INTERFACES = ['eth0', 'eth1'] as const;

/** The switch a VM's NIC is attached to ('' when disconnected). */
export function switchOf(vm: VmRecord): string {
  return vm.switch ?? DEFAULT_SWITCH;
}
