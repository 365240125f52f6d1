import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeDevicePayload, defaultLimits, parseDeviceTime } from '../src/index.js';
import type { DecodeResult, Limits } from '../src/index.js';

const NOW = Date.UTC(2026, 10, 25, 12, 0, 0);

function decode(payload: string | Buffer, kind: 'telemetry' | 'status' = 'telemetry', limits: Limits = defaultLimits): DecodeResult {
  return decodeDevicePayload({
    payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
    kind,
    deviceId: 'dev-1',
    receivedAt: NOW,
    limits,
  });
}

function rejectionCode(result: DecodeResult): string | undefined {
  return result.ok ? undefined : result.rejection.code;
}

describe('decodeDevicePayload', () => {
  it('reads the native payload with device time, seq and tags', () => {
    const result = decode(JSON.stringify({ ts: NOW - 1000, seq: 7, metrics: { temperature: 21.5, on: true, mode: 'eco' }, tags: { room: 'a' } }));
    expect(result).toEqual({
      ok: true,
      dropped: [],
      reading: {
        deviceId: 'dev-1',
        kind: 'telemetry',
        ts: NOW - 1000,
        tsSource: 'device',
        receivedAt: NOW,
        deviceSeq: 7,
        metrics: { temperature: 21.5, on: true, mode: 'eco' },
        tags: { room: 'a' },
      },
    });
  });

  it('takes the receive time when ts is missing, and says so', () => {
    const result = decode('{"metrics":{"t":1}}');
    expect(result.ok && result.reading.ts).toBe(NOW);
    expect(result.ok && result.reading.tsSource).toBe('gateway');
  });

  it('accepts a flat object of values as Zigbee2MQTT or Tasmota send it', () => {
    const result = decode('{"temperature":19.2,"humidity":48,"contact":false,"ts":"2026-11-25T11:59:00Z","seq":3}');
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.reading.metrics).toEqual({ temperature: 19.2, humidity: 48, contact: false });
    expect(result.reading.ts).toBe(Date.UTC(2026, 10, 25, 11, 59, 0));
    expect(result.reading.deviceSeq).toBe(3);
  });

  it('rejects malformed JSON with FERRY_ERR_PAYLOAD_JSON', () => {
    expect(rejectionCode(decode('{"metrics":'))).toBe('FERRY_ERR_PAYLOAD_JSON');
  });

  it('rejects wrong types with FERRY_ERR_PAYLOAD_SCHEMA and names the path', () => {
    const result = decode('{"metrics":{"t":{"nested":1}}}');
    expect(rejectionCode(result)).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
    expect(!result.ok && result.rejection.reason).toContain('metrics.t');
    expect(!result.ok && result.rejection.issues?.length).toBeGreaterThan(0);
  });

  it('sets aside a bare NaN per value and keeps the rest of the reading', () => {
    const result = decode('{"metrics":{"t":NaN,"h":40}}');
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.reading.metrics).toEqual({ h: 40 });
    expect(result.dropped.map((d) => d.code)).toEqual(['FERRY_ERR_VALUE_NOT_FINITE']);
  });

  it('rejects a reading whose only value is not finite', () => {
    expect(rejectionCode(decode('{"metrics":{"t":NaN}}'))).toBe('FERRY_ERR_VALUE_NOT_FINITE');
    expect(rejectionCode(decode('{"metrics":{"t":1e999}}'))).toBe('FERRY_ERR_VALUE_NOT_FINITE');
  });

  it('rejects an oversize payload before parsing it', () => {
    const big = JSON.stringify({ metrics: { s: 'x'.repeat(defaultLimits.maxPayloadBytes) } });
    expect(rejectionCode(decode(big))).toBe('FERRY_ERR_PAYLOAD_TOO_LARGE');
  });

  it('enforces metric count, name length and skew limits', () => {
    const limits: Limits = { ...defaultLimits, maxMetricsPerReading: 2, maxNameLength: 5 };
    expect(rejectionCode(decode('{"metrics":{"a":1,"b":2,"c":3}}', 'telemetry', limits))).toBe('FERRY_ERR_LIMIT_EXCEEDED');
    expect(rejectionCode(decode('{"metrics":{"toolongname":1}}', 'telemetry', limits))).toBe('FERRY_ERR_LIMIT_EXCEEDED');
    expect(rejectionCode(decode(JSON.stringify({ ts: NOW + 3_600_000, metrics: { a: 1 } })))).toBe('FERRY_ERR_TIMESTAMP_SKEW');
  });

  it('flags a device clock that never synced and uses the receive time', () => {
    const result = decode('{"ts":0,"metrics":{"a":1}}');
    expect(result.ok && result.reading.ts).toBe(NOW);
    expect(result.ok && result.reading.flags).toEqual(['clock_unsynced']);
  });

  it('reads device status as plain text or JSON', () => {
    const plain = decode('offline', 'status');
    expect(plain.ok && plain.reading.metrics).toEqual({ state: 'offline' });
    const json = decode('{"state":"online"}', 'status');
    expect(json.ok && json.reading.kind).toBe('status');
    expect(rejectionCode(decode('sleepy', 'status'))).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
  });

  it('never throws, whatever the bytes', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), fc.uint8Array({ maxLength: 200 })), (input) => {
        const payload = typeof input === 'string' ? Buffer.from(input) : Buffer.from(input);
        const result = decode(payload);
        expect(typeof result.ok).toBe('boolean');
      }),
      { numRuns: 500 },
    );
  });
});

describe('parseDeviceTime', () => {
  it('tells seconds, milliseconds, microseconds and nanoseconds apart', () => {
    const ms = Date.UTC(2026, 0, 1);
    expect(parseDeviceTime(ms / 1000)).toBe(ms);
    expect(parseDeviceTime(ms)).toBe(ms);
    expect(parseDeviceTime(ms * 1000)).toBe(ms);
    expect(parseDeviceTime(ms * 1e6)).toBe(ms);
    expect(parseDeviceTime('2026-01-01T01:00:00+01:00')).toBe(ms);
    expect(parseDeviceTime('yesterday')).toBeUndefined();
  });
});
