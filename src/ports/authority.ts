/** The cluster's certificate authority, as the controller's parts see it: it signs a joining host's key. */
export interface ClusterAuthority {
  /** The CA's certificate (PEM), which every host and client trusts. */
  readonly caPem: string;
  /** SHA-256 of the CA's certificate, hex: what tokens carry. */
  readonly fingerprint: string;
  /** A host certificate for `publicKeyPem`, naming the host and its addresses. */
  issueHost(req: { publicKeyPem: string; name: string; addresses: string[] }): string;
  /** A controller certificate for another host that runs a controller (it serves the API and calls the agents). */
  issueController(req: { publicKeyPem: string; name: string; addresses: string[] }): string;
  /** The CA's key (PEM), handed only to a host that joins as a controller: a leader signs the hosts that join. */
  readonly caKeyPem: string;
}
