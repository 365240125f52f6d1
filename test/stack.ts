// A whole Ferry system in one test process: broker, ingestor and gateway on ephemeral ports
// with temp data dirs, plus deterministic devices publishing over real MQTT.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { createBroker } from '@ferry/broker';
import type { Broker } from '@ferry/broker';
import { createGateway } from '@ferry/gateway';
import type { Gateway, GatewayConfigInput } from '@ferry/gateway';
import { createIngestor } from '@ferry/ingestor';
import type { Ingestor, IngestorConfigInput } from '@ferry/ingestor';
import { silentLogger } from '@ferry/runtime';
import { waitFor } from '@ferry/testkit';

export interface Stack {
  readonly broker: Broker | undefined;
  readonly ingestor: Ingestor;
  readonly gateway: Gateway;
  readonly dataDir: string;
  close(): Promise<void>;
}

export interface StackOptions {
  readonly sink?: IngestorConfigInput['sink'];
  /** Use this broker URL (e.g. a real Mosquitto) instead of starting Ferry's broker. */
  readonly brokerUrl?: string;
  /** Gateway settings over the stack's; `uplink` ones go over the stack's broker URL. */
  readonly gateway?: Partial<Omit<GatewayConfigInput, 'uplink'>> & { readonly uplink?: Partial<GatewayConfigInput['uplink']> };
  readonly gatewayId?: string;
  /** Extra ingestor settings (e.g. `health`), merged over the stack's own. */
  readonly ingestor?: Partial<IngestorConfigInput>;
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dataDir = await mkdtemp(join(tmpdir(), 'ferry-e2e-'));
  const logger = silentLogger();
  let broker: Broker | undefined;
  let brokerUrl = options.brokerUrl;
  if (!brokerUrl) {
    broker = createBroker({ listen: { host: '127.0.0.1', port: 0 }, http: false }, { logger });
    await broker.ready();
    brokerUrl = broker.url;
  }
  if (!brokerUrl) throw new Error('broker has no url');
  const ingestor = createIngestor(
    {
      dataDir: join(dataDir, 'ingestor'),
      broker: { url: brokerUrl },
      http: { host: '127.0.0.1', port: 0 },
      ...(options.sink ? { sink: options.sink } : {}),
      ...options.ingestor,
    },
    { logger },
  );
  await ingestor.ready();
  const gateway = createGateway(
    {
      gatewayId: options.gatewayId ?? 'gw-e2e',
      dataDir: join(dataDir, 'gateway'),
      devices: { listen: { host: '127.0.0.1', port: 0 } },
      http: { host: '127.0.0.1', port: 0 },
      ...options.gateway,
      // Uplink settings given (e.g. ackTimeoutMs) go over the stack's broker URL rather than replace it.
      uplink: { url: brokerUrl, ...options.gateway?.uplink },
    },
    { logger },
  );
  await gateway.ready();
  return {
    broker,
    ingestor,
    gateway,
    dataDir,
    async close() {
      await gateway.close();
      await ingestor.close();
      await broker?.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The value device `d` reports as reading `i`: exact, so the database can be checked value by value. */
export function expectedTemperature(d: number, i: number): number {
  return Math.round((15 + d + i / 100) * 100) / 100;
}

const DAY_MS = 86_400_000;
/**
 * Device time of reading 0: the start of yesterday (UTC) by the clock at run time, so windows of
 * a minute, an hour or a day line up with it, and every reading is recent by any bound the
 * product applies. Never a calendar date: one pinned here expired the suite once.
 */
export const BASE_TS = Math.floor(Date.now() / DAY_MS) * DAY_MS - DAY_MS;

export function deviceId(d: number): string {
  return `dev-${String(d).padStart(2, '0')}`;
}

/**
 * `devices` devices each publish `readings` QoS 1 telemetry readings with device time and seq,
 * each on its own MQTT connection; resolves once every publish was PUBACKed.
 */
export async function publishReadings(url: string, devices: number, readings: number): Promise<number> {
  let acked = 0;
  await Promise.all(
    Array.from({ length: devices }, async (_, d) => {
      const client = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `${deviceId(d)}-pub`, reconnectPeriod: 0 });
      try {
        for (let i = 0; i < readings; i++) {
          const payload = JSON.stringify({
            ts: BASE_TS + i * 1000,
            seq: i,
            metrics: { temperature: expectedTemperature(d, i), humidity: 40 + (i % 20), ok: i % 2 === 0 },
            tags: { site: 'greenhouse' },
          });
          await client.publishAsync(`devices/${deviceId(d)}/telemetry`, payload, { qos: 1 });
          acked++;
        }
      } finally {
        await client.endAsync();
      }
    }),
  );
  return acked;
}

/** Waits until the gateway's outbox is empty and nothing is in flight. */
export async function drained(gateway: Gateway, timeoutMs = 30_000): Promise<void> {
  await waitFor(() => {
    const s = gateway.stats();
    return s.outboxDepth === 0 && s.inFlightBatches === 0;
  }, { timeoutMs, what: 'gateway outbox to drain' });
}
