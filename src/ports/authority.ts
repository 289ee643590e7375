/** The cluster's certificate authority, as the controller's parts see it: it signs a joining host's key. */
export interface ClusterAuthority {
  /** The CA's certificate (PEM), which every host and client trusts. */
  readonly caPem: string;
  /** SHA-256 of the CA's certificate, hex: what tokens carry. */
  readonly fingerprint: string;
  /** A host certificate for `publicKeyPem`, naming the host and its addresses. */
  issueHost(req: { publicKeyPem: string; name: string; addresses: string[] }): string;
}
