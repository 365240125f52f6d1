// Availability messages (Last Wills and their online counterparts) are dated at arrival in every
// format, and a Sparkplug NDEATH counts only for the session its NBIRTH opened.
import { describe, expect, it } from 'vitest';
import { encodeSparkplugPayload, SparkplugDataType as T } from '../src/index.js';
import { decoderFor, only } from './fixture.js';

// From the clock at run time, never a pinned date.
const NOW = Date.now();
/** The time a Will carries: when its session connected, well before it is published. */
const CONNECTED = NOW - 10 * 60_000;

describe('availability dated at arrival', () => {
  it.each([
    ['ferry', { pattern: 'devices/{deviceId}/status', format: 'ferry' as const, kind: 'status' as const }, 'devices/d1/status', JSON.stringify({ state: 'offline', ts: CONNECTED })],
    ['tasmota LWT', { pattern: 'tele/{deviceId}/#', format: 'tasmota' as const }, 'tele/plug1/LWT', 'Offline'],
    ['zigbee2mqtt availability', { pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' as const }, 'zigbee2mqtt/lamp/availability', JSON.stringify({ state: 'offline' })],
    ['shelly online', { pattern: 'shellies/{deviceId}/#', format: 'shelly-gen1' as const }, 'shellies/s1/online', 'false'],
    ['esphome status', { pattern: 'esphome/{deviceId}/#', format: 'esphome' as const }, 'esphome/node1/status', 'offline'],
  ])('%s: an offline Will is dated when it arrived, not by the time it carries', (_name, pattern, topic, payload) => {
    const d = decoderFor(pattern, NOW);
    expect(only(d.decode(topic, payload, NOW))).toMatchObject({ kind: 'status', ts: NOW, tsSource: 'gateway', receivedAt: NOW, metrics: { state: 'offline' } });
  });

  it('Sparkplug NDEATH and DDEATH carry the session time; they are dated at arrival too', () => {
    const d = decoderFor({ pattern: 'spBv1.0/{deviceId#}', format: 'sparkplug-b' }, NOW);
    d.decode('spBv1.0/g/NBIRTH/e', encodeSparkplugPayload({ timestamp: CONNECTED, seq: 0, metrics: [{ name: 'bdSeq', datatype: T.UInt64, value: 3 }] }), CONNECTED);
    const ddeath = only(d.decode('spBv1.0/g/DDEATH/e/pump', encodeSparkplugPayload({ timestamp: CONNECTED, seq: 1, metrics: [] }), NOW));
    expect(ddeath).toMatchObject({ deviceId: 'g/e/pump', ts: NOW, tsSource: 'gateway' });
    const ndeath = d.decode('spBv1.0/g/NDEATH/e', encodeSparkplugPayload({ timestamp: CONNECTED, metrics: [{ name: 'bdSeq', datatype: T.UInt64, value: 3 }] }), NOW);
    expect(ndeath.readings.map((r) => [r.deviceId, r.ts, r.metrics.state])).toEqual([['g/e', NOW, 'offline']]);
  });

  it('telemetry keeps the device time', () => {
    const d = decoderFor({ pattern: 'devices/{deviceId}/telemetry', format: 'ferry' }, NOW);
    expect(only(d.decode('devices/d1/telemetry', JSON.stringify({ ts: NOW - 5000, metrics: { t: 1 } }), NOW))).toMatchObject({ ts: NOW - 5000, tsSource: 'device' });
  });
});

describe('Sparkplug NDEATH and bdSeq', () => {
  const pattern = { pattern: 'spBv1.0/{deviceId#}', format: 'sparkplug-b' as const };
  const birth = (bdSeq: number): Uint8Array => encodeSparkplugPayload({ timestamp: NOW, seq: 0, metrics: [{ name: 'bdSeq', datatype: T.UInt64, value: bdSeq }] });

  it('ignores an NDEATH without a bdSeq once the NBIRTH gave one', () => {
    const d = decoderFor(pattern, NOW);
    d.decode('spBv1.0/g/NBIRTH/e', birth(4));
    expect(d.decode('spBv1.0/g/NDEATH/e', encodeSparkplugPayload({ metrics: [] })).readings).toEqual([]);
    expect(d.decode('spBv1.0/g/NDEATH/e', encodeSparkplugPayload({ metrics: [{ name: 'bdSeq', datatype: T.UInt64, value: 4 }] })).readings).toHaveLength(1);
  });

  it('ignores the previous session’s NDEATH that arrives after the node came back', () => {
    const d = decoderFor(pattern, NOW);
    d.decode('spBv1.0/g/NBIRTH/e', birth(4));
    d.decode('spBv1.0/g/NBIRTH/e', birth(5));
    expect(d.decode('spBv1.0/g/NDEATH/e', encodeSparkplugPayload({ metrics: [{ name: 'bdSeq', datatype: T.UInt64, value: 4 }] })).readings).toEqual([]);
  });
});
