import { describe, expect, it } from 'vitest';
import { compilePattern, parseUplinkTopic, uplinkTopics } from '../src/index.js';

describe('compilePattern', () => {
  it('matches the default telemetry pattern and extracts the device id', () => {
    const p = compilePattern('devices/{deviceId}/telemetry', 'telemetry');
    expect(p.filter).toBe('devices/+/telemetry');
    expect(p.match('devices/abc/telemetry')).toEqual({ deviceId: 'abc' });
    expect(p.match('devices/abc/status')).toBeUndefined();
    expect(p.match('devices/abc/telemetry/x')).toBeUndefined();
  });

  it('takes ids containing / from a trailing {deviceId#} level', () => {
    const p = compilePattern('zigbee2mqtt/{deviceId#}', 'telemetry');
    expect(p.filter).toBe('zigbee2mqtt/#');
    expect(p.match('zigbee2mqtt/kitchen/sensor')).toEqual({ deviceId: 'kitchen/sensor' });
  });

  it('supports + and # around the id', () => {
    const p = compilePattern('site/+/{deviceId}/#', 'telemetry');
    expect(p.match('site/a/dev9/x/y')).toEqual({ deviceId: 'dev9' });
    expect(p.match('other/a/dev9/x')).toBeUndefined();
  });

  it('lets a trailing # match the level before it, as MQTT does [MQTT-4.7.1-2]', () => {
    const p = compilePattern('site/{deviceId}/#', 'telemetry');
    expect(p.filter).toBe('site/+/#');
    expect(p.match('site/dev9')).toEqual({ deviceId: 'dev9' });
    expect(p.match('site/dev9/x')).toEqual({ deviceId: 'dev9' });
    expect(p.match('site')).toBeUndefined();
    const q = compilePattern('site/+/{deviceId}/#', 'telemetry');
    expect(q.match('site/a/dev9')).toEqual({ deviceId: 'dev9' });
    expect(q.match('site/a')).toBeUndefined();
    const r = compilePattern('tele/{deviceId}/SENSOR/#', 'telemetry');
    expect(r.match('tele/plug/SENSOR')).toEqual({ deviceId: 'plug' });
    expect(r.match('tele/plug/STATE')).toBeUndefined();
  });

  it('refuses patterns without an id or with misplaced wildcards', () => {
    expect(() => compilePattern('devices/+/telemetry', 'telemetry')).toThrow(/no \{deviceId\}/);
    expect(() => compilePattern('a/#/{deviceId}', 'telemetry')).toThrow(/last level/);
  });
});

describe('uplink topics', () => {
  it('round-trips gateway ids through topic names', () => {
    expect(parseUplinkTopic(uplinkTopics.batch('gw-1'))).toEqual({ gatewayId: 'gw-1', kind: 'batch' });
    expect(parseUplinkTopic(uplinkTopics.ack('gw-1'))).toEqual({ gatewayId: 'gw-1', kind: 'ack' });
    expect(parseUplinkTopic('devices/x/telemetry')).toBeUndefined();
  });
});
