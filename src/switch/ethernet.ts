/**
 * Just enough Ethernet, ARP, IPv4 and ICMP to learn MACs, spot QEMU's RARP
 * announce and ping a guest. Frames are plain Buffers.
 */

export const EtherType = { IPv4: 0x0800, ARP: 0x0806, RARP: 0x8035 } as const;

export function macToString(b: Buffer, offset = 0): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push(b[offset + i]!.toString(16).padStart(2, '0'));
  return parts.join(':');
}

export function macToBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export function ipToBytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map((n) => Number(n)));
}

export function ipToString(b: Buffer, offset = 0): string {
  return `${b[offset]}.${b[offset + 1]}.${b[offset + 2]}.${b[offset + 3]}`;
}

export interface FrameHeader {
  dst: string;
  src: string;
  etherType: number;
}

export function parseHeader(frame: Buffer): FrameHeader | undefined {
  if (frame.length < 14) return undefined;
  return { dst: macToString(frame, 0), src: macToString(frame, 6), etherType: frame.readUInt16BE(12) };
}

/** Broadcast and multicast: the group bit of the first octet. */
export function isGroupMac(mac: string): boolean {
  return (parseInt(mac.slice(0, 2), 16) & 1) === 1;
}

function ethernet(dst: string, src: string, etherType: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(14);
  macToBytes(dst).copy(header, 0);
  macToBytes(src).copy(header, 6);
  header.writeUInt16BE(etherType, 12);
  const frame = Buffer.concat([header, payload]);
  return frame.length < 60 ? Buffer.concat([frame, Buffer.alloc(60 - frame.length)]) : frame;
}

export function arpRequest(srcMac: string, srcIp: string, targetIp: string): Buffer {
  return arp(1, srcMac, srcIp, '00:00:00:00:00:00', targetIp, 'ff:ff:ff:ff:ff:ff');
}

export function arpReply(srcMac: string, srcIp: string, dstMac: string, dstIp: string): Buffer {
  return arp(2, srcMac, srcIp, dstMac, dstIp, dstMac);
}

function arp(op: number, sha: string, spa: string, tha: string, tpa: string, dst: string): Buffer {
  const p = Buffer.alloc(28);
  p.writeUInt16BE(1, 0); // Ethernet
  p.writeUInt16BE(EtherType.IPv4, 2);
  p[4] = 6;
  p[5] = 4;
  p.writeUInt16BE(op, 6);
  macToBytes(sha).copy(p, 8);
  ipToBytes(spa).copy(p, 14);
  macToBytes(tha).copy(p, 18);
  ipToBytes(tpa).copy(p, 24);
  return ethernet(dst, sha, EtherType.ARP, p);
}

export interface ArpPacket {
  op: number;
  senderMac: string;
  senderIp: string;
  targetIp: string;
}

export function parseArp(frame: Buffer): ArpPacket | undefined {
  if (frame.length < 42 || frame.readUInt16BE(12) !== EtherType.ARP) return undefined;
  return {
    op: frame.readUInt16BE(20),
    senderMac: macToString(frame, 22),
    senderIp: ipToString(frame, 28),
    targetIp: ipToString(frame, 38),
  };
}

function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1]! << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

export function icmpEchoRequest(srcMac: string, srcIp: string, dstMac: string, dstIp: string, id: number, seq: number): Buffer {
  const icmp = Buffer.alloc(16);
  icmp[0] = 8; // echo request
  icmp.writeUInt16BE(id, 4);
  icmp.writeUInt16BE(seq & 0xffff, 6);
  icmp.writeUInt32BE(seq >>> 0, 8); // full sequence, survives 16-bit wrap
  icmp.writeUInt16BE(checksum(icmp), 2);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + icmp.length, 2);
  ip[8] = 64; // ttl
  ip[9] = 1; // ICMP
  ipToBytes(srcIp).copy(ip, 12);
  ipToBytes(dstIp).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  return ethernet(dstMac, srcMac, EtherType.IPv4, Buffer.concat([ip, icmp]));
}

export interface IcmpEcho {
  type: number;
  srcIp: string;
  dstIp: string;
  id: number;
  seq: number;
}

export function parseIcmpEcho(frame: Buffer): IcmpEcho | undefined {
  if (frame.length < 14 + 20 + 12 || frame.readUInt16BE(12) !== EtherType.IPv4) return undefined;
  const ihl = (frame[14]! & 0x0f) * 4;
  if (frame[14 + 9] !== 1) return undefined;
  const icmp = 14 + ihl;
  if (frame.length < icmp + 12) return undefined;
  return {
    type: frame[icmp]!,
    srcIp: ipToString(frame, 14 + 12),
    dstIp: ipToString(frame, 14 + 16),
    id: frame.readUInt16BE(icmp + 4),
    seq: frame.readUInt32BE(icmp + 8),
  };
}
