// The cloud side's peer in tests: a real MQTT client that publishes batch envelopes the way a
// gateway does and collects the acks the ingestor sends back.
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import type { Ack } from '@ferry/protocol';
import { decodeAck, uplinkTopics } from '@ferry/protocol';
import { waitFor } from '@ferry/testkit';
import { batch } from './fixtures.js';

export class GatewayPeer {
  readonly acks: Ack[] = [];

  private constructor(
    readonly gatewayId: string,
    private readonly client: MqttClient,
  ) {
    client.on('message', (_topic, payload) => {
      const ack = decodeAck(payload);
      if (ack) this.acks.push(ack);
    });
  }

  static async connect(url: string, gatewayId: string): Promise<GatewayPeer> {
    const client = await mqtt.connectAsync(url, {
      protocolVersion: 4,
      clientId: `peer-${gatewayId}-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
      clean: true,
      reconnectPeriod: 200,
    });
    const peer = new GatewayPeer(gatewayId, client);
    await client.subscribeAsync(uplinkTopics.ack(gatewayId), { qos: 1 });
    return peer;
  }

  async send(batchId: number, items: readonly unknown[], compression: 'none' | 'gzip' = 'none'): Promise<void> {
    await this.client.publishAsync(uplinkTopics.batch(this.gatewayId), batch(this.gatewayId, batchId, items, compression), { qos: 1 });
  }

  async publishRaw(topic: string, payload: Buffer, retain = false): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1, retain });
  }

  ackOf(batchId: number): Ack | undefined {
    return this.acks.find((a) => a.batchId === batchId);
  }

  waitAck(batchId: number, timeoutMs = 15_000): Promise<Ack> {
    return waitFor(() => this.ackOf(batchId), { timeoutMs, what: `the ack of ${this.gatewayId} batch ${batchId}` });
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}
