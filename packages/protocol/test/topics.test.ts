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
