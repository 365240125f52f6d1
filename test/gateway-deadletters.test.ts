// Dead letters, centrally (issue #16 part 5), with every service a real `ferry` process: what a
// gateway refuses shows up in the ingestor's ops API and `ferry deadletter list --ingestor`, with
// the gateway named; reports wait while the broker is down and are not sent twice after a gateway
// restart; a letter is replayed from the centre by its gateway. Measured bug: `deadletter list
// --ingestor` said "no dead letters match" while the gateway held 4 refused payloads.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { waitFor } from '@ferry/testkit';
import { readSqliteArrivals } from './faults/devices.js';
import { FERRY_MAIN, metricValue } from './faults/processes.js';
import { GATEWAY_ID, startChildStack } from './faults/stack.js';
import type { ChildStack } from './faults/stack.js';

const run = promisify(execFile);

interface Entry {
  id: number;
  code: string;
  origin: string;
  reason: string;
  replayedAt: number | null;
  payload: string;
  payloadTruncated: boolean;
  payloadBytes: number;
  source: { gatewayId?: string; deviceId?: string; topic?: string; gatewayLetterId?: number };
}
interface Listed {
  entries: Entry[];
  gateways: Record<string, { held: number; discarded: number; reportedAt: number; byDevice: Array<{ deviceId: string | null; code: string; held: number }> }>;
}

describe('gateway dead letters, seen and replayed from the centre', { timeout: 300_000 }, () => {
  let stack: ChildStack;

  async function list(query = ''): Promise<Listed> {
    const res = await fetch(`${stack.ingestor.httpUrl}/api/deadletters${query}`);
    expect(res.status).toBe(200);
    return (await res.json()) as Listed;
  }

  async function publish(messages: Array<[string, string]>): Promise<void> {
    const device = await mqtt.connectAsync(stack.deviceUrl, { protocolVersion: 4, clientId: `dl-device-${Date.now()}`, reconnectPeriod: 0 });
    try {
      for (const [topic, payload] of messages) await device.publishAsync(topic, payload, { qos: 1 });
    } finally {
      await device.endAsync();
    }
  }

  async function gatewayMetric(name: string): Promise<number> {
    return metricValue(await stack.gateway.metrics(), name);
  }

  async function withLogs<T>(work: Promise<T>): Promise<T> {
    return work.catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${stack.logs()}`);
    });
  }

  beforeAll(async () => {
    stack = await startChildStack();
  }, 300_000);
  afterAll(async () => {
    await stack?.close();
  });

  it('lists what the gateway refused in the ingestor API and the CLI, with the gateway named, filtered by gateway, device and code', async () => {
    await publish([
      ['devices/d1/telemetry', '{"metrics": {"t": 21.5'],
      ['devices/d2/telemetry', '{"metrics":{"t":[1,2]}}'],
      ['devices/d2/telemetry', JSON.stringify({ metrics: { s: 'x'.repeat(10_000) }, extra: true })],
      ['factory/m1/telemetry', '{"metrics":{"n":7}}'],
    ]);
    await withLogs(waitFor(async () => (await list('?origin=gateway')).entries.length === 4, { timeoutMs: 60_000, what: 'four gateway letters at the ingestor' }));
    const { entries, gateways } = await list(`?gatewayId=${GATEWAY_ID}`);
    expect(entries).toHaveLength(4);
    for (const e of entries) expect(e).toMatchObject({ origin: 'gateway', source: { gatewayId: GATEWAY_ID } });
    expect(entries.map((e) => e.source.gatewayLetterId)).toEqual([1, 2, 3, 4]);
    const big = entries.find((e) => e.payloadBytes > 4096)!;
    expect(big).toMatchObject({ payloadTruncated: true, source: { deviceId: 'd2' } });
    expect(Buffer.byteLength(big.payload)).toBe(4096);
    expect(gateways[GATEWAY_ID]).toMatchObject({ held: 4, discarded: 0 });

    expect((await list('?deviceId=d2')).entries).toHaveLength(2);
    expect((await list('?code=FERRY_ERR_PAYLOAD_JSON')).entries.map((e) => e.source.deviceId)).toEqual(['d1']);
    expect((await list('?code=FERRY_ERR_TOPIC_UNKNOWN')).entries.map((e) => e.source.topic)).toEqual(['factory/m1/telemetry']);
    expect((await list('?gatewayId=another-gateway')).entries).toEqual([]);
    expect((await list('?origin=local')).entries).toEqual([]);

    const cli = await run(process.execPath, [FERRY_MAIN, 'deadletter', 'list', '--ingestor', stack.ingestor.httpUrl, '--gateway', GATEWAY_ID]);
    expect(cli.stdout).not.toContain('no dead letters match');
    expect(cli.stdout.split('\n').filter((l) => l.includes(`at gateway ${GATEWAY_ID}`))).toHaveLength(4);
    expect(cli.stdout).toContain(`gateway ${GATEWAY_ID} holds 4 dead letters`);
    expect(await gatewayMetric('ferry_gateway_deadletters_reported_total')).toBe(4);
  });

  it('keeps letters refused while the broker is down and reports them once it is back', async () => {
    await stack.broker.kill();
    await waitFor(async () => (await stack.gateway.health()).uplinkConnected === false, { timeoutMs: 60_000, what: 'the gateway to see the uplink down' });
    await publish([
      ['devices/d5/telemetry', '{"metrics":'],
      ['devices/d6/telemetry', '{"metrics":{"t":[3]}}'],
    ]);
    expect((await list('?origin=gateway')).entries).toHaveLength(4);
    expect(await gatewayMetric('ferry_gateway_deadletters_reported_total')).toBe(4);
    await stack.broker.start();
    await withLogs(waitFor(async () => (await list('?origin=gateway')).entries.length === 6, { timeoutMs: 120_000, what: 'the letters refused during the outage' }));
    expect((await list('?deviceId=d6')).entries).toMatchObject([{ source: { gatewayId: GATEWAY_ID, gatewayLetterId: 6 } }]);
    await waitFor(async () => (await gatewayMetric('ferry_gateway_deadletters_reported_total')) === 6, { timeoutMs: 60_000, what: 'the reports to be acked' });
  });

  it('does not report a letter twice after the gateway restarts', async () => {
    const before = (await list()).gateways[GATEWAY_ID]!.reportedAt;
    await stack.gateway.stop();
    await stack.gateway.start();
    // A fresh connection sends the counts again: once they arrived, any resent letter would have too.
    await withLogs(waitFor(async () => (await list()).gateways[GATEWAY_ID]!.reportedAt > before, { timeoutMs: 120_000, what: 'a report from the restarted gateway' }));
    const { entries } = await list('?origin=gateway');
    expect(entries.map((e) => e.source.gatewayLetterId)).toEqual([1, 2, 3, 4, 5, 6]);
    const metrics = await (await fetch(`${stack.ingestor.httpUrl}/metrics`)).text();
    expect(metricValue(metrics, 'ferry_ingestor_gateway_deadletters_received_total', 'result="added"')).toBe(6);
    expect(metricValue(metrics, 'ferry_ingestor_gateway_deadletters_received_total', 'result="duplicate"')).toBe(0);
  });

  it('replays a letter from the centre: the gateway decodes it under its new patterns and the reading arrives once', async () => {
    // The fix: the gateway learns the factory topics.
    const configFile = join(stack.dir, 'gateway.json');
    const config = JSON.parse(readFileSync(configFile, 'utf8')) as { devices: Record<string, unknown> };
    config.devices.patterns = [
      { pattern: 'devices/{deviceId}/telemetry' },
      { pattern: 'devices/{deviceId}/status', kind: 'status' },
      { pattern: 'factory/{deviceId}/telemetry' },
    ];
    writeFileSync(configFile, JSON.stringify(config, null, 2));
    await stack.gateway.stop();
    await stack.gateway.start();
    await waitFor(async () => (await stack.gateway.health()).uplinkConnected === true, { timeoutMs: 60_000, what: 'the restarted gateway uplink' });

    const [factory] = (await list('?code=FERRY_ERR_TOPIC_UNKNOWN')).entries;
    const replay = async (id: number): Promise<{ status: number; body: Record<string, unknown> }> => {
      const res = await fetch(`${stack.ingestor.httpUrl}/api/deadletters/${id}/replay`, { method: 'POST' });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const answer = await withLogs(replay(factory!.id));
    expect(answer).toMatchObject({ status: 200, body: { outcome: 'committed', readings: 1, gatewayId: GATEWAY_ID, gatewayLetterId: 4 } });
    await withLogs(
      waitFor(() => readSqliteArrivals(stack.pointsDb).some((a) => a.device === 'm1' && a.n === 7), { timeoutMs: 120_000, what: 'the replayed reading in the database' }),
    );
    const shown = (await (await fetch(`${stack.ingestor.httpUrl}/api/deadletters/${factory!.id}`)).json()) as Entry;
    expect(shown.replayedAt).not.toBeNull();
    // Asked again (through the CLI): already replayed, nothing sent twice.
    const again = await run(process.execPath, [FERRY_MAIN, 'deadletter', 'replay', String(factory!.id), '--ingestor', stack.ingestor.httpUrl]);
    expect(JSON.parse(again.stdout.trim())).toMatchObject({ id: factory!.id, status: 200, outcome: 'already-replayed' });

    // Still malformed: refused again and kept, with the reason of this decoding.
    const [broken] = (await list('?code=FERRY_ERR_PAYLOAD_JSON&deviceId=d1')).entries;
    expect(await replay(broken!.id)).toMatchObject({ status: 422, body: { outcome: 'rejected', code: 'FERRY_ERR_PAYLOAD_JSON' } });
    expect((await list('?deviceId=d1')).entries).toMatchObject([{ replayedAt: null, code: 'FERRY_ERR_PAYLOAD_JSON' }]);

    expect(readSqliteArrivals(stack.pointsDb).filter((a) => a.device === 'm1')).toHaveLength(1);
    expect(metricValue(await stack.gateway.metrics(), 'ferry_gateway_deadletter_replays_total', 'outcome="committed"')).toBe(1);
  });
});
