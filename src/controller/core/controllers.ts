/**
 * The cluster's controllers (`controllers/NAME` in the store): where each
 * one's API answers once it leads. Agents hear the list in every heartbeat
 * answer, and a CLI at login, so when the leader is gone they turn to the
 * next controller (a standby listens once it has taken over).
 */
import type { ClusterStore } from '../../ports/store.js';

export interface ControllerEntry {
  name: string;
  url: string;
}

export class ControllerDirectory {
  constructor(
    private readonly store: ClusterStore,
    /** This controller's URL, once it listens. */
    private readonly self: () => string,
  ) {}

  register(entry: ControllerEntry): Promise<number> {
    return this.store.put(`controllers/${entry.name}`, entry);
  }

  async list(): Promise<ControllerEntry[]> {
    return (await this.store.list<ControllerEntry>('controllers/')).map((e) => e.value);
  }

  /** Every controller's URL, this one's first. */
  async urls(): Promise<string[]> {
    const self = this.self();
    return [...new Set([...(self ? [self] : []), ...(await this.list()).map((c) => c.url)])];
  }
}
