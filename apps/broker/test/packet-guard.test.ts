// The packet size guard: the pure scanner under any chunking, and a real broker closing a
// connection that announces an oversized packet before its body is sent.
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import mqtt from 'mqtt';
import { maxPacketBytes, PacketSizeScanner, silentLogger } from '@ferry/runtime';
import { createBroker } from '../src/index.js';
import type { Broker } from '../src/index.js';

/** The MQTT remaining-length varint. */
function varint(n: number): Buffer {
  const bytes: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    bytes.push(byte);
  } while (n > 0);
  return Buffer.from(bytes);
}

const str = (s: string): Buffer => Buffer.concat([Buffer.from([s.length >> 8, s.length & 0xff]), Buffer.from(s)]);
const packet = (first: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([first]), varint(body.length), body]);
/** A QoS 1 PUBLISH (packet id 1) with a payload of `payloadBytes`. */
const publish = (payloadBytes: number, topic = 't/x'): Buffer => packet(0x32, Buffer.concat([str(topic), Buffer.from([0, 1]), Buffer.alloc(payloadBytes, 7)]));
const PINGREQ = Buffer.from([0xc0, 0]);
/** CONNECT, MQTT 3.1.1, clean session, no keepalive. */
const connectPacket = (clientId: string): Buffer => packet(0x10, Buffer.concat([str('MQTT'), Buffer.from([4, 0x02, 0, 0]), str(clientId)]));

/** Splits `bytes` at the given cut points (any order, any count). */
function chunked(bytes: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const to of [...at, bytes.length]) {
    out.push(bytes.subarray(from, to));
    from = to;
  }
  return out;
}

describe('packet size scanner', () => {
  it('lets any stream of packets within the bound through, however it is cut into chunks', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (sizes, cuts) => {
        const scanner = new PacketSizeScanner(400);
        const stream = Buffer.concat([PINGREQ, ...sizes.map((n) => publish(n))]);
        for (const chunk of chunked(stream, cuts)) expect(scanner.feed(chunk)).toBeUndefined();
      }),
    );
  });

  it('reports a packet over the bound from its header alone, however it is cut', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 500, max: 200_000 }), fc.array(fc.nat(), { maxLength: 6 }), (before, big, cuts) => {
        const scanner = new PacketSizeScanner(400);
        const oversized = publish(big);
        // Only the fixed header and a few body bytes of the big packet are ever sent.
        const stream = Buffer.concat([publish(before), oversized.subarray(0, 8)]);
        const reports = chunked(stream, cuts).map((c) => scanner.feed(c)).filter((r) => r !== undefined);
        // Reported as soon as the length read so far passes the bound (it only grows from there).
        expect(reports.length).toBeGreaterThan(0);
        expect(reports[0]).toBeGreaterThan(400);
      }),
    );
  });

  it('allows a CONNECT with every field at its maximum even under a small payload bound', () => {
    expect(maxPacketBytes(1024)).toBeGreaterThanOrEqual(5 * 65_537);
    expect(maxPacketBytes(4 * 1024 * 1024)).toBe(4 * 1024 * 1024 + 65_539);
  });
});

describe('a broker with the guard', () => {
  const brokers: Broker[] = [];
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await Promise.all(brokers.splice(0).map((b) => b.close()));
  });

  it('closes a connection that announces a 200 MB packet without waiting for its body, and keeps serving others', async () => {
    const broker = createBroker({ listen: { port: 0 }, http: { port: 0 }, maxPayloadBytes: 1024 }, { logger: silentLogger() });
    brokers.push(broker);
    await broker.ready();
    const port = Number(new URL(broker.url!).port);
    const socket = netConnect({ host: '127.0.0.1', port });
    sockets.push(socket);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(connectPacket('greedy'));
    // A PUBLISH header announcing 200 MB, then a little of its body; the rest never comes.
    const header = publish(200 * 1024 * 1024).subarray(0, 5);
    socket.write(Buffer.concat([header, Buffer.alloc(100, 1)]));
    await closed;

    const metrics = await (await fetch(`${broker.httpUrl!}/metrics`)).text();
    expect(metrics).toMatch(/^ferry_broker_connections_refused_total\{reason="packet_too_large"\} 1$/m);
    const client = await mqtt.connectAsync(broker.url!, { protocolVersion: 4, reconnectPeriod: 0 });
    await client.publishAsync('t/ok', Buffer.alloc(1024, 1), { qos: 1 });
    await client.endAsync();
  });
});
