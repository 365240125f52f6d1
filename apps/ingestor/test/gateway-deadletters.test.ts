// Gateway dead letters at the ingestor, without sockets: reports into a real SQLite store, acks and
// replay requests captured from a fake publish.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSqliteDeadLetterStore } from '@ferry/deadletter';
import type { DeadLetterStore } from '@ferry/deadletter';
import { encodeDeadLetterMessage, reportedPayload, uplinkTopics } from '@ferry/protocol';
import type { DeadLetterControl, DeadLetterReport, ReportedLetter } from '@ferry/protocol';
import { createRegistry, ManualClock, silentLogger } from '@ferry/runtime';
import { createGatewayDeadLetters } from '../src/gateway-deadletters.js';
import type { GatewayDeadLetters } from '../src/gateway-deadletters.js';

const NOW = Date.now();
let nonce = 0;
const id22 = (): string => String(++nonce).padStart(22, 'A');

function letter(id: number, overrides: Partial<ReportedLetter> = {}): ReportedLetter {
  return { id, at: NOW - 1000, code: 'FERRY_ERR_PAYLOAD_JSON', reason: 'bad', replayedAt: null, deviceId: `d${id}`, topic: `devices/d${id}/telemetry`, ...reportedPayload(Buffer.from(`{bad ${id}`)), ...overrides };
}

function report(gatewayId: string, letters: ReportedLetter[], after = 0): DeadLetterReport {
  return {
    v: 1,
    type: 'report',
    gatewayId,
    reportId: id22(),
    sentAt: NOW,
    after,
    through: letters.reduce((m, l) => Math.max(m, l.id), after),
    letters,
    counts: { held: letters.length, discarded: 3, byCode: { FERRY_ERR_PAYLOAD_JSON: letters.length }, byDevice: [] },
  };
}

describe('gateway dead letters at the ingestor', () => {
  let dir: string;
  let store: DeadLetterStore;
  let sent: Array<{ gatewayId: string; message: DeadLetterControl }>;
  let central: GatewayDeadLetters;
  const clock = new ManualClock(NOW);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-gwdl-'));
    store = createSqliteDeadLetterStore({ path: join(dir, 'deadletters.db'), clock });
    sent = [];
    central = createGatewayDeadLetters({
      store,
      publish: (gatewayId, message, done) => {
        sent.push({ gatewayId, message });
        done();
      },
      owns: (gatewayId) => gatewayId !== 'gw-elsewhere',
      clock,
      logger: silentLogger(),
      registry: createRegistry(),
    });
  });
  afterEach(() => {
    central.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps a report\'s letters once with the gateway named, and acks every copy of it', () => {
    const r = report('gw-1', [letter(1), letter(2, { ...reportedPayload(Buffer.alloc(5000, 0x61)) })]);
    central.receive(uplinkTopics.deadLetters('gw-1'), encodeDeadLetterMessage(r));
    central.receive(uplinkTopics.deadLetters('gw-1'), encodeDeadLetterMessage({ ...r, reportId: id22() }));
    const held = store.list({ gatewayId: 'gw-1' });
    expect(held.map((e) => [e.source.gatewayId, e.source.gatewayLetterId, e.source.deviceId])).toEqual([
      ['gw-1', 1, 'd1'],
      ['gw-1', 2, 'd2'],
    ]);
    expect(held[1]).toMatchObject({ payloadBytes: 5000 });
    expect(held[1]!.payload.byteLength).toBe(4096);
    expect(sent.map((s) => s.message)).toMatchObject([
      { type: 'report-ack', reportId: r.reportId, through: 2, added: 2, duplicates: 0 },
      { type: 'report-ack', through: 2, added: 0, duplicates: 2 },
    ]);
    expect(central.counts()['gw-1']).toMatchObject({ held: 2, discarded: 3, through: 2 });
  });

  it('ignores a report naming another gateway than its topic, and one for a gateway another partition takes', () => {
    central.receive(uplinkTopics.deadLetters('gw-2'), encodeDeadLetterMessage(report('gw-1', [letter(1)])));
    central.receive(uplinkTopics.deadLetters('gw-elsewhere'), encodeDeadLetterMessage(report('gw-elsewhere', [letter(1)])));
    central.receive(uplinkTopics.deadLetters('gw-1'), Buffer.from('{nope'));
    expect(store.counts().held).toBe(0);
    expect(sent).toEqual([]);
  });

  it('sends a replay request to the letter\'s gateway and applies the result to the central copy', async () => {
    central.receive(uplinkTopics.deadLetters('gw-1'), encodeDeadLetterMessage(report('gw-1', [letter(4)])));
    const entry = store.list({ origin: 'gateway' })[0]!;
    const answering = central.replay(entry, 60_000);
    const request = sent.find((s) => s.message.type === 'replay')!;
    expect(request).toMatchObject({ gatewayId: 'gw-1', message: { type: 'replay', letterId: 4 } });
    const requestId = (request.message as { requestId: string }).requestId;
    central.receive(
      uplinkTopics.deadLetters('gw-1'),
      encodeDeadLetterMessage({ v: 1, type: 'replay-result', gatewayId: 'gw-1', requestId, letterId: 4, at: NOW, outcome: 'committed', readings: 2 }),
    );
    expect(await answering).toEqual({ id: entry.id, gatewayId: 'gw-1', gatewayLetterId: 4, outcome: 'committed', readings: 2 });
    expect(store.get(entry.id)?.replayedAt).toBe(NOW);
    expect(await central.replay(store.get(entry.id)!, 60_000)).toMatchObject({ outcome: 'already-replayed' });
  });

  it('answers pending when the gateway does not answer in time, and takes the new reason when it arrives', async () => {
    central.receive(uplinkTopics.deadLetters('gw-1'), encodeDeadLetterMessage(report('gw-1', [letter(5)])));
    const entry = store.list({ origin: 'gateway' })[0]!;
    const answer = await central.replay(entry, 1);
    expect(answer).toMatchObject({ outcome: 'pending', gatewayId: 'gw-1', gatewayLetterId: 5 });
    central.receive(
      uplinkTopics.deadLetters('gw-1'),
      encodeDeadLetterMessage({ v: 1, type: 'replay-result', gatewayId: 'gw-1', requestId: id22(), letterId: 5, at: NOW, outcome: 'rejected', code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'still wrong' }),
    );
    expect(store.get(entry.id)).toMatchObject({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'still wrong', replayedAt: null });
  });
});
