import { describe, expect, it } from 'vitest';
import { encodeSparkplugPayload, SparkplugDataType as T } from '../src/index.js';
import { decoderFor, only } from './fixture.js';

const NOW = Date.UTC(2026, 10, 25, 12);
const TS = NOW - 1000;
const pattern = { pattern: 'spBv1.0/{deviceId#}', format: 'sparkplug-b' as const };

// After the spec's examples (Eclipse Sparkplug 3.0, section 6.4 payloads): an NBIRTH defines
// names, aliases and datatypes together with bdSeq; NDATA carries aliases only.
function nbirth(seq = 0, bdSeq = 0): Uint8Array {
  return encodeSparkplugPayload({
    timestamp: TS,
    seq,
    metrics: [
      { name: 'bdSeq', datatype: T.UInt64, value: bdSeq },
      { name: 'Node Control/Rebirth', datatype: T.Boolean, value: false },
      { name: 'Inputs/Temperature', alias: 1, datatype: T.Float, value: 21.5 },
      { name: 'Inputs/Count', alias: 2, datatype: T.UInt64, value: 2n ** 64n - 1n },
      { name: 'Inputs/Offset', alias: 3, datatype: T.Int8, value: -3 },
      { name: 'Inputs/Delta', alias: 4, datatype: T.Int64, value: -(2n ** 60n) },
      { name: 'Outputs/Running', alias: 5, datatype: T.Boolean, value: true },
      { name: 'Properties/Model', alias: 6, datatype: T.String, value: 'PLC-9' },
    ],
  });
}

describe('Sparkplug B', () => {
  it('reads an NBIRTH: online status plus every metric decoded by its datatype, 64-bit integers exact', () => {
    const d = decoderFor(pattern, NOW);
    const out = d.decode('spBv1.0/plant1/NBIRTH/edge1', nbirth());
    expect(out.rejection).toBeUndefined();
    expect(out.readings).toHaveLength(2);
    expect(out.readings[0]).toMatchObject({ deviceId: 'plant1/edge1', kind: 'status', metrics: { state: 'online' } });
    expect(out.readings[1]).toMatchObject({ deviceId: 'plant1/edge1', kind: 'telemetry', ts: TS, tsSource: 'device' });
    expect(out.readings[1]?.metrics).toEqual({
      'Inputs/Temperature': 21.5,
      'Inputs/Count': '18446744073709551615',
      'Inputs/Offset': -3,
      'Inputs/Delta': '-1152921504606846976',
      'Outputs/Running': true,
      'Properties/Model': 'PLC-9',
    });
  });

  it('resolves NDATA aliases from the BIRTH and flags a sequence gap', () => {
    const d = decoderFor(pattern, NOW);
    d.decode('spBv1.0/plant1/NBIRTH/edge1', nbirth(0));
    const data = (seq: number) => encodeSparkplugPayload({ timestamp: TS + seq, seq, metrics: [{ alias: 1, datatype: T.Float, value: 22.25 }, { alias: 3, datatype: T.Int8, value: 200 }] });
    const first = only(d.decode('spBv1.0/plant1/NDATA/edge1', data(1)));
    expect(first.metrics).toEqual({ 'Inputs/Temperature': 22.25, 'Inputs/Offset': -56 });
    expect(first.flags).toBeUndefined();
    const gap = only(d.decode('spBv1.0/plant1/NDATA/edge1', data(5)));
    expect(gap.flags).toEqual(['sparkplug_seq_gap']);
  });

  it('wraps the sequence from 255 to 0 without a gap', () => {
    const d = decoderFor(pattern, NOW);
    d.decode('spBv1.0/g/NBIRTH/e', nbirth(254));
    const data = (seq: number) => encodeSparkplugPayload({ timestamp: TS, seq, metrics: [{ alias: 1, datatype: T.Float, value: 1 }] });
    expect(only(d.decode('spBv1.0/g/NDATA/e', data(255))).flags).toBeUndefined();
    expect(only(d.decode('spBv1.0/g/NDATA/e', data(0))).flags).toBeUndefined();
    expect(d.decode('spBv1.0/g/NDATA/e', data(300)).rejection?.code).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
  });

  it('sets aside an alias no BIRTH defined, keeping the rest', () => {
    const d = decoderFor(pattern, NOW);
    d.decode('spBv1.0/g/NBIRTH/e', nbirth());
    const out = d.decode('spBv1.0/g/NDATA/e', encodeSparkplugPayload({ timestamp: TS, seq: 1, metrics: [{ alias: 99, datatype: T.Float, value: 1 }, { alias: 5, datatype: T.Boolean, value: false }] }));
    expect(out.readings[0]?.metrics).toEqual({ 'Outputs/Running': false });
    expect(out.dropped[0]?.reason).toMatch(/alias 99/);
  });

  it('reads DBIRTH/DDATA for a device and DDEATH as the device offline', () => {
    const d = decoderFor(pattern, NOW);
    d.decode('spBv1.0/g/NBIRTH/e', nbirth());
    const birth = d.decode('spBv1.0/g/DBIRTH/e/pump 1', encodeSparkplugPayload({ timestamp: TS, seq: 1, metrics: [{ name: 'Speed', alias: 10, datatype: T.UInt16, value: 1450 }] }));
    expect(birth.readings.map((r) => [r.deviceId, r.kind])).toEqual([['g/e/pump 1', 'status'], ['g/e/pump 1', 'telemetry']]);
    expect(only(d.decode('spBv1.0/g/DDATA/e/pump 1', encodeSparkplugPayload({ timestamp: TS, seq: 2, metrics: [{ alias: 10, datatype: T.UInt16, value: 1500 }] }))).metrics).toEqual({ Speed: 1500 });
    expect(only(d.decode('spBv1.0/g/DDEATH/e/pump 1', encodeSparkplugPayload({ timestamp: TS, seq: 3, metrics: [] })))).toMatchObject({ deviceId: 'g/e/pump 1', kind: 'status', metrics: { state: 'offline' } });
  });

  it('reads NDEATH as the node and its devices offline, but ignores the late will of an older session', () => {
    const d = decoderFor(pattern, NOW);
    d.decode('spBv1.0/g/NBIRTH/e', nbirth(0, 7));
    d.decode('spBv1.0/g/DBIRTH/e/d1', encodeSparkplugPayload({ timestamp: TS, seq: 1, metrics: [{ name: 'x', datatype: T.Int32, value: -5 }] }));
    const stale = d.decode('spBv1.0/g/NDEATH/e', encodeSparkplugPayload({ metrics: [{ name: 'bdSeq', datatype: T.UInt64, value: 6 }] }));
    expect(stale.readings).toEqual([]);
    const death = d.decode('spBv1.0/g/NDEATH/e', encodeSparkplugPayload({ metrics: [{ name: 'bdSeq', datatype: T.UInt64, value: 7 }] }));
    expect(death.readings.map((r) => [r.deviceId, r.metrics.state])).toEqual([['g/e', 'offline'], ['g/e/d1', 'offline']]);
  });

  it('splits metrics with their own timestamps into one reading per time and skips nulls', () => {
    const d = decoderFor(pattern, NOW);
    const out = d.decode('spBv1.0/g/NDATA/e', encodeSparkplugPayload({ timestamp: TS, metrics: [
      { name: 'a', datatype: T.Double, value: 1.5, timestamp: TS - 2000 },
      { name: 'b', datatype: T.Double, value: 2.5 },
      { name: 'c', datatype: T.Double, is_null: true },
    ] }));
    expect(out.readings.map((r) => [r.ts, r.metrics])).toEqual([[TS - 2000, { a: 1.5 }], [TS, { b: 2.5 }]]);
    expect(out.readings[0]?.flags).toEqual(['sparkplug_no_birth']);
  });

  it('rejects NaN per metric and bytes that are not a payload as a whole', () => {
    const d = decoderFor(pattern, NOW);
    const out = d.decode('spBv1.0/g/NDATA/e', encodeSparkplugPayload({ timestamp: TS, metrics: [{ name: 'a', datatype: T.Float, value: Number.NaN }, { name: 'b', datatype: T.Int16, value: -2 }] }));
    expect(out.readings[0]?.metrics).toEqual({ b: -2 });
    expect(out.dropped.map((r) => r.code)).toEqual(['FERRY_ERR_VALUE_NOT_FINITE']);
    expect(d.decode('spBv1.0/g/NDATA/e', Buffer.from([0xff, 0xff, 0xff])).rejection?.code).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
  });

  it('ignores STATE and command topics', () => {
    const d = decoderFor(pattern, NOW);
    expect(d.decode('spBv1.0/STATE/scada', '{"online":true}').readings).toEqual([]);
    expect(d.decode('spBv1.0/g/NCMD/e', encodeSparkplugPayload({ metrics: [] })).readings).toEqual([]);
  });
});
