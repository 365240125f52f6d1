// Routing keys: the messages a device's (or a Sparkplug node's) state and health depend on share
// one key, from the topic alone, so an ingestor partition receives all of them.
import { describe, expect, it } from 'vitest';
import { createDecoderSet } from '../src/index.js';
import { ROUTE_CACHE_TOPICS } from '../src/decoder-set.js';

const set = createDecoderSet([
  { pattern: 'spBv1.0/{deviceId#}', format: 'sparkplug-b' },
  { pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' },
  { pattern: 'esphome/{deviceId#}', format: 'esphome' },
  { pattern: 'tele/{deviceId}/+', format: 'tasmota' },
  { pattern: 'devices/{deviceId}/telemetry' },
]);
const key = (topic: string): string | undefined => set.route(topic)?.routingKey;

describe('routing keys', () => {
  it('routes a Sparkplug node\'s BIRTH, DATA, DEATH and its devices\' messages together', () => {
    const keys = ['spBv1.0/plant1/NBIRTH/edge1', 'spBv1.0/plant1/NDATA/edge1', 'spBv1.0/plant1/NDEATH/edge1', 'spBv1.0/plant1/DDATA/edge1/pump'].map(key);
    expect(new Set(keys)).toEqual(new Set(['plant1/edge1']));
    expect(set.route('spBv1.0/plant1/NDATA/edge1')?.deviceId).toBe('plant1/NDATA/edge1');
  });

  it('routes availability with the data of its device', () => {
    expect(key('zigbee2mqtt/kitchen/sensor/availability')).toBe('kitchen/sensor');
    expect(key('zigbee2mqtt/kitchen/sensor')).toBe('kitchen/sensor');
    expect(key('esphome/floor1/hall/status')).toBe('floor1/hall');
    expect(key('esphome/floor1/hall/sensor/co2/state')).toBe('floor1/hall');
    expect(key('tele/plug001/LWT')).toBe(key('tele/plug001/SENSOR'));
  });

  it('falls back to the pattern\'s device id, and answers undefined for a topic no pattern matches', () => {
    expect(key('devices/d1/telemetry')).toBe('d1');
    expect(set.route('elsewhere/d1')).toBeUndefined();
  });
});

describe('remembered routes', () => {
  const payload = (n: number): Uint8Array => Buffer.from(JSON.stringify({ ts: 1_700_000_000_000 + n, metrics: { n } }));

  it('decodes a topic the same the first time and every time after, past the bound of topics remembered', () => {
    const fresh = createDecoderSet([{ pattern: 'devices/{deviceId}/telemetry' }, { pattern: 'tele/{deviceId}/+', format: 'tasmota' }]);
    const topics = Array.from({ length: ROUTE_CACHE_TOPICS + 10 }, (_, i) => `devices/d${i}/telemetry`);
    const first = topics.map((topic, i) => fresh.decode(topic, payload(i), 1_700_000_000_000));
    const again = topics.map((topic, i) => fresh.decode(topic, payload(i), 1_700_000_000_000));
    expect(again).toEqual(first);
    expect(first[ROUTE_CACHE_TOPICS + 9]).toMatchObject({ deviceId: `d${ROUTE_CACHE_TOPICS + 9}`, pattern: 'devices/{deviceId}/telemetry' });
    expect(fresh.decode('tele/plug1/SENSOR', Buffer.from('{"ENERGY":{"Power":5}}'), 1_700_000_000_000)).toEqual(
      fresh.decode('tele/plug1/SENSOR', Buffer.from('{"ENERGY":{"Power":5}}'), 1_700_000_000_000),
    );
  });

  it('refuses a topic that is not valid UTF-8 even after routing it', () => {
    const bad = 'devices/d\uD800/telemetry';
    expect(set.route(bad)?.deviceId).toBe('d\uD800');
    expect(set.decode(bad, payload(1), 1_700_000_000_000).rejection?.code).toBe('FERRY_ERR_PAYLOAD_ENCODING');
    expect(set.decode(bad, payload(1), 1_700_000_000_000).rejection?.code).toBe('FERRY_ERR_PAYLOAD_ENCODING');
  });

  it('names the pattern and format of every decoded outcome, and keeps a rejection or an ignore reason', () => {
    const routed = createDecoderSet([
      { pattern: 'devices/{deviceId}/telemetry' },
      { pattern: 'tele/{deviceId}/+', format: 'tasmota' },
      { pattern: 'meta/{deviceId}', action: 'ignore', reason: 'metadata' },
    ]);
    const usual = routed.decode('devices/d1/telemetry', Buffer.from('{"metrics":{"t":1}}'), 1_000);
    expect(usual).toEqual({ readings: [expect.objectContaining({ deviceId: 'd1', metrics: { t: 1 } })], dropped: [], deviceId: 'd1', pattern: 'devices/{deviceId}/telemetry', format: 'ferry' });
    const refused = routed.decode('devices/d1/telemetry', Buffer.from('not json'), 1_000);
    expect(refused).toMatchObject({ readings: [], deviceId: 'd1', pattern: 'devices/{deviceId}/telemetry', format: 'ferry', rejection: { code: 'FERRY_ERR_PAYLOAD_JSON' } });
    const skipped = routed.decode('meta/d1', Buffer.from('x'), 1_000);
    expect(skipped).toMatchObject({ readings: [], ignored: 'metadata', deviceId: 'd1', pattern: 'meta/{deviceId}' });
  });
});
