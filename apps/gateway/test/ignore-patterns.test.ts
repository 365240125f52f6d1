// Metadata topics (Home Assistant discovery, shellies/announce) under an `action: "ignore"` pattern:
// acknowledged, never stored, never dead-lettered; the verdict carries the reason to count them by.
import { afterEach, describe, expect, it } from 'vitest';
import { defaultLimits } from '@ferry/protocol';
import { createRegistry, silentLogger } from '@ferry/runtime';
import { createGateway } from '../src/index.js';
import { createDeviceMessageValidator } from '../src/validate.js';
import { connectDevice, startCloud, startTestBroker, tempDir, waitFor } from './harness.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const PATTERNS = [
  { pattern: 'homeassistant/#', action: 'ignore' as const, reason: 'home assistant discovery' },
  { pattern: 'shellies/announce', action: 'ignore' as const, reason: 'shelly announce' },
  { pattern: 'devices/{deviceId}/telemetry' },
];
// github.com/Koenkk/zigbee2mqtt/issues/14512 (a discovery config); shelly-api-docs.shelly.cloud/gen1/#mqtt (announce).
const DISCOVERY = '{"device_class":"voltage","state_topic":"zigbee2mqtt/détecteur_pir","unit_of_measurement":"mV"}';
const ANNOUNCE = '{"id":"shellyplug-s-7A1B2C","model":"SHPLG-S","mac":"7A1B2C","ip":"192.168.1.42","new_fw":false}';

describe('ignore patterns at the gateway', () => {
  it('hands the reason to the gateway as an accepted verdict with no readings', () => {
    const validator = createDeviceMessageValidator(PATTERNS, defaultLimits);
    expect(validator.validate('homeassistant/sensor/0x00124b0025002a68/voltage/config', Buffer.from(DISCOVERY), Date.now())).toEqual({
      ok: true,
      readings: [],
      dropped: [],
      ignored: 'home assistant discovery',
    });
    expect(validator.deviceIdOf('shellies/announce')).toBeUndefined();
    expect(validator.patterns.map((p) => p.filter)).toEqual(['devices/+/telemetry']);
  });

  it('acknowledges ignored messages without dead-lettering them, and stores the readings around them', async () => {
    const uplink = await startTestBroker();
    cleanups.push(() => uplink.close());
    const peer = await startCloud(uplink.url, 'gw-ignore', { autoAck: true });
    cleanups.push(() => peer.close());
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const gateway = createGateway(
      { gatewayId: 'gw-ignore', dataDir: dir.path, devices: { listen: { port: 0 }, patterns: PATTERNS }, http: false, uplink: { url: uplink.url, reconnectMinMs: 50, reconnectMaxMs: 200 } },
      { logger: silentLogger(), registry: createRegistry() },
    );
    cleanups.push(() => gateway.close());
    await gateway.ready();
    const dev = await connectDevice(gateway.deviceUrl!, `ignore-${Math.random().toString(16).slice(2)}`);
    cleanups.push(() => dev.endAsync(true));
    await dev.publishAsync('homeassistant/sensor/0x00124b0025002a68/voltage/config', DISCOVERY, { qos: 1 });
    await dev.publishAsync('shellies/announce', ANNOUNCE, { qos: 1 });
    await dev.publishAsync('devices/d1/telemetry', JSON.stringify({ metrics: { t: 1 } }), { qos: 1 });
    await waitFor(() => peer.written.size === 1, { what: 'the one reading at the cloud' });
    expect(gateway.deadLetters.list()).toEqual([]);
    expect([...peer.written.values()].map((r) => r.deviceId)).toEqual(['d1']);
  });
});
