import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../../src/domain/clock.js';
import { EtherType, arpRequest, icmpEchoRequest, macToBytes, parseArp, parseIcmpEcho } from '../../src/switch/ethernet.js';
import { LearningSwitch } from '../../src/switch/learning-switch.js';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';
const C = '52:54:00:00:00:0c';
const BCAST = 'ff:ff:ff:ff:ff:ff';

function frame(dst: string, src: string, etherType: number = EtherType.IPv4): Buffer {
  const f = Buffer.alloc(60);
  macToBytes(dst).copy(f, 0);
  macToBytes(src).copy(f, 6);
  f.writeUInt16BE(etherType, 12);
  return f;
}

function rig(ageingMs = 1000) {
  const clock = new ManualClock();
  const sent: [string, Buffer][] = [];
  const sw = new LearningSwitch(clock, (port, f) => sent.push([port, f]), ageingMs);
  for (const [id, node] of [
    ['n1/1', 'node-1'],
    ['n2/1', 'node-2'],
    ['n3/1', 'node-3'],
  ] as const)
    sw.addPort({ id, node });
  return {
    clock,
    sent,
    sw,
    ports: () =>
      sent
        .splice(0)
        .map(([p]) => p)
        .sort(),
  };
}

describe('learning switch', () => {
  it('floods unknown destinations to every other port and learns the source', () => {
    const { sw, ports } = rig();
    sw.receive('n1/1', frame(B, A));
    assert.deepEqual(ports(), ['n2/1', 'n3/1']);
    assert.deepEqual(
      sw.macTable().map((e) => [e.mac, e.port, e.node]),
      [[A, 'n1/1', 'node-1']],
    );
  });

  it('forwards a known unicast destination to its port only', () => {
    const { sw, ports } = rig();
    sw.receive('n2/1', frame(BCAST, B));
    ports();
    sw.receive('n1/1', frame(B, A));
    assert.deepEqual(ports(), ['n2/1']);
  });

  it('floods broadcast even when every MAC is known, and never learns a group address as a source', () => {
    const { sw, ports } = rig();
    sw.receive('n1/1', frame(BCAST, A));
    sw.receive('n2/1', frame(BCAST, B));
    ports();
    sw.receive('n3/1', frame(BCAST, C));
    assert.deepEqual(ports(), ['n1/1', 'n2/1']);
    sw.receive('n3/1', frame(A, BCAST));
    assert.equal(sw.lookup(BCAST), undefined);
  });

  it('drops a frame whose destination is on the port it came from', () => {
    const { sw, ports } = rig();
    sw.receive('n1/1', frame(BCAST, A));
    ports();
    sw.receive('n1/1', frame(A, C));
    assert.deepEqual(ports(), []);
  });

  it("moves a MAC when QEMU's RARP announce arrives on another node's port, and reports the move", () => {
    const { sw, clock } = rig();
    const moves: string[] = [];
    sw.onMove((m) => moves.push(`${m.mac} ${m.fromNode ?? '-'}→${m.toNode} ${m.etherType.toString(16)}`));
    sw.receive('n1/1', frame(BCAST, A));
    clock.advance(10);
    sw.receive('n3/1', frame(BCAST, A, EtherType.RARP));
    assert.equal(sw.lookup(A)?.node, 'node-3');
    assert.deepEqual(moves, [`${A} -→node-1 800`, `${A} node-1→node-3 8035`]);
  });

  it('ages out entries not seen for the ageing time and floods again', () => {
    const { sw, clock, ports } = rig(1000);
    sw.receive('n2/1', frame(BCAST, B));
    ports();
    clock.advance(1001);
    sw.receive('n1/1', frame(B, A));
    assert.deepEqual(ports(), ['n2/1', 'n3/1'], 'a stale entry is not trusted even before the sweep');
    clock.advance(1001);
    assert.equal(sw.age(), 2);
    assert.deepEqual(sw.macTable(), []);
  });

  it('forgets the MACs of a port that goes away', () => {
    const { sw } = rig();
    sw.receive('n1/1', frame(BCAST, A));
    sw.removePort('n1/1');
    assert.equal(sw.lookup(A), undefined);
  });
});

describe('ethernet helpers', () => {
  it('builds and parses ARP requests', () => {
    const f = arpRequest(A, '10.99.0.1', '10.99.0.2');
    assert.deepEqual(parseArp(f), { op: 1, senderMac: A, senderIp: '10.99.0.1', targetIp: '10.99.0.2' });
  });

  it('builds ICMP echo requests with a valid IP checksum and a 32-bit sequence', () => {
    const f = icmpEchoRequest(A, '10.99.0.1', B, '10.99.0.2', 7, 70_000);
    let sum = 0;
    for (let i = 14; i < 34; i += 2) sum += f.readUInt16BE(i);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    assert.equal(sum, 0xffff);
    assert.deepEqual(parseIcmpEcho(f), { type: 8, srcIp: '10.99.0.1', dstIp: '10.99.0.2', id: 7, seq: 70_000 });
  });
});
