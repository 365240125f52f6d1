// Routing keys: the messages a device's (or a Sparkplug node's) state and health depend on share
// one key, from the topic alone, so an ingestor partition receives all of them.
import { describe, expect, it } from 'vitest';
import { createDecoderSet } from '../src/index.js';

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
