/**
 * A VM's cloud-init NoCloud seed (meta-data, user-data, network-config):
 * the hostname is the VM's name, the SSH keys go to the image's default
 * user, and the network is Ferry's address for the VM on its NIC (found by
 * its MAC). Pure: the controller writes the files into an ISO labelled
 * `cidata`, which cloud-init finds on a CD-ROM.
 */
import { parseDocument, stringify } from 'yaml';

export const SEED_LABEL = 'cidata';

/** One public key line as ssh-keygen writes it. */
const SSH_KEY =
  /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]{16,16384}( [^\r\n]{0,256})?$/;

/** The keys of a public key file, or why it is not one (one line). */
export function parseSshKeys(text: string, source: string): string[] | { error: string } {
  const keys = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (keys.length === 0) return { error: `${source} holds no SSH public key` };
  const bad = keys.findIndex((k) => !SSH_KEY.test(k));
  if (bad >= 0) return { error: `${source} line ${bad + 1} is not an SSH public key (like 'ssh-ed25519 AAAA… user@host')` };
  return keys;
}

/** The user's #cloud-config as a mapping, or why it is not one (one line, with the YAML error's position). */
export function parseCloudConfig(text: string, source: string): { config: Record<string, unknown> } | { error: string } {
  if (!/^#cloud-config[ \t]*\r?\n/.test(text + '\n')) return { error: `${source} is not a #cloud-config document (its first line must be '#cloud-config')` };
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const before = text.slice(0, e.pos[0]).split('\n');
    const at = ` at line ${before.length}, column ${before.at(-1)!.length + 1}`;
    return { error: `${source} is not valid YAML${at}: ${e.message.split('\n')[0]}` };
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return { config: {} };
  if (typeof value !== 'object' || Array.isArray(value)) return { error: `${source} must be a YAML mapping of cloud-config keys` };
  return { config: value as Record<string, unknown> };
}

export interface SeedInput {
  name: string;
  /** Unique per VM (cloud-init runs its once-per-instance modules again for a new id). */
  instanceId: string;
  mac: string;
  /** Address with prefix (10.99.0.5/16). */
  ip: string;
  userConfig?: Record<string, unknown>;
  sshKeys?: string[];
}

/** The seed's three files. */
export function cloudInitSeed(s: SeedInput): Record<'meta-data' | 'user-data' | 'network-config', string> {
  const config: Record<string, unknown> = { ...(s.userConfig ?? {}) };
  if (s.sshKeys?.length) {
    const given = Array.isArray(config.ssh_authorized_keys) ? (config.ssh_authorized_keys as unknown[]) : [];
    config.ssh_authorized_keys = [...given, ...s.sshKeys];
  }
  const network = {
    version: 1,
    config: [{ type: 'physical', name: 'eth0', mac_address: s.mac, subnets: [{ type: 'static', address: s.ip }] }],
  };
  return {
    'meta-data': stringify({ 'instance-id': s.instanceId, 'local-hostname': s.name }),
    'user-data': `#cloud-config\n${Object.keys(config).length ? stringify(config) : ''}`,
    'network-config': stringify(network),
  };
}
