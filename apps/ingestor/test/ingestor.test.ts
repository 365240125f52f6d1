// The ingestor as deployed: a real Mosquitto broker, the real SQLite sink and stores, a real MQTT
// client as the gateway's side, the ops HTTP API over a socket.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isFerryError, uplinkTopics } from '@ferry/protocol';
import { silentLogger } from '@ferry/runtime';
import { createSqliteSink } from '@ferry/sinks';
import type { SqliteSink } from '@ferry/sinks';
import { waitFor } from '@ferry/testkit';
import { createIngestor } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';
import { reading, readings } from './fixtures.js';
import { GatewayPeer } from './peer.js';
import { useMosquitto } from './mosquitto-env.js';

const mosquitto = useMosquitto();
const { cleanups } = mosquitto;



let instance = 0;
const dataDir = (): Promise<string> => mosquitto.dataDir('ingestor');

function config(dir: string, extra: Partial<IngestorConfigInput> = {}): IngestorConfigInput {
  return { ingestorId: `ing-${process.pid}-${instance}`, dataDir: dir, broker: { url: mosquitto.url }, write: { lingerMs: 5 }, logLevel: 'silent', ...extra };
}

const start = (cfg: IngestorConfigInput, sink?: SqliteSink): Promise<Ingestor> => mosquitto.startIngestor(cfg, sink);

async function sqliteSink(dir: string): Promise<SqliteSink> {
  const sink = createSqliteSink({ path: join(dir, 'points.db') });
  cleanups.push(() => sink.close());
  return sink;
}

async function peer(gatewayId: string): Promise<GatewayPeer> {
  const p = await GatewayPeer.connect(mosquitto.url, gatewayId);
  cleanups.push(() => p.close());
  return p;
}

/** Parses the ferry_ingestor_readings_* samples of /metrics into per-gateway books. */
async function booksFromMetrics(httpUrl: string): Promise<Map<string, Record<string, number>>> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const books = new Map<string, Record<string, number>>();
  for (const line of text.split('\n')) {
    const m = /^ferry_ingestor_readings_(received_total|written_total|duplicates_total|rejected_total|in_flight)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const gateway = /gateway="([^"]*)"/.exec(m[2]!)?.[1] ?? '';
    const book = books.get(gateway) ?? { received_total: 0, written_total: 0, duplicates_total: 0, rejected_total: 0, in_flight: 0 };
    book[m[1]!] = (book[m[1]!] ?? 0) + Number(m[3]);
    books.set(gateway, book);
  }
  return books;
}

describe('ingestor', () => {
  it('writes a batch to the database and acks it with the right counts', async () => {
    instance++;
    const dir = await dataDir();
    const sink = await sqliteSink(dir);
    const ingestor = await start(config(dir), sink);
    const gw = await peer(`gw-write-${instance}`);
    await gw.send(1, readings(0, 25), 'gzip');
    expect(await gw.waitAck(1)).toMatchObject({ gatewayId: gw.gatewayId, batchId: 1, accepted: 25, duplicates: 0, rejected: [] });
    expect(sink.count()).toBe(25);
    const [first] = sink.query({ tags: { device: 'dev-0', gateway: gw.gatewayId }, limit: 1 });
    expect(first).toMatchObject({ measurement: 'telemetry', fields: { temperature: 20, ok: true } });
    await waitFor(() => ingestor.stats().acksSent === 1);
    expect(ingestor.stats()).toMatchObject({ received: 25, written: 25, inFlight: 0, batches: 1, sinkUp: true, mqttConnected: true });

    const health = await fetch(`${ingestor.httpUrl}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ ok: true, mqtt: { connected: true }, sink: { up: true } });
  });

  it('acks a resent batch as duplicates and does not write it twice', async () => {
    instance++;
    const dir = await dataDir();
    const sink = await sqliteSink(dir);
    await start(config(dir), sink);
    const gw = await peer(`gw-resend-${instance}`);
    await gw.send(1, readings(0, 10));
    await gw.waitAck(1);
    // The gateway missed the ack and resends, with more readings appended since.
    await gw.send(2, readings(0, 12));
    expect(await gw.waitAck(2)).toMatchObject({ accepted: 2, duplicates: 10, rejected: [] });
    await gw.send(3, readings(0, 12));
    expect(await gw.waitAck(3)).toMatchObject({ accepted: 0, duplicates: 12 });
    expect(sink.count()).toBe(12);
  });

  it('writes the good readings of a mixed batch, dead-letters the bad ones and serves them over HTTP', async () => {
    instance++;
    const dir = await dataDir();
    const sink = await sqliteSink(dir);
    const ingestor = await start(config(dir), sink);
    const gw = await peer(`gw-mixed-${instance}`);
    const items = [
      reading(0),
      { ...reading(1), metrics: {} },
      reading(2, { metrics: { note: 'two\nlines' } }),
      reading(3),
      reading(4, { ts: Date.now() + 3_600_000 }),
    ];
    await gw.send(1, items);
    const ack = await gw.waitAck(1);
    expect(ack.accepted).toBe(2);
    expect(ack.rejected.map((r) => [r.seq, r.code])).toEqual([
      [1, 'FERRY_ERR_PAYLOAD_SCHEMA'],
      [4, 'FERRY_ERR_TIMESTAMP_SKEW'],
      [2, 'FERRY_ERR_SINK_REJECTED'],
    ]);
    expect(sink.count()).toBe(2);
    expect(ingestor.stats()).toMatchObject({ received: 5, written: 2, rejected: 3, deadLetters: 3 });

    const listed = (await (await fetch(`${ingestor.httpUrl}/api/deadletters?gatewayId=${gw.gatewayId}`)).json()) as {
      entries: { id: number; code: string; source: { seq?: number }; payload: string }[];
    };
    expect(listed.entries.map((e) => e.code).sort()).toEqual(['FERRY_ERR_PAYLOAD_SCHEMA', 'FERRY_ERR_SINK_REJECTED', 'FERRY_ERR_TIMESTAMP_SKEW']);
    const skewed = listed.entries.find((e) => e.code === 'FERRY_ERR_TIMESTAMP_SKEW')!;
    expect(JSON.parse(skewed.payload)).toEqual(items[4]);
    const byCode = (await (await fetch(`${ingestor.httpUrl}/api/deadletters?code=FERRY_ERR_SINK_REJECTED`)).json()) as { entries: { reason: string }[] };
    expect(byCode.entries).toHaveLength(1);
    expect(byCode.entries[0]?.reason).toContain('line break');
    const one = await fetch(`${ingestor.httpUrl}/api/deadletters/${skewed.id}`);
    expect(await one.json()).toMatchObject({ id: skewed.id, source: { gatewayId: gw.gatewayId, seq: 4, deviceId: 'dev-1' } });
    expect((await fetch(`${ingestor.httpUrl}/api/deadletters/999999`)).status).toBe(404);

    // Still refused on replay: the reason has not gone away.
    const replay = await fetch(`${ingestor.httpUrl}/api/deadletters/${skewed.id}/replay`, { method: 'POST' });
    expect(replay.status).toBe(422);
    expect(await replay.json()).toMatchObject({ outcome: 'rejected', code: 'FERRY_ERR_TIMESTAMP_SKEW' });
  });

  it('keeps deduping after a restart on the same data dir, and takes the batches sent while it was down', async () => {
    instance++;
    const dir = await dataDir();
    const cfg = config(dir);
    const gw = await peer(`gw-restart-${instance}`);
    const first = await start(cfg);
    await gw.send(1, readings(0, 10));
    await gw.waitAck(1);
    await first.close();

    // Published while no ingestor runs: the persistent session keeps them in the broker.
    await gw.send(2, readings(0, 15));
    await gw.send(3, [reading(20, { ts: Date.now() + 3_600_000 })]);
    const second = await start(cfg);
    expect(await gw.waitAck(2)).toMatchObject({ accepted: 5, duplicates: 10 });
    expect(await gw.waitAck(3)).toMatchObject({ accepted: 0, rejected: [{ seq: 20, code: 'FERRY_ERR_TIMESTAMP_SKEW' }] });
    await second.close();

    // After a fix (a wider skew allowance) the operator replays the dead letter.
    const third = await start({ ...cfg, limits: { maxFutureSkewMs: 2 * 3_600_000 } });
    const [skewed] = third.deadLetters.list({ code: 'FERRY_ERR_TIMESTAMP_SKEW' });
    const replay = await fetch(`${third.httpUrl}/api/deadletters/${skewed!.id}/replay`, { method: 'POST' });
    expect(await replay.json()).toEqual({ outcome: 'written', id: skewed!.id });
    expect(third.deadLetters.get(skewed!.id)?.replayedAt).toEqual(expect.any(Number));
    await third.close();

    const points = createSqliteSink({ path: join(dir, 'points.db') });
    expect(points.count()).toBe(16);
    await points.close();
  });

  it('keeps its books balanced and says so in /metrics', async () => {
    instance++;
    const dir = await dataDir();
    const sink = await sqliteSink(dir);
    const ingestor = await start(config(dir), sink);
    const a = await peer(`gw-books-a-${instance}`);
    const b = await peer(`gw-books-b-${instance}`);
    await a.send(1, readings(0, 30));
    await b.send(1, [...readings(0, 5), { garbage: true }]);
    await a.send(2, readings(20, 20));
    await Promise.all([a.waitAck(1), a.waitAck(2), b.waitAck(1)]);
    const books = await booksFromMetrics(ingestor.httpUrl!);
    expect(books.get(a.gatewayId)).toEqual({ received_total: 50, written_total: 40, duplicates_total: 10, rejected_total: 0, in_flight: 0 });
    expect(books.get(b.gatewayId)).toEqual({ received_total: 6, written_total: 5, duplicates_total: 0, rejected_total: 1, in_flight: 0 });
    for (const [, book] of books) {
      expect(book.received_total).toBe(book.written_total! + book.duplicates_total! + book.rejected_total! + book.in_flight!);
    }
    expect(sink.count()).toBe(45);
    const metrics = await (await fetch(`${ingestor.httpUrl}/metrics`)).text();
    expect(metrics).toMatch(/ferry_ingestor_write_duration_seconds_count \d+/);
    expect(metrics).toMatch(/ferry_ingestor_batches_total\{outcome="accepted"\} 3/);
    expect(metrics).toMatch(/ferry_ingestor_sink_up 1/);
  });

  it('dead-letters an unreadable envelope and acks it so the gateway stops resending', async () => {
    instance++;
    const dir = await dataDir();
    const ingestor = await start(config(dir), await sqliteSink(dir));
    const gw = await peer(`gw-envelope-${instance}`);
    await gw.publishRaw(uplinkTopics.batch(gw.gatewayId), Buffer.from(JSON.stringify({ v: 99, gatewayId: gw.gatewayId, batchId: 5, sentAt: 0, compression: 'none', readings: [] })));
    expect(await gw.waitAck(5)).toMatchObject({ accepted: 0, duplicates: 0, rejected: [{ seq: null, code: 'FERRY_ERR_ENVELOPE_INVALID' }] });
    expect(ingestor.deadLetters.list({ code: 'FERRY_ERR_ENVELOPE_INVALID' })).toHaveLength(1);
    expect(ingestor.stats()).toMatchObject({ envelopesRejected: 1, received: 0 });
  });

  it('keeps the latest status of each gateway', async () => {
    instance++;
    const dir = await dataDir();
    const ingestor = await start(config(dir), await sqliteSink(dir));
    const gw = await peer(`gw-status-${instance}`);
    const status = { v: 1, gatewayId: gw.gatewayId, state: 'online', ts: Date.now(), outbox: { depth: 3, bytes: 100, oldestTs: null } };
    await gw.publishRaw(uplinkTopics.status(gw.gatewayId), Buffer.from(JSON.stringify(status)), true);
    await waitFor(() => ingestor.stats().gateways[gw.gatewayId], { what: 'the gateway status' });
    expect(ingestor.stats().gateways[gw.gatewayId]?.status).toMatchObject({ state: 'online', outbox: { depth: 3 } });
    const viaHttp = (await (await fetch(`${ingestor.httpUrl}/api/gateways`)).json()) as Record<string, unknown>;
    expect(viaHttp[gw.gatewayId]).toMatchObject({ status: { state: 'online' } });
    // Clear the retained status so later tests do not see it.
    await gw.publishRaw(uplinkTopics.status(gw.gatewayId), Buffer.alloc(0), true);
    await waitFor(() => !ingestor.stats().gateways[gw.gatewayId], { what: 'the status cleared' });
  });

  it('rejects ready() with a deadline error when the broker cannot be reached', async () => {
    instance++;
    const dir = await dataDir();
    const ingestor = createIngestor(config(dir, { broker: { url: 'mqtt://127.0.0.1:1', readyTimeoutMs: 500 }, http: false }), { logger: silentLogger() });
    cleanups.push(() => ingestor.close());
    const err: unknown = await ingestor.ready().catch((e: unknown) => e);
    expect(isFerryError(err, 'FERRY_ERR_NOT_READY')).toBe(true);
  });

  it('names the field of a bad config', async () => {
    const dir = await dataDir();
    const attempt = (input: unknown): unknown => {
      try {
        createIngestor(input as IngestorConfigInput, { logger: silentLogger() });
        return undefined;
      } catch (err) {
        return err;
      }
    };
    const missing = attempt({ broker: { url: mosquitto.url } });
    expect(isFerryError(missing, 'FERRY_ERR_CONFIG_INVALID')).toBe(true);
    expect((missing as Error).message).toContain('dataDir');
    const badPort = attempt({ dataDir: dir, broker: { url: mosquitto.url }, http: { port: 70_000 } });
    expect((badPort as { details: { fields: string[] } }).details.fields).toEqual(['http.port']);
    const badSink = attempt({ dataDir: dir, broker: { url: mosquitto.url }, sink: { type: 'influxdb2', url: 'not a url', token: 't', org: 'o', bucket: 'b' } });
    expect((badSink as Error).message).toContain('sink.url');
    const typo = attempt({ dataDir: dir, broker: { url: mosquitto.url }, write: { maxPonts: 5 } });
    expect((typo as Error).message).toMatch(/write.*maxPonts/);
    const badUrl = attempt({ dataDir: dir, broker: { url: 'localhost:1883' } });
    expect((badUrl as Error).message).toContain('broker.url');
  });
});
