// Payloads that were PUBACKed and then vanished (issue #17): Tasmota state changes and answers,
// Zigbee2Tasmota bridges, ThingsBoard's device and gateway APIs, bare scalars, and metadata topics
// that must be counted as ignored rather than dead-lettered. Each fixture names its source.
import { describe, expect, it } from 'vitest';
import { createDecoderSet, formatConfigSchema } from '../src/index.js';
import { decoderFor, fixture, only } from './fixture.js';

const AT_2023 = Date.UTC(2023, 7, 18, 12, 22, 40);

describe('Tasmota stat topics', () => {
  // One pattern for tele and stat: the prefix level tells a state from a command request.
  const d = decoderFor({ pattern: '+/{deviceId}/+', format: 'tasmota' }, AT_2023);

  // tasmota.github.io/docs/Berry/: `stat/tasmota_923B34/RESULT = {"POWER":"ON"}`, then `stat/tasmota_923B34/POWER = ON`.
  it('writes a RESULT power change as the boolean power, at the receive time', () => {
    const r = only(d.decode('stat/tasmota_923B34/RESULT', fixture('tasmota-stat-result-power.json')));
    expect(r).toMatchObject({ deviceId: 'tasmota_923B34', kind: 'telemetry', metrics: { power: true }, ts: AT_2023, tsSource: 'gateway' });
    expect(only(d.decode('stat/tasmota_923B34/POWER', 'ON')).metrics).toEqual({ power: true });
  });

  // tasmota.github.io/docs/Commands/: Power1 answers `{"POWER1":"ON"}` and `POWER1 = ON`; `1`/`0` with StateText/SetOption26 setups.
  it('reads POWERn plain and JSON payloads, 1/0 and ON/OFF alike', () => {
    expect(only(d.decode('stat/plug/RESULT', '{"POWER1":"1"}')).metrics).toEqual({ power1: true });
    expect(only(d.decode('stat/plug/POWER2', '0')).metrics).toEqual({ power2: false });
    expect(only(d.decode('stat/plug/POWER1', '{"POWER1":"OFF"}')).metrics).toEqual({ power1: false });
  });

  // tasmota.github.io/docs/Berry/: `tasmota.cmd("Dimmer 50")` answers on stat/tasmota_67B1E9/RESULT.
  it('writes a light RESULT with its state keys, names as on tele STATE', () => {
    const r = only(d.decode('stat/tasmota_67B1E9/RESULT', fixture('tasmota-stat-result-light.json')));
    expect(r.metrics).toEqual({ power: true, dimmer: 50, color: '808080', hsb_color: '0,0,50', channel_1: 50, channel_2: 50, channel_3: 50 });
  });

  // github.com/arendst/Tasmota/issues/11515: `stat/ZBBridge/RESULT = {"ZbSend":"Done"}`; tasmota.github.io/docs/Zigbee/: ZbName's answer.
  it('counts answers to other commands as ignored, not dead letters', () => {
    for (const answer of ['{"ZbSend":"Done"}', '{"0x128F":{"Name":"Vibration_sensor"}}', '{"Timezone":99}']) {
      const out = d.decode('stat/ZBBridge/RESULT', answer);
      expect(out).toMatchObject({ readings: [], dropped: [], ignored: 'Tasmota RESULT answer to a command' });
      expect(out.rejection).toBeUndefined();
    }
    expect(d.decode('tele/plug/INFO1', '{"Info1":{"Module":"Sonoff Basic"}}').ignored).toBe('Tasmota INFO1 (not telemetry)');
  });

  it('ignores command requests on cmnd/ (another client asking, not the device answering)', () => {
    expect(d.decode('cmnd/plug/POWER', 'ON')).toMatchObject({ readings: [], ignored: 'Tasmota command (cmnd)' });
  });

  // Status 10 of a Sonoff S31 (stat/S31B/STATUS10), from a Tasmota issue log.
  it('reads STATUS10 StatusSNS as SENSOR values', () => {
    const r = only(d.decode('stat/S31B/STATUS10', fixture('tasmota-stat-status10.json')));
    expect(r).toMatchObject({ deviceId: 'S31B', ts: AT_2023, tsSource: 'gateway' });
    expect(r.metrics).toEqual({
      energy_total_start_time: '2022-09-24T18:51:27',
      energy_total: 196.708,
      energy_yesterday: 0,
      energy_today: 0,
      energy_power: 0,
      energy_apparent_power: 0,
      energy_reactive_power: 0,
      energy_factor: 0,
      energy_voltage: 122,
      energy_current: 0,
    });
  });

  // github.com/arendst/Tasmota/issues/2723 (STATUS8 with StatusSNS) and /issues/3782 (STATUS: settings only).
  it('reads an older STATUS8, and counts a STATUS without values as ignored', () => {
    expect(only(d.decode('stat/S31/STATUS8', fixture('tasmota-stat-status8.json'))).metrics).toMatchObject({ energy_total: 7.987, energy_voltage: 110 });
    expect(d.decode('stat/sonoffPOW/STATUS', fixture('tasmota-stat-status0.json'))).toMatchObject({ readings: [], ignored: 'Tasmota STATUS answer without sensor or state values' });
  });

  it('dead-letters a truncated STATUS with the reason, never drops it silently', () => {
    const out = d.decode('stat/basic/STATUS11', fixture('tasmota-stat-status11-truncated.txt'));
    expect(out.rejection?.code).toBe('FERRY_ERR_PAYLOAD_JSON');
    expect(out.rejection?.reason).toMatch(/STATUS11 is not valid JSON \(cut off\?/);
    expect(out.deviceId).toBe('basic');
    expect(out.ignored).toBeUndefined();
    expect(d.decode('stat/basic/RESULT', '{"POWER":').rejection?.code).toBe('FERRY_ERR_PAYLOAD_JSON');
  });

  it('dead-letters a POWER state that is neither on nor off', () => {
    expect(d.decode('stat/plug/POWER', 'BLINK').rejection?.code).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
  });
});

describe('Zigbee2Tasmota bridge', () => {
  const d = decoderFor({ pattern: 'tele/{deviceId}/#', format: 'tasmota' }, AT_2023);

  // github.com/arendst/Tasmota/issues/9217: tele/zbbridge_DBFBED/SENSOR from a named Aqara sensor.
  it('makes each Zigbee device its own device, named by ZbName, with the bridge as a tag', () => {
    const r = only(d.decode('tele/zbbridge_DBFBED/SENSOR', fixture('tasmota-zigbee-zbreceived-named.json')));
    expect(r).toMatchObject({ deviceId: 'aqara_salon', tags: { bridge: 'zbbridge_DBFBED' }, ts: AT_2023, tsSource: 'gateway' });
    expect(r.metrics).toEqual({
      temperature: 21.13,
      humidity: 51.21,
      pressure: 1021,
      pressure_scale: -1,
      pressure_scaled_value: 10210,
      sea_pressure: 1021,
      link_quality: 100,
    });
  });

  // tasmota.github.io/docs/Zigbee/ ("Setting Friendly Name"): tele/%topic%/RESULT from an unnamed Aqara cube.
  it('falls back to the short address, on RESULT as on SENSOR', () => {
    const r = only(d.decode('tele/zbbridge/RESULT', fixture('tasmota-zigbee-zbreceived-unnamed.json')));
    expect(r).toMatchObject({ deviceId: '0x128F', tags: { bridge: 'zbbridge' } });
    expect(r.metrics).toEqual({
      aqara_vibration_mode: 'tilt',
      aqara_vibrations_or_angle: 162,
      aqara_accelerometer_1: -690,
      aqara_accelerometer_2: 2,
      aqara_accelerometer_3: 138,
      aqara_angles_1: -78,
      aqara_angles_2: 0,
      aqara_angles_3: 11,
      link_quality: 158,
    });
  });

  // github.com/arendst/Tasmota/issues/11515: with SetOption89 the report has its own topic level.
  it('reads the per-device topics of SetOption89 and a Zigbee plug power as boolean', () => {
    const r = only(d.decode('tele/ZBBridge/ZB1/SENSOR', '{"ZbReceived":{"ZB1":{"Device":"0x3C0E","Name":"ZB1","Power":1,"Endpoint":1,"LinkQuality":13}}}'));
    expect(r).toMatchObject({ deviceId: 'ZB1', tags: { bridge: 'ZBBridge' }, metrics: { power: true, link_quality: 13 } });
  });

  it('keeps the other Zigbee devices when one report is not an object', () => {
    const out = d.decode('tele/zb/SENSOR', '{"ZbReceived":{"0x0001":7,"0x0002":{"Device":"0x0002","Temperature":20.5}}}');
    expect(out.readings.map((r) => [r.deviceId, r.metrics])).toEqual([['0x0002', { temperature: 20.5 }]]);
    expect(out.dropped.map((r) => r.code)).toEqual(['FERRY_ERR_PAYLOAD_SCHEMA']);
  });
});

describe('ThingsBoard device API', () => {
  const AT_2016 = 1451649600512 + 60_000;
  const d = decoderFor({ pattern: 'v1/devices/{deviceId}/#', format: 'thingsboard' }, AT_2016);

  // thingsboard.io/docs/reference/mqtt-api/telemetry/: the simple and timestamped forms.
  it('reads key-values at the receive time and {ts, values} at the device time (ms)', () => {
    expect(only(d.decode('v1/devices/boiler-1/telemetry', fixture('thingsboard-device-object.json')))).toMatchObject({
      deviceId: 'boiler-1',
      metrics: { temperature: 22.5, humidity: 61 },
      ts: AT_2016,
      tsSource: 'gateway',
    });
    expect(only(d.decode('v1/devices/boiler-1/telemetry', fixture('thingsboard-device-ts-values.json')))).toMatchObject({
      metrics: { temperature: 22.5, humidity: 61 },
      ts: 1451649600512,
      tsSource: 'device',
    });
  });

  // Same page, "Array of objects with client-side timestamp"; the older reference's array of plain objects.
  it('makes one reading per array element, each with its own time', () => {
    const out = d.decode('v1/devices/boiler-1/telemetry', fixture('thingsboard-device-array-ts.json'));
    expect(out.readings.map((r) => [r.ts, r.metrics])).toEqual([
      [1451649600000, { temperature: 22.5, humidity: 61 }],
      [1451649601000, { temperature: 22.7, humidity: 60 }],
    ]);
    const plain = d.decode('v1/devices/boiler-1/telemetry', fixture('thingsboard-device-array-objects.json'));
    expect(plain.readings.map((r) => r.metrics)).toEqual([{ key1: 'value1' }, { key2: 'value2' }]);
  });

  it('sets a bad element aside alone and keeps the others', () => {
    const out = d.decode('v1/devices/boiler-1/telemetry', '[{"ts":1451649600000,"values":{"t":1}},42,{"ts":"yesterday","values":{"t":2}},{"ts":1451649601000,"values":{"t":3}}]');
    expect(out.rejection).toBeUndefined();
    expect(out.readings.map((r) => r.metrics)).toEqual([{ t: 1 }, { t: 3 }]);
    expect(out.dropped.map((r) => r.reason)).toEqual(['sample 2: a sample must be a JSON object', expect.stringMatching(/^sample 3: ts: /)]);
  });

  it('refuses ThingsBoard\'s own "me" topic without deviceIdField, and reads the id from a field when set', () => {
    const out = d.decode('v1/devices/me/telemetry', fixture('thingsboard-device-object.json'));
    expect(out.rejection).toMatchObject({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: expect.stringMatching(/deviceIdField/) });
    const byField = decoderFor({ pattern: 'v1/devices/{deviceId}/#', format: 'thingsboard', deviceIdField: 'serial' }, AT_2016);
    const r = only(byField.decode('v1/devices/me/telemetry', '{"ts":1451649600512,"values":{"serial":"SN-7","temperature":21}}'));
    expect(r).toMatchObject({ deviceId: 'SN-7', metrics: { serial: 'SN-7', temperature: 21 }, ts: 1451649600512 });
  });

  it('counts attributes and RPC as ignored', () => {
    expect(d.decode('v1/devices/me/attributes', '{"firmware_version":"1.0.3"}')).toMatchObject({ readings: [], ignored: 'ThingsBoard attributes (not telemetry)' });
    expect(d.decode('v1/devices/me/rpc/response/7', '{"ok":true}').ignored).toBe('ThingsBoard RPC (not telemetry)');
  });
});

describe('ThingsBoard gateway API', () => {
  const AT_2017 = 1483228800000 + 60_000;
  const d = decoderFor({ pattern: 'v1/{deviceId}/#', format: 'thingsboard' }, AT_2017);

  // thingsboard.io/docs/reference/gateway-api/telemetry/
  it('makes each key a device, each sample a reading at its own time', () => {
    const out = d.decode('v1/gateway/telemetry', fixture('thingsboard-gateway-telemetry.json'));
    expect(out.rejection).toBeUndefined();
    expect(out.readings.map((r) => [r.deviceId, r.ts, r.tsSource, r.metrics])).toEqual([
      ['Device A', 1483228800000, 'device', { temperature: 42, humidity: 80 }],
      ['Device A', 1483228801000, 'device', { temperature: 43, humidity: 82 }],
      ['Device B', 1483228800000, 'device', { temperature: 42, humidity: 80 }],
    ]);
  });

  it('validates each device name as any device id, keeping the other devices', () => {
    const out = d.decode('v1/gateway/telemetry', JSON.stringify({ 'bad#name': [{ values: { t: 1 } }], 'Device C': [{ values: { t: 2 } }] }));
    expect(out.readings.map((r) => r.deviceId)).toEqual(['Device C']);
    expect(out.dropped).toHaveLength(1);
    expect(out.dropped[0]?.reason).toMatch(/sample 1 of "bad#name": device id/);
  });

  it('reads connect and disconnect as the named device\'s availability', () => {
    expect(only(d.decode('v1/gateway/connect', '{"device":"Device A"}'))).toMatchObject({ deviceId: 'Device A', kind: 'status', metrics: { state: 'online' } });
    expect(only(d.decode('v1/gateway/disconnect', '{"device":"Device A"}')).metrics).toEqual({ state: 'offline' });
  });
});

describe('bare scalar patterns', () => {
  // esphome.io/components/mqtt.html: `<prefix>/<component>/<object_id>/state` with the plain state; a text sensor's text as is.
  it('takes the metric name from a topic level and the type from configuration', () => {
    const d = decoderFor({ pattern: 'esp/{deviceId}/text_sensor/+/state', format: 'scalar', scalar: { metric: '{-2}', type: 'string' } });
    expect(only(d.decode('esp/boiler/text_sensor/status/state', 'Normal'))).toMatchObject({ deviceId: 'boiler', metrics: { status: 'Normal' }, tsSource: 'gateway' });
    const numbers = decoderFor({ pattern: 'home/+/{deviceId}/+', format: 'scalar', scalar: { metric: '{-1}', type: 'number' } });
    expect(only(numbers.decode('home/OMG/A4C1385A20A1/tempc', '22.5')).metrics).toEqual({ tempc: 22.5 });
    const flags = decoderFor({ pattern: 'plug/{deviceId}/relay', format: 'scalar', scalar: { metric: 'relay_on', type: 'boolean' } });
    expect(only(flags.decode('plug/p1/relay', 'ON')).metrics).toEqual({ relay_on: true });
  });

  it('dead-letters a value its type refuses, a NaN and an empty payload', () => {
    const d = decoderFor({ pattern: 'home/+/{deviceId}/+', format: 'scalar', scalar: { metric: '{-1}', type: 'number' } });
    expect(d.decode('home/OMG/a/tempc', 'Normal').rejection?.code).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
    expect(d.decode('home/OMG/a/tempc', 'nan').rejection?.code).toBe('FERRY_ERR_VALUE_NOT_FINITE');
    expect(d.decode('home/OMG/a/tempc', '').rejection?.reason).toMatch(/empty/);
    expect(d.decode('home/OMG/a/tempc', '{"t":1}').rejection?.code).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
  });

  it('is validated at config time, naming the field', () => {
    const issues = (input: unknown): string[] => {
      const result = formatConfigSchema.safeParse(input);
      return result.success ? [] : result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    expect(issues({ pattern: 's/{deviceId}/+', format: 'scalar' })).toEqual([expect.stringMatching(/^scalar: format "scalar" needs/)]);
    expect(issues({ pattern: 's/{deviceId}/+', format: 'flat', scalar: { metric: 'x', type: 'number' } })).toEqual([expect.stringMatching(/^scalar: scalar is only read by format "scalar"/)]);
    expect(issues({ pattern: 's/{deviceId}/+', format: 'scalar', scalar: { metric: '{4}', type: 'number' } })).toEqual([expect.stringMatching(/^scalar.metric: \{4\} names a topic level beyond/)]);
    expect(issues({ pattern: 's/{deviceId}/+', format: 'scalar', scalar: { metric: '{0}', type: 'number' } })).toEqual([expect.stringMatching(/^scalar.metric: /)]);
    expect(issues({ pattern: 's/{deviceId}/+', format: 'scalar', scalar: { metric: '{level}', type: 'number' } })).toEqual([expect.stringMatching(/^scalar.metric: placeholders are \{N\}/)]);
    expect(issues({ pattern: 's/{deviceId}/+', format: 'scalar', scalar: { metric: 'x', type: 'float' } })[0]).toMatch(/^scalar.type: /);
  });
});

describe('ignore action', () => {
  const set = createDecoderSet([
    { pattern: 'homeassistant/#', action: 'ignore', reason: 'home assistant discovery' },
    { pattern: 'shellies/announce', action: 'ignore', reason: 'shelly announce' },
    { pattern: 'zigbee2mqtt/bridge/#', action: 'ignore' },
    { pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' },
    { pattern: 'shellies/{deviceId}/#', format: 'shelly-gen1' },
  ]);
  const decode = (topic: string, payload: string): ReturnType<typeof set.decode> => set.decode(topic, Buffer.from(payload), AT_2023);

  // github.com/Koenkk/zigbee2mqtt/issues/14512: a discovery config Zigbee2MQTT publishes.
  it('counts Home Assistant discovery configs as ignored by reason, not FERRY_ERR_TOPIC_UNKNOWN', () => {
    const out = decode('homeassistant/sensor/0x00124b0025002a68/voltage/config', '{"device_class":"voltage","state_topic":"zigbee2mqtt/détecteur_pir","unit_of_measurement":"mV"}');
    expect(out).toMatchObject({ readings: [], dropped: [], ignored: 'home assistant discovery', pattern: 'homeassistant/#' });
    expect(out.rejection).toBeUndefined();
    expect(out.deviceId).toBeUndefined();
  });

  // shelly-api-docs.shelly.cloud/gen1/#mqtt: devices announce themselves on shellies/announce.
  it('matches literal and wildcard patterns without a device, and the pattern is the default reason', () => {
    expect(decode('shellies/announce', '{"id":"shellyplug-s-7A1B2C","model":"SHPLG-S","mac":"7A1B2C","ip":"192.168.1.42","new_fw":false,"fw_ver":"20230913-112003/v1.14.0-gcb84623"}').ignored).toBe('shelly announce');
    expect(decode('zigbee2mqtt/bridge/state', '{"state":"online"}').ignored).toBe('zigbee2mqtt/bridge/#');
    expect(decode('zigbee2mqtt/bridge', 'x').ignored).toBe('zigbee2mqtt/bridge/#');
  });

  it('shadows only what it matches: later patterns still decode', () => {
    expect(decode('zigbee2mqtt/kitchen', '{"temperature":20}').readings.map((r) => r.metrics)).toEqual([{ temperature: 20 }]);
    expect(decode('shellies/p1/relay/0/power', '12.5').readings).toHaveLength(1);
  });

  it('gives no device to authorize and no subscription of its own', () => {
    expect(set.route('homeassistant/sensor/x/config')).toEqual({ routingKey: 'homeassistant/sensor/x/config' });
    expect(set.filters).toEqual(['zigbee2mqtt/#', 'shellies/+/#']);
    const withId = createDecoderSet([{ pattern: 'cmnd/{deviceId}/#', action: 'ignore', reason: 'command echo' }]);
    expect(withId.route('cmnd/plug/POWER')).toEqual({ deviceId: 'plug', routingKey: 'plug' });
    expect(withId.decode('cmnd/plug/POWER', Buffer.from('ON'), AT_2023)).toMatchObject({ ignored: 'command echo', deviceId: 'plug' });
  });

  it('is also the outcome of the message types a format knows carry no telemetry', () => {
    const reasons = (entry: Parameters<typeof decoderFor>[0], topic: string, payload: string): string | undefined => decoderFor(entry).decode(topic, payload).ignored;
    expect(reasons({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' }, 'zigbee2mqtt/bridge/state', '{"state":"online"}')).toBe('Zigbee2MQTT bridge topic');
    expect(reasons({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' }, 'zigbee2mqtt/plug/set', '{"state":"ON"}')).toBe('Zigbee2MQTT command (set/get)');
    expect(reasons({ pattern: 'shellies/{deviceId}/#', format: 'shelly-gen1' }, 'shellies/p1/relay/0/command', 'on')).toBe('Shelly command (not telemetry)');
    expect(reasons({ pattern: '{deviceId}/#', format: 'esphome' }, 'desk/switch/relay/command', 'ON')).toBe('ESPHome command (not a state)');
    expect(reasons({ pattern: 'v3/+/devices/{deviceId}/+', format: 'ttn-v3' }, 'v3/app@ttn/devices/d/join', '{}')).toBe('The Things Stack join (not an uplink)');
    expect(reasons({ pattern: '{deviceId}/events/rpc', format: 'shelly-gen2' }, 's1/events/rpc', '{"src":"s1","method":"NotifyEvent","params":{}}')).toBe('Shelly NotifyEvent (not a status)');
  });

  it('is validated at config time', () => {
    expect(formatConfigSchema.safeParse({ pattern: 'a/#/b', action: 'ignore' }).success).toBe(false);
    const reason = formatConfigSchema.safeParse({ pattern: 'a/{deviceId}', reason: 'x' });
    expect(reason.success ? [] : reason.error.issues.map((i) => i.path.join('.'))).toEqual(['reason']);
  });
});
