/**
 * The cluster's certificate authority and the certificates it signs, with
 * node-forge for what Node cannot do (make certificates) and Node's own
 * crypto for the rest (keys, fingerprints, verification, TLS).
 *
 * Every certificate names its holder in CN and its role in O: `ferry
 * controller` (serves the API, calls agents) or `ferry host` (an agent:
 * serves its API to controllers, sends heartbeats). OU is the cluster id.
 * Keys are RSA 2048; a host's private key never leaves the host (it sends
 * its public key when it joins).
 */
import { X509Certificate, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import net from 'node:net';
import type Forge from 'node-forge';

// node-forge only makes certificates (init and join); loaded then, not by every daemon and CLI call.
let forgeModule: typeof Forge | undefined;
const loadForge = (): typeof Forge => (forgeModule ??= createRequire(import.meta.url)('node-forge') as typeof Forge);

export type CertRole = 'controller' | 'host';

const ROLE_ORG: Record<CertRole, string> = { controller: 'ferry controller', host: 'ferry host' };

export interface KeyPair {
  privateKeyPem: string;
  publicKeyPem: string;
}

export interface CertificateAuthority {
  certPem: string;
  keyPem: string;
}

/** Who a verified certificate says its holder is. */
export interface CertIdentity {
  name: string;
  role: CertRole;
  clusterId: string;
}

const YEAR_MS = 365 * 24 * 3600_000;

export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

function serial(): string {
  // Positive, 16 bytes: the top bit clear.
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

/** A new cluster's CA, valid for ten years. */
export function createAuthority(clusterId: string, clusterName: string, nowMs = Date.now()): CertificateAuthority {
  const forge = loadForge();
  const keys = generateKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicKeyPem);
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(nowMs - 60_000);
  cert.validity.notAfter = new Date(nowMs + 10 * YEAR_MS);
  const subject = [
    { name: 'commonName', value: `Ferry cluster ${clusterName} CA` },
    { name: 'organizationalUnitName', value: clusterId },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(keys.privateKeyPem), forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: keys.privateKeyPem };
}

export interface IssueRequest {
  publicKeyPem: string;
  name: string;
  role: CertRole;
  clusterId: string;
  /** Addresses the holder serves on (IP SANs); names go in as DNS SANs. */
  addresses: string[];
  validForMs?: number;
}

/** A certificate for a controller or a host, signed by the cluster's CA; usable for TLS server and client alike. */
export function issueCertificate(ca: CertificateAuthority, req: IssueRequest, nowMs = Date.now()): string {
  const forge = loadForge();
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(req.publicKeyPem);
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(nowMs - 60_000);
  cert.validity.notAfter = new Date(nowMs + (req.validForMs ?? 5 * YEAR_MS));
  cert.setSubject([
    { name: 'commonName', value: req.name },
    { name: 'organizationName', value: ROLE_ORG[req.role] },
    { name: 'organizationalUnitName', value: req.clusterId },
  ]);
  cert.setIssuer(caCert.subject.attributes);
  const altNames = [...new Set(['127.0.0.1', ...req.addresses])].map((a) => (net.isIP(a) ? { type: 7, ip: a } : { type: 2, value: a }));
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'subjectAltName', altNames: [...altNames, { type: 2, value: req.name }] },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(ca.keyPem), forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

/** The SHA-256 fingerprint of a certificate, as lowercase hex without colons (what join tokens carry). */
export function fingerprint(certPem: string): string {
  return new X509Certificate(certPem).fingerprint256.replace(/:/g, '').toLowerCase();
}

function attribute(subject: string, key: string): string | undefined {
  // Node's X509Certificate.subject: one `KEY=value` per line.
  return subject
    .split('\n')
    .find((l) => l.startsWith(`${key}=`))
    ?.slice(key.length + 1);
}

/** The holder a certificate names, if it is one of Ferry's (a CA's own certificate is not). */
export function identityOf(certPem: string | Buffer): CertIdentity | undefined {
  const cert = new X509Certificate(certPem);
  const name = attribute(cert.subject, 'CN');
  const org = attribute(cert.subject, 'O');
  const clusterId = attribute(cert.subject, 'OU');
  const role = (Object.keys(ROLE_ORG) as CertRole[]).find((r) => ROLE_ORG[r] === org);
  if (!name || !role || !clusterId || cert.ca) return undefined;
  return { name, role, clusterId };
}

/** Whether `certPem` was signed by the CA and is valid now. */
export function signedBy(certPem: string, caPem: string, nowMs = Date.now()): boolean {
  const cert = new X509Certificate(certPem);
  const ca = new X509Certificate(caPem);
  return cert.checkIssued(ca) && cert.verify(ca.publicKey) && Date.parse(cert.validFrom) <= nowMs && nowMs <= Date.parse(cert.validTo);
}

/** The ClusterAuthority port over the CA's certificate and key. */
export class PemAuthority {
  readonly fingerprint: string;
  constructor(
    private readonly ca: CertificateAuthority,
    private readonly clusterId: string,
  ) {
    this.fingerprint = fingerprint(ca.certPem);
  }
  get caPem(): string {
    return this.ca.certPem;
  }
  issueHost(req: { publicKeyPem: string; name: string; addresses: string[] }): string {
    return issueCertificate(this.ca, { ...req, role: 'host', clusterId: this.clusterId });
  }
  issueController(req: { publicKeyPem: string; name: string; addresses: string[] }): string {
    return issueCertificate(this.ca, { ...req, role: 'controller', clusterId: this.clusterId });
  }
  get caKeyPem(): string {
    return this.ca.keyPem;
  }
}
