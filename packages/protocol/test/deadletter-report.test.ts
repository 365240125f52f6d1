import { describe, expect, it } from 'vitest';
import {
  decodeDeadLetterControl,
  decodeGatewayDeadLetterMessage,
  encodeDeadLetterMessage,
  MAX_LETTERS_PER_REPORT,
  parseUplinkTopic,
  REPORTED_PAYLOAD_BYTES,
  reportedPayload,
  reportedPayloadBytes,
  uplinkTopics,
} from '../src/index.js';
import type { DeadLetterReport, ReportedLetter } from '../src/index.js';

const NONCE = 'AAAAAAAAAAAAAAAAAAAAAA';
const now = Date.now();

function letter(id: number, overrides: Partial<ReportedLetter> = {}): ReportedLetter {
  return { id, at: now, code: 'FERRY_ERR_PAYLOAD_JSON', reason: 'bad', replayedAt: null, ...reportedPayload(Buffer.from('{x')), deviceId: 'd1', topic: 'devices/d1/telemetry', ...overrides };
}

function report(overrides: Partial<DeadLetterReport> = {}): DeadLetterReport {
  return {
    v: 1,
    type: 'report',
    gatewayId: 'gw-1',
    reportId: NONCE,
    sentAt: now,
    after: 0,
    through: 2,
    letters: [letter(1), letter(2)],
    counts: { held: 2, discarded: 0, byCode: { FERRY_ERR_PAYLOAD_JSON: 2 }, byDevice: [{ deviceId: 'd1', code: 'FERRY_ERR_PAYLOAD_JSON', held: 2 }] },
    ...overrides,
  };
}

describe('dead-letter report topics', () => {
  it('spells the report and control topics per gateway and parses them back', () => {
    expect(uplinkTopics.deadLetters('gw-1')).toBe('ferry/v1/gw/gw-1/deadletters');
    expect(uplinkTopics.deadLetterControl('gw-1')).toBe('ferry/v1/gw/gw-1/deadletters-ctl');
    expect(parseUplinkTopic(uplinkTopics.deadLetters('gw-1'))).toEqual({ gatewayId: 'gw-1', kind: 'deadletters' });
    expect(parseUplinkTopic(uplinkTopics.deadLetterControl('gw-1'))).toEqual({ gatewayId: 'gw-1', kind: 'deadletters-ctl' });
    expect(parseUplinkTopic('ferry/v1/gw/gw-1/deadletters-other')).toBeUndefined();
    expect(uplinkTopics.allDeadLetters).toBe('ferry/v1/gw/+/deadletters');
  });
});

describe('dead-letter report messages', () => {
  it('round-trips a report, a replay result, an ack and a replay request', () => {
    const r = report();
    expect(decodeGatewayDeadLetterMessage(encodeDeadLetterMessage(r))).toEqual({ ok: true, value: r });
    const result = { v: 1, type: 'replay-result', gatewayId: 'gw-1', requestId: NONCE, letterId: 3, at: now, outcome: 'committed', readings: 1 } as const;
    expect(decodeGatewayDeadLetterMessage(encodeDeadLetterMessage(result))).toEqual({ ok: true, value: result });
    const ack = { v: 1, type: 'report-ack', gatewayId: 'gw-1', reportId: NONCE, through: 2, added: 2, duplicates: 0, ackedAt: now } as const;
    expect(decodeDeadLetterControl(encodeDeadLetterMessage(ack))).toEqual({ ok: true, value: ack });
    const replay = { v: 1, type: 'replay', gatewayId: 'gw-1', requestId: NONCE, letterId: 3, requestedAt: now } as const;
    expect(decodeDeadLetterControl(encodeDeadLetterMessage(replay))).toEqual({ ok: true, value: replay });
  });

  it('refuses a report whose letters lie outside (after, through], an unknown version and too many letters', () => {
    expect(decodeGatewayDeadLetterMessage(encodeDeadLetterMessage(report({ through: 1 }))).ok).toBe(false);
    expect(decodeGatewayDeadLetterMessage(Buffer.from(JSON.stringify({ ...report(), v: 2 }))).ok).toBe(false);
    const many = Array.from({ length: MAX_LETTERS_PER_REPORT + 1 }, (_, i) => letter(i + 1));
    expect(decodeGatewayDeadLetterMessage(encodeDeadLetterMessage(report({ letters: many, through: many.length }))).ok).toBe(false);
    expect(decodeGatewayDeadLetterMessage(Buffer.from('{not json'))).toEqual({ ok: false, reason: 'not valid JSON' });
    // A control message is not a gateway message, and the other way round.
    expect(decodeDeadLetterControl(encodeDeadLetterMessage(report())).ok).toBe(false);
  });

  it('carries at most 4 KiB of a payload, marks the cut, and keeps binary bytes as base64', () => {
    const big = Buffer.from(JSON.stringify({ metrics: { s: 'x'.repeat(10_000) } }));
    const cut = reportedPayload(big);
    expect(cut).toMatchObject({ payloadEncoding: 'utf8', payloadBytes: big.byteLength, truncated: true });
    expect(Buffer.from(cut.payload).equals(big.subarray(0, REPORTED_PAYLOAD_BYTES))).toBe(true);
    const binary = Buffer.from([0x00, 0xff, 0x80]);
    const kept = reportedPayload(binary);
    expect(kept).toEqual({ payloadEncoding: 'base64', payload: binary.toString('base64'), payloadBytes: 3, truncated: false });
    expect(reportedPayloadBytes(kept)?.equals(binary)).toBe(true);
    expect(reportedPayloadBytes({ payloadEncoding: 'utf8', payload: 'y'.repeat(REPORTED_PAYLOAD_BYTES + 1) })).toBeUndefined();
  });
});
