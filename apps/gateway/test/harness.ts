// Test peers for the gateway: a real MQTT broker for the uplink (in-process aedes, restartable on
// its port), the cloud side of the protocol (a real MQTT client that reads batches and answers
// with encodeAck), and devices (real MQTT clients).
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import { BATCH_VERSION, decodeBatch, decodeGatewayStatus, encodeAck, uplinkTopics } from '@ferry/protocol';
import type { Ack, GatewayStatus, Reading } from '@ferry/protocol';
import type { Registry } from '@ferry/runtime';

export async function waitFor<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  options: { timeoutMs?: number; what: string },
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${options.what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export function tempDir(): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), 'ferry-gateway-'));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface TestBroker {
  readonly url: string;
  readonly port: number;
  readonly broker: Aedes;
  /** Drops every connection and stops listening (an outage). */
  stop(): Promise<void>;
  /** Listens again on the same port, with a fresh broker (no sessions kept). */
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startTestBroker(options: { tls?: { key: string; cert: string } } = {}): Promise<TestBroker> {
  let port = 0;
  let broker: Aedes | undefined;
  let server: Server | undefined;
  async function start(): Promise<void> {
    broker = await Aedes.createBroker();
    const b = broker;
    const s: Server = options.tls ? createTlsServer(options.tls, b.handle) : createServer(b.handle);
    server = s;
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => resolve());
    });
    port = (s.address() as AddressInfo).port;
  }
  async function stop(): Promise<void> {
    const s = server;
    const b = broker;
    server = undefined;
    broker = undefined;
    if (s) {
      const closed = new Promise<void>((resolve) => s.close(() => resolve()));
      if (b) await new Promise<void>((resolve) => b.close(() => resolve()));
      await closed;
    }
  }
  await start();
  return {
    get url() {
      return `${options.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get broker() {
      if (!broker) throw new Error('broker is stopped');
      return broker;
    },
    stop,
    start,
    close: stop,
  };
}

export interface ReceivedBatch {
  readonly batchId: number;
  /** The batch's nonce; an ack must echo it. */
  readonly nonce: string;
  readonly readings: readonly Reading[];
  readonly bytes: number;
}

export interface Cloud {
  readonly batches: ReceivedBatch[];
  /** The "database": readings by seq, each written once. */
  readonly written: Map<number, Reading>;
  readonly statuses: GatewayStatus[];
  autoAck: boolean;
  /** Acks a received batch the way the ingestor would (accepted / duplicates). */
  ack(batchId: number): Promise<void>;
  sendAck(ack: Ack): Promise<void>;
  readingsReceived(): number;
  close(): Promise<void>;
}

export async function startCloud(url: string, gatewayId: string, options: { autoAck: boolean; ca?: string }): Promise<Cloud> {
  const client: MqttClient = await mqtt.connectAsync(url, {
    protocolVersion: 4,
    reconnectPeriod: 50,
    clientId: `cloud-${gatewayId}-${process.pid}`,
    ...(options.ca !== undefined ? { ca: options.ca } : {}),
  });
  const batches: ReceivedBatch[] = [];
  const written = new Map<number, Reading>();
  const statuses: GatewayStatus[] = [];
  const cloud: Cloud = {
    batches,
    written,
    statuses,
    autoAck: options.autoAck,
    async ack(batchId) {
      const batch = batches.find((b) => b.batchId === batchId);
      if (!batch) throw new Error(`no batch ${batchId} received`);
      let accepted = 0;
      let duplicates = 0;
      for (const reading of batch.readings) {
        if (written.has(reading.seq)) duplicates += 1;
        else {
          written.set(reading.seq, reading);
          accepted += 1;
        }
      }
      await cloud.sendAck({ v: BATCH_VERSION, gatewayId, batchId, nonce: batch.nonce, accepted, duplicates, rejected: [], ackedAt: Date.now() });
    },
    async sendAck(ack) {
      await client.publishAsync(uplinkTopics.ack(gatewayId), encodeAck(ack), { qos: 1 });
    },
    readingsReceived() {
      return batches.reduce((n, b) => n + b.readings.length, 0);
    },
    async close() {
      await client.endAsync(true);
    },
  };
  client.on('message', (topic, payload) => {
    if (topic === uplinkTopics.status(gatewayId)) {
      const status = decodeGatewayStatus(payload);
      if (status) statuses.push(status);
      return;
    }
    const decoded = decodeBatch(payload, 64 * 1024 * 1024);
    if (!decoded.ok) throw new Error(`cloud got a bad batch: ${decoded.rejection.reason}`);
    if (decoded.header.nonce === undefined) throw new Error('cloud got a batch without a nonce');
    const batch = { batchId: decoded.header.batchId, nonce: decoded.header.nonce, readings: decoded.readings as Reading[], bytes: payload.byteLength };
    batches.push(batch);
    if (cloud.autoAck) void cloud.ack(batch.batchId);
  });
  await client.subscribeAsync({ [uplinkTopics.batch(gatewayId)]: { qos: 1 }, [uplinkTopics.status(gatewayId)]: { qos: 1 } });
  return cloud;
}

export async function connectDevice(url: string, clientId: string, extra: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(url, { protocolVersion: 4, clientId, reconnectPeriod: 0, ...extra });
}

/** A counter's value from the registry, summed over the labels given. */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const data = await metric.get();
  return data.values
    .filter((v) => Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want))
    .reduce((n, v) => n + v.value, 0);
}
