// CONNACK first: what aedes writes to a connecting client before its CONNACK waits for it.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { holdUntilConnack } from '../src/connack-first.js';

const CONNACK = Buffer.from([0x20, 0x02, 0x01, 0x00]);
/** A QoS 1 PUBLISH of topic "t" with a one-byte payload, packet id `id`. */
const publish = (id: number): Buffer => Buffer.from([0x32, 0x06, 0x00, 0x01, 0x74, 0x00, id, 0x61]);
const PINGRESP = Buffer.from([0xd0, 0x00]);

function written(stream: PassThrough): Buffer {
  const chunks: Buffer[] = [];
  for (let c = stream.read() as Buffer | null; c !== null; c = stream.read() as Buffer | null) chunks.push(c);
  return Buffer.concat(chunks);
}

describe('holdUntilConnack', () => {
  it('sends a CONNACK ahead of packets written before it, even when they came in pieces', () => {
    const stream = new PassThrough();
    holdUntilConnack(stream);
    const early = publish(1);
    stream.write(early.subarray(0, 3));
    stream.write(early.subarray(3));
    stream.write(publish(2));
    expect(written(stream)).toHaveLength(0);
    stream.write(CONNACK);
    expect(written(stream)).toEqual(Buffer.concat([CONNACK, publish(1), publish(2)]));
  });

  it('keeps a packet cut in half by the CONNACK write whole and in order, then passes writes straight through', () => {
    const stream = new PassThrough();
    holdUntilConnack(stream);
    const late = publish(3);
    stream.write(Buffer.concat([CONNACK, late.subarray(0, 4)]));
    stream.write(late.subarray(4));
    stream.write(PINGRESP);
    expect(written(stream)).toEqual(Buffer.concat([CONNACK, late, PINGRESP]));
  });

  it('calls a write callback whether the write was held or sent', async () => {
    const stream = new PassThrough();
    holdUntilConnack(stream);
    await new Promise<void>((resolve) => stream.write(publish(4), () => resolve()));
    await new Promise<void>((resolve) => stream.write(CONNACK, () => resolve()));
    expect(written(stream)).toEqual(Buffer.concat([CONNACK, publish(4)]));
  });
});
