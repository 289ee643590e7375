/** The cluster CA, host certificates, join tokens and subnets: pure rules and Node's own verification. */
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { describe, it } from 'node:test';
import { formatToken, parseDuration, parseToken } from '../../src/domain/join-token.js';
import { inSubnet } from '../../src/domain/networks.js';
import { createAuthority, fingerprint, generateKeyPair, identityOf, issueCertificate, signedBy } from '../../src/system/pki.js';

describe('the cluster CA', () => {
  const ca = createAuthority('c-1', 'ferry');
  const keys = generateKeyPair();
  const cert = issueCertificate(ca, { publicKeyPem: keys.publicKeyPem, name: 'host-2', role: 'host', clusterId: 'c-1', addresses: ['10.1.1.12'] });

  it('signs a certificate naming the host, its role, its cluster and its addresses', () => {
    assert.deepEqual(identityOf(cert), { name: 'host-2', role: 'host', clusterId: 'c-1' });
    assert.ok(signedBy(cert, ca.certPem));
    const x = new X509Certificate(cert);
    assert.match(x.subjectAltName ?? '', /IP Address:10\.1\.1\.12/);
    assert.match(x.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
    assert.ok(x.checkPrivateKey(createPrivateKey(keys.privateKeyPem)), 'made for the key the host sent');
    assert.equal(identityOf(ca.certPem), undefined, "the CA's own certificate names no holder");
  });

  it("is not another cluster's CA", () => {
    const other = createAuthority('c-2', 'ferry');
    assert.equal(signedBy(cert, other.certPem), false);
    assert.notEqual(fingerprint(other.certPem), fingerprint(ca.certPem));
    assert.match(fingerprint(ca.certPem), /^[0-9a-f]{64}$/);
  });
});

describe('join tokens', () => {
  const t = { kind: 'join' as const, id: 'a'.repeat(16), secret: 'b'.repeat(48), fingerprint: 'c'.repeat(64) };

  it('read back what they were written as', () => {
    assert.deepEqual(parseToken(formatToken(t), 'join'), t);
    assert.deepEqual(parseToken(` ${formatToken(t)}\n`, 'join'), t, 'pasted with whitespace');
  });

  it('say in one line what is wrong, without echoing the secret', () => {
    assert.deepEqual(parseToken('join.abc', 'join'), { error: "the join token is malformed (expected what 'ferry token join' prints)" });
    assert.deepEqual(parseToken(formatToken(t), 'login'), { error: "that is a join token; this needs a login token ('ferry token login')" });
  });

  it('take durations in s, m, h and d', () => {
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('2d'), 172_800_000);
    assert.equal(parseDuration('1w'), undefined);
    assert.equal(parseDuration('-1h'), undefined);
  });
});

describe('subnets', () => {
  it('hold the addresses inside them only', () => {
    assert.ok(inSubnet('10.1.2.3', '10.1.2.0/24'));
    assert.ok(!inSubnet('10.1.3.3', '10.1.2.0/24'));
    assert.ok(inSubnet('10.1.3.3', '10.1.0.0/16'));
    assert.ok(inSubnet('1.2.3.4', '0.0.0.0/0'));
    assert.ok(!inSubnet('10.1.2.300', '10.1.2.0/24'));
    assert.ok(!inSubnet('10.1.2.3', '10.1.2.0/33'));
    assert.ok(!inSubnet('10.1.2.3', 'nonsense'));
  });
});
