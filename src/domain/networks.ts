/**
 * Cluster networks (R6). Each network has a subnet, a role, a metric (lower
 * is preferred) and each node's address on it. Migrations pick the
 * best-ranked network both nodes can reach each other on: `migration`
 * networks by metric first, then `management` ones; `storage` and `none`
 * networks never carry a migration.
 *
 * The local cluster gives every cluster its own loopback block 127.B.0.0/16
 * and each network a /24 in it, so each node has a distinct address per
 * network and a network can really fail (an unreachable route to an address).
 */

export const NETWORK_ROLES = ['management', 'migration', 'storage', 'none'] as const;
export type NetworkRole = (typeof NETWORK_ROLES)[number];

export interface ClusterNetwork {
  name: string;
  subnet: string;
  role: NetworkRole;
  /** Lower is preferred among networks of one role. */
  metric: number;
  /** Each node's address on this network. */
  addresses: Record<string, string>;
}

/** Where a node listens on one network: its address, and the port that answers reachability probes. */
export interface NetworkEndpoint {
  address: string;
  port: number;
}

export const METRIC_RANGE = { min: 1, max: 100_000 } as const;

/** The networks of a new local cluster: management, migration and storage, each a /24 of 127.B.0.0/16. */
export function defaultNetworks(nodes: string[], block: number): ClusterNetwork[] {
  const layout: [string, number, NetworkRole, number][] = [
    ['management', 0, 'management', 1000],
    ['migration', 1, 'migration', 100],
    ['storage', 2, 'storage', 500],
  ];
  return layout.map(([name, third, role, metric]) => ({
    name,
    subnet: `127.${block}.${third}.0/24`,
    role,
    metric,
    addresses: Object.fromEntries(nodes.map((n, i) => [n, `127.${block}.${third}.${i + 1}`])),
  }));
}

function ipv4(address: string): number | undefined {
  const parts = address.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

/** Whether an IPv4 address lies in a subnet written as `A.B.C.D/N`. */
export function inSubnet(address: string, subnet: string): boolean {
  const [base, bits] = subnet.split('/');
  const a = ipv4(address);
  const b = ipv4(base ?? '');
  const n = Number(bits);
  if (a === undefined || b === undefined || !Number.isInteger(n) || n < 0 || n > 32) return false;
  const size = 2 ** (32 - n);
  return Math.floor(a / size) === Math.floor(b / size);
}

/** A loopback block no other cluster on this host is likely to use (127.0.0.0/16 stays the host's own). */
export function randomBlock(): number {
  return 2 + Math.floor(Math.random() * 250);
}

export interface NetworkCandidate {
  network: ClusterNetwork;
  from: string;
  to: string;
}

export interface Candidates {
  /** In the order a migration tries them. */
  candidates: NetworkCandidate[];
  /** Networks that cannot carry this migration at all, and why. */
  excluded: { network: string; reason: string }[];
}

const ROLE_RANK: Partial<Record<NetworkRole, number>> = { migration: 0, management: 1 };

/** The networks a migration between two nodes may use, best first. Pure. */
export function migrationCandidates(networks: ClusterNetwork[], from: string, to: string): Candidates {
  const out: Candidates = { candidates: [], excluded: [] };
  const usable = [...networks].sort((a, b) => (ROLE_RANK[a.role] ?? 9) - (ROLE_RANK[b.role] ?? 9) || a.metric - b.metric || a.name.localeCompare(b.name));
  for (const n of usable) {
    if (ROLE_RANK[n.role] === undefined) {
      out.excluded.push({ network: n.name, reason: `role ${n.role}` });
    } else if (!n.addresses[from] || !n.addresses[to]) {
      out.excluded.push({ network: n.name, reason: `no address for ${!n.addresses[from] ? from : to}` });
    } else {
      out.candidates.push({ network: n, from: n.addresses[from]!, to: n.addresses[to]! });
    }
  }
  return out;
}
