// Stage 1: device publishes end in the outbox, so the embedded listener never relays them; aedes's
// own $SYS traffic (heartbeats, client takeover, which its will handling relies on) still flows.
import { afterEach, describe, expect, it } from 'vitest';
import { Aedes } from 'aedes';
import type { AedesPublishPacket } from 'aedes';
import { skipRelay } from '../src/receive.js';

const brokers: Aedes[] = [];
afterEach(async () => {
  for (const broker of brokers.splice(0)) await new Promise<void>((resolve) => broker.close(() => resolve()));
});

async function relayingBroker(): Promise<{ broker: Aedes; delivered: string[] }> {
  const broker = await Aedes.createBroker({ heartbeatInterval: 60_000 });
  brokers.push(broker);
  skipRelay(broker);
  const delivered: string[] = [];
  const deliver = (packet: AedesPublishPacket, cb: () => void): void => {
    delivered.push(packet.topic);
    cb();
  };
  await new Promise<void>((resolve) => broker.subscribe('#', deliver, resolve));
  await new Promise<void>((resolve) => broker.subscribe('$SYS/#', deliver, resolve));
  return { broker, delivered };
}

function publish(broker: Aedes, topic: string): Promise<Error | undefined> {
  return new Promise((resolve) => broker.publish({ cmd: 'publish', topic, payload: Buffer.from('{}'), qos: 1, retain: false, dup: false }, (err) => resolve(err ?? undefined)));
}

describe('the device listener relay', () => {
  it('answers a device publish at once and delivers it to no subscriber', async () => {
    const { broker, delivered } = await relayingBroker();
    expect(await publish(broker, 'devices/d1/telemetry')).toBeUndefined();
    // A QoS 1 publish on the wire takes this path with the client as second argument.
    const viaClient = await new Promise<Error | undefined>((resolve) => {
      const asDevice = broker as unknown as { publish(packet: object, client: object | null, done: (err?: Error) => void): void };
      asDevice.publish({ cmd: 'publish', topic: 'devices/d2/telemetry', payload: Buffer.from('{}'), qos: 1, retain: false, dup: false }, null, resolve);
    });
    expect(viaClient).toBeUndefined();
    await new Promise((resolve) => setImmediate(resolve));
    expect(delivered.filter((t) => t.startsWith('devices/'))).toEqual([]);
  });

  it('keeps no retained device publish to replay to a later subscriber', async () => {
    const { broker } = await relayingBroker();
    const retained = await new Promise<Error | undefined>((resolve) => {
      const asDevice = broker as unknown as { publish(packet: object, client: object | null, done: (err?: Error) => void): void };
      asDevice.publish({ cmd: 'publish', topic: 'devices/d3/telemetry', payload: Buffer.from('{}'), qos: 1, retain: true, dup: false }, null, resolve);
    });
    expect(retained).toBeUndefined();
    // aedes stores a retained message in the relay the device topics skip.
    const persistence = Reflect.get(broker, 'persistence') as { createRetainedStream(pattern: string): AsyncIterable<{ topic: string }> };
    const kept: string[] = [];
    for await (const packet of persistence.createRetainedStream('#')) kept.push(packet.topic);
    expect(kept).toEqual([]);
  });

  it("still relays aedes's own $SYS publishes", async () => {
    const { broker, delivered } = await relayingBroker();
    expect(await publish(broker, `$SYS/${broker.id}/heartbeat`)).toBeUndefined();
    await new Promise((resolve) => setImmediate(resolve));
    expect(delivered).toContain(`$SYS/${broker.id}/heartbeat`);
  });
});
