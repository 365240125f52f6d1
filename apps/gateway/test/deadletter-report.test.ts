// The gateway's dead-letter reporter without sockets: a fake uplink records what is published, the
// store is a real SQLite file (the watermark lives in it), time is a ManualClock.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSqliteDeadLetterStore } from '@ferry/deadletter';
import type { DeadLetterStore } from '@ferry/deadletter';
import { decodeGatewayDeadLetterMessage, encodeDeadLetterMessage, uplinkTopics } from '@ferry/protocol';
import type { DeadLetterReport, DeviceReading, ReplayResult } from '@ferry/protocol';
import { createRegistry, ManualClock, silentLogger } from '@ferry/runtime';
import { waitFor } from './harness.js';
import { gatewayConfigSchema } from '../src/config.js';
import { createDeviceMessageValidator } from '../src/validate.js';
import type { DeviceMessageValidator } from '../src/validate.js';
import { buildReport, createDeadLetterReporter, deviceDeadLetter, unreplayableReason } from '../src/deadletter-report.js';
import type { DeadLetterReporter } from '../src/deadletter-report.js';

const GW = 'gw-r';
const NOW = Date.now();

function patterns(extra: Array<{ pattern: string }> = []): DeviceMessageValidator {
  const config = gatewayConfigSchema.parse({
    gatewayId: GW,
    dataDir: '/tmp/unused',
    uplink: { url: 'mqtt://127.0.0.1:1' },
    devices: { patterns: [{ pattern: 'devices/{deviceId}/telemetry' }, ...extra] },
  });
  return createDeviceMessageValidator(config.devices.patterns, config.limits);
}

class FakeUplink {
  connected = true;
  readonly sent: Array<{ topic: string; payload: Buffer }> = [];
  failNext = false;
  publish(topic: string, payload: Buffer, _options: { retain?: boolean }, done?: (err?: Error) => void): void {
    if (this.failNext) {
      this.failNext = false;
      done?.(new Error('connection lost'));
      return;
    }
    this.sent.push({ topic, payload });
    done?.();
  }
  reports(): DeadLetterReport[] {
    return this.sent.flatMap((m) => {
      const d = decodeGatewayDeadLetterMessage(m.payload);
      return d.ok && d.value.type === 'report' ? [d.value] : [];
    });
  }
  results(): ReplayResult[] {
    return this.sent.flatMap((m) => {
      const d = decodeGatewayDeadLetterMessage(m.payload);
      return d.ok && d.value.type === 'replay-result' ? [d.value] : [];
    });
  }
}

describe('dead-letter reporter', () => {
  let dir: string;
  let store: DeadLetterStore;
  let uplink: FakeUplink;
  let reporter: DeadLetterReporter | undefined;
  let committed: DeviceReading[][];
  const clock = new ManualClock(NOW);

  function start(validator = patterns()): DeadLetterReporter {
    reporter = createDeadLetterReporter(
      { gatewayId: GW, store, path: join(dir, 'deadletters.db'), uplink: () => uplink },
      {
        validator,
        committer: { add: (readings, done) => (committed.push([...readings]), done(null)) },
        clock,
        logger: silentLogger(),
        registry: createRegistry(),
        ackTimeoutMs: 60_000,
        intervalMs: 60_000,
      },
    );
    return reporter;
  }

  function refuse(topic: string, payload: string, code: 'FERRY_ERR_PAYLOAD_JSON' | 'FERRY_ERR_TOPIC_UNKNOWN' = 'FERRY_ERR_PAYLOAD_JSON'): number {
    return store.add(deviceDeadLetter(GW, { code, reason: 'refused' }, topic, topic.split('/')[1], Buffer.from(payload), clock.now())).id;
  }

  function ack(report: DeadLetterReport): Buffer {
    return encodeDeadLetterMessage({ v: 1, type: 'report-ack', gatewayId: GW, reportId: report.reportId, through: report.through, added: report.letters.length, duplicates: 0, ackedAt: clock.now() });
  }

  const control = uplinkTopics.deadLetterControl(GW);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-dlreport-'));
    store = createSqliteDeadLetterStore({ path: join(dir, 'deadletters.db'), clock });
    uplink = new FakeUplink();
    committed = [];
  });
  afterEach(() => {
    reporter?.close();
    reporter = undefined;
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports nothing until the broker granted the control subscription', async () => {
    refuse('devices/d1/telemetry', '{bad');
    const r = start();
    r.changed();
    await new Promise((resolve) => setImmediate(resolve));
    expect(uplink.sent).toEqual([]);
    r.subscribed(false);
    await new Promise((resolve) => setImmediate(resolve));
    expect(uplink.sent).toEqual([]);
  });

  it('reports letters above the watermark, moves it only on the ack, and sends nothing again after a restart', async () => {
    refuse('devices/d1/telemetry', '{bad');
    refuse('devices/d2/telemetry', '{worse');
    const r = start();
    r.subscribed(true);
    await waitFor(() => uplink.reports().length === 1, { timeoutMs: 5_000, what: 'the first report' });
    const first = uplink.reports()[0]!;
    expect(first).toMatchObject({ gatewayId: GW, after: 0, through: 2, counts: { held: 2 } });
    expect(first.letters.map((l) => [l.id, l.deviceId, l.payload])).toEqual([
      [1, 'd1', '{bad'],
      [2, 'd2', '{worse'],
    ]);
    expect(r.reportedThrough).toBe(0);
    r.receive(control, ack(first));
    expect(r.reportedThrough).toBe(2);
    r.close();
    // Restart: the watermark was saved beside the letters, so only the new letter goes.
    uplink = new FakeUplink();
    refuse('devices/d3/telemetry', '{third');
    const again = start();
    again.subscribed(true);
    await waitFor(() => uplink.reports().length === 1, { timeoutMs: 5_000, what: 'the report after the restart' });
    expect(uplink.reports()[0]!.letters.map((l) => l.id)).toEqual([3]);
    expect(uplink.reports()[0]!.after).toBe(2);
  });

  it('sends a report again after the uplink went down before its ack, and ignores an ack it did not ask for', async () => {
    refuse('devices/d1/telemetry', '{bad');
    const r = start();
    r.subscribed(true);
    await waitFor(() => uplink.reports().length === 1, { timeoutMs: 5_000, what: 'the report' });
    r.receive(control, encodeDeadLetterMessage({ v: 1, type: 'report-ack', gatewayId: GW, reportId: 'BBBBBBBBBBBBBBBBBBBBBB', through: 99, added: 1, duplicates: 0, ackedAt: clock.now() }));
    expect(r.reportedThrough).toBe(0);
    r.uplinkDown();
    r.subscribed(true);
    await waitFor(() => uplink.reports().length === 2, { timeoutMs: 5_000, what: 'the report sent again' });
    const [first, second] = uplink.reports();
    expect(second!.letters.map((l) => l.id)).toEqual([1]);
    expect(second!.reportId).not.toBe(first!.reportId);
    // The ack of the first copy arriving late still counts.
    r.receive(control, ack(first!));
    expect(r.reportedThrough).toBe(1);
  });

  it('replays a letter under the current patterns into the outbox and reports the result', async () => {
    const id = refuse('factory/m1/telemetry', '{"metrics":{"n":7}}', 'FERRY_ERR_TOPIC_UNKNOWN');
    const r = start(patterns([{ pattern: 'factory/{deviceId}/telemetry' }]));
    const request = (letterId: number, requestId: string): Buffer =>
      encodeDeadLetterMessage({ v: 1, type: 'replay', gatewayId: GW, requestId, letterId, requestedAt: clock.now() });
    r.receive(control, request(id, 'CCCCCCCCCCCCCCCCCCCCCC'));
    await waitFor(() => uplink.results().length === 1, { timeoutMs: 5_000, what: 'the replay result' });
    expect(uplink.results()[0]).toMatchObject({ letterId: id, outcome: 'committed', readings: 1, requestId: 'CCCCCCCCCCCCCCCCCCCCCC' });
    expect(committed.flat().map((reading) => [reading.deviceId, reading.metrics])).toEqual([['m1', { n: 7 }]]);
    expect(store.get(id)?.replayedAt).not.toBeNull();
    // Asked twice (a redelivered request): nothing is committed again.
    r.receive(control, request(id, 'DDDDDDDDDDDDDDDDDDDDDD'));
    await waitFor(() => uplink.results().length === 2, { timeoutMs: 5_000, what: 'the second result' });
    expect(uplink.results()[1]).toMatchObject({ outcome: 'already-replayed' });
    expect(committed).toHaveLength(1);
  });

  it('keeps a letter refused again with its new reason, and answers not-found for a letter it does not hold', async () => {
    const id = refuse('devices/d1/telemetry', '{"metrics":{"t":[1]}}');
    const r = start();
    r.receive(control, encodeDeadLetterMessage({ v: 1, type: 'replay', gatewayId: GW, requestId: 'EEEEEEEEEEEEEEEEEEEEEE', letterId: id, requestedAt: clock.now() }));
    r.receive(control, encodeDeadLetterMessage({ v: 1, type: 'replay', gatewayId: GW, requestId: 'FFFFFFFFFFFFFFFFFFFFFF', letterId: 999, requestedAt: clock.now() }));
    await waitFor(() => uplink.results().length === 2, { timeoutMs: 5_000, what: 'both results' });
    const byId = new Map(uplink.results().map((res) => [res.letterId, res]));
    expect(byId.get(id)).toMatchObject({ outcome: 'rejected', code: 'FERRY_ERR_PAYLOAD_SCHEMA' });
    expect(store.get(id)).toMatchObject({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', replayedAt: null });
    expect(byId.get(999)).toMatchObject({ outcome: 'not-found' });
    expect(committed).toEqual([]);
  });

  it('ignores control messages for another gateway', async () => {
    const id = refuse('devices/d1/telemetry', '{"metrics":{"n":1}}');
    const r = start();
    r.receive(control, encodeDeadLetterMessage({ v: 1, type: 'replay', gatewayId: 'gw-other', requestId: 'GGGGGGGGGGGGGGGGGGGGGG', letterId: id, requestedAt: clock.now() }));
    await new Promise((resolve) => setImmediate(resolve));
    expect(uplink.sent).toEqual([]);
  });
});

describe('dead-letter report pieces', () => {
  it('builds a report whose through is the last letter, cutting payloads to 4 KiB and marking the cut', () => {
    const store = createSqliteDeadLetterStore({ path: ':memory:' });
    try {
      const big = Buffer.from(JSON.stringify({ metrics: { s: 'x'.repeat(9_000) } }));
      store.add(deviceDeadLetter(GW, { code: 'FERRY_ERR_PAYLOAD_TOO_LARGE', reason: 'too large' }, 'devices/d1/telemetry', 'd1', big, NOW));
      const report = buildReport({ gatewayId: GW, reportId: 'AAAAAAAAAAAAAAAAAAAAAA', sentAt: NOW, after: 0, letters: store.list(), counts: store.counts(), groups: store.heldBy() });
      expect(report.through).toBe(1);
      expect(report.letters[0]).toMatchObject({ truncated: true, payloadBytes: big.byteLength });
      expect(report.letters[0]!.payload).toHaveLength(4096);
      expect(report.counts.byDevice).toEqual([{ deviceId: 'd1', code: 'FERRY_ERR_PAYLOAD_TOO_LARGE', held: 1 }]);
      expect(buildReport({ gatewayId: GW, reportId: 'AAAAAAAAAAAAAAAAAAAAAA', sentAt: NOW, after: 7, letters: [], counts: store.counts(), groups: [] }).through).toBe(7);
    } finally {
      store.close();
    }
  });

  it('will not replay a login mismatch, a partial drop or a capped payload', () => {
    const base = { id: 1, at: NOW, replayedAt: null, payload: Buffer.from('{}'), source: { topic: 'devices/d/telemetry' } } as const;
    expect(unreplayableReason({ ...base, code: 'FERRY_ERR_DEVICE_NOT_AUTHORIZED', reason: 'x' })).toMatch(/login/);
    expect(unreplayableReason({ ...base, code: 'FERRY_ERR_VALUE_NOT_FINITE', reason: 'NaN; the rest of the reading was kept' })).toMatch(/rest/);
    expect(unreplayableReason({ ...base, code: 'FERRY_ERR_PAYLOAD_TOO_LARGE', reason: 'x', payloadBytes: 5_000_000 })).toMatch(/first 2 of/);
    expect(unreplayableReason({ ...base, code: 'FERRY_ERR_PAYLOAD_JSON', reason: 'x' })).toBeUndefined();
  });
});
