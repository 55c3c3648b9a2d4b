/** The server CA bundle the workers verify Cloud SQL against. Pure. */

/** One entry of `gcp.sql.getCaCerts`: a CA the instance trusts. */
export interface TrustedCa {
  readonly cert: string;
  readonly sha1Fingerprint: string;
}

/**
 * Every CA the instance trusts — the current one and, during a rotation, the upcoming one — as one PEM bundle.
 * `serverCaCerts` of the instance holds only the current CA, so after a rotation the workers would refuse the
 * server until the next `pulumi up`; with the upcoming CA already in the bundle they accept both. Ordered by
 * fingerprint and deduplicated, so the same set of CAs renders the same template.
 */
export function caBundle(cas: readonly TrustedCa[]): string {
  const byFingerprint = new Map<string, string>();
  for (const ca of cas) {
    const pem = ca.cert.trim();
    if (pem !== '') byFingerprint.set(ca.sha1Fingerprint || pem, pem);
  }
  return [...byFingerprint.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, pem]) => pem)
    .join('\n');
}
