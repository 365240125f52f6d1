import { describe, expect, it } from 'vitest';
import { decoderFor, fixture, only } from './fixture.js';

const AT_2019 = Date.UTC(2019, 11, 12, 17, 20, 30);
const AT_2020 = Date.UTC(2020, 1, 12, 15, 15, 46);
const AT_2023 = Date.UTC(2023, 10, 14, 22, 14);
const AT_2024 = Date.UTC(2024, 2, 1, 9, 15, 5);

describe('ferry native format', () => {
  it('decodes the native payload exactly as the protocol decoder does', () => {
    const d = decoderFor({ pattern: 'devices/{deviceId}/telemetry' });
    const r = only(d.decode('devices/tank-7/telemetry', JSON.stringify({ ts: Date.UTC(2026, 10, 25, 11), seq: 4, metrics: { level: 1.5 }, tags: { site: 'a' } })));
    expect(r).toMatchObject({ deviceId: 'tank-7', metrics: { level: 1.5 }, tags: { site: 'a' }, deviceSeq: 4, tsSource: 'device' });
  });
});

describe('flat JSON (Zigbee2MQTT)', () => {
  const d = decoderFor({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat' });

  it('takes every value, flattens nested objects and skips nulls', () => {
    const r = only(d.decode('zigbee2mqtt/living room/weather', fixture('zigbee2mqtt-weather-sensor.json')));
    expect(r.deviceId).toBe('living room/weather');
    expect(r.metrics).toEqual({
      battery: 97,
      humidity: 54.21,
      linkquality: 120,
      pressure: 1012.5,
      temperature: 21.35,
      voltage: 2995,
      color_x: 0.3127,
      color_y: 0.329,
      color_hex: '#FFFFFF',
      update_state: 'idle',
    });
    expect(r.tsSource).toBe('gateway');
  });

  it('reads <name>/availability as the device status, for ids containing /', () => {
    const r = only(d.decode('zigbee2mqtt/living room/weather/availability', '{"state":"offline"}'));
    expect(r).toMatchObject({ deviceId: 'living room/weather', kind: 'status', metrics: { state: 'offline' } });
    expect(only(d.decode('zigbee2mqtt/plug/availability', 'online')).metrics).toEqual({ state: 'online' });
  });

  it('ignores commands and the bridge topics', () => {
    expect(d.decode('zigbee2mqtt/plug/set', '{"state":"ON"}')).toMatchObject({ readings: [], dropped: [] });
    expect(d.decode('zigbee2mqtt/bridge/state', '{"state":"online"}').readings).toEqual([]);
  });

  it('keeps numeric-looking strings as strings unless a field is configured numeric', () => {
    const payload = '{"temperature":"37.00","color":"008000","serial":"0x00158d0001a2b3c4"}';
    expect(only(d.decode('zigbee2mqtt/s1', payload)).metrics).toEqual({ temperature: '37.00', color: '008000', serial: '0x00158d0001a2b3c4' });
    const configured = decoderFor({ pattern: 'zigbee2mqtt/{deviceId#}', format: 'flat', coerce: { temperature: 'number' } });
    expect(only(configured.decode('zigbee2mqtt/s1', payload)).metrics).toEqual({ temperature: 37, color: '008000', serial: '0x00158d0001a2b3c4' });
  });

  it('reads the ts field in the configured unit and flags a clock that never synced', () => {
    const ms = decoderFor({ pattern: 'z/{deviceId}', format: 'flat', timestampUnit: 's' });
    const r = only(ms.decode('z/a', '{"ts":1764072000,"t":1}'));
    expect(r).toMatchObject({ ts: 1764072000_000, tsSource: 'device' });
    const unsynced = only(ms.decode('z/a', '{"ts":0,"t":1}'));
    expect(unsynced).toMatchObject({ ts: Date.UTC(2026, 10, 25, 12), tsSource: 'gateway', flags: ['clock_unsynced'] });
  });

  it('rejects non-JSON whole and a NaN value alone', () => {
    expect(d.decode('zigbee2mqtt/a', 'not json').rejection?.code).toBe('FERRY_ERR_PAYLOAD_JSON');
    const out = d.decode('zigbee2mqtt/a', '{"temperature":NaN,"humidity":40}');
    expect(out.readings[0]?.metrics).toEqual({ humidity: 40 });
    expect(out.dropped.map((r) => r.code)).toEqual(['FERRY_ERR_VALUE_NOT_FINITE']);
  });

  it('takes the device id from a payload field when configured', () => {
    const byField = decoderFor({ pattern: 'sensors/{deviceId}', format: 'flat', deviceIdField: 'meta.serial' });
    expect(only(byField.decode('sensors/any', '{"meta":{"serial":"SN-1"},"t":2}')).deviceId).toBe('SN-1');
  });
});

describe('Tasmota', () => {
  const d = decoderFor({ pattern: 'tele/{deviceId}/+', format: 'tasmota' }, AT_2019);

  it('flattens ENERGY to stable snake_case names', () => {
    const r = only(d.decode('tele/plug001/SENSOR', fixture('tasmota-sensor-energy.json')));
    expect(r.deviceId).toBe('plug001');
    expect(r.metrics).toEqual({
      energy_total_start_time: '2019-11-09T15:55:08',
      energy_total: 0.003,
      energy_yesterday: 0.002,
      energy_today: 0.001,
      energy_period: 0,
      energy_power: 12,
      energy_apparent_power: 14,
      energy_reactive_power: 7,
      energy_factor: 0.86,
      energy_voltage: 231,
      energy_current: 0.061,
    });
  });

  it('uses the receive time when Time has no offset, the device time when it has one', () => {
    expect(only(d.decode('tele/plug001/SENSOR', fixture('tasmota-sensor-energy.json')))).toMatchObject({ ts: AT_2019, tsSource: 'gateway' });
    const r = only(d.decode('tele/th1/SENSOR', fixture('tasmota-sensor-am2301.json'), AT_2024));
    expect(r).toMatchObject({ ts: Date.UTC(2024, 2, 1, 9, 15), tsSource: 'device' });
    expect(r.metrics).toEqual({ am2301_temperature: 21.4, am2301_humidity: 45.2, am2301_dew_point: 9.1, ds18b20_1_id: '0316A279C9D6', ds18b20_1_temperature: 18.5, temp_unit: 'C' });
  });

  it('reads STATE with POWER as a boolean and Wifi signal values', () => {
    const r = only(d.decode('tele/plug001/STATE', fixture('tasmota-state.json')));
    expect(r.metrics).toMatchObject({ power: true, uptime_sec: 311, wifi_rssi: 100, wifi_signal: -45, wifi_bss_id: '30:B5:C2:00:11:22', uptime: '0T00:05:11' });
  });

  it('reads the LWT as availability', () => {
    expect(only(d.decode('tele/plug001/LWT', 'Offline'))).toMatchObject({ deviceId: 'plug001', kind: 'status', metrics: { state: 'offline' } });
    expect(only(d.decode('tele/plug001/LWT', 'Online')).metrics).toEqual({ state: 'online' });
  });

  it('keeps the readable sensors when another reports bare nan', () => {
    const out = d.decode('tele/th2/SENSOR', fixture('tasmota-sensor-nan.txt'), AT_2024);
    expect(out.readings[0]?.metrics).toEqual({ bme280_temperature: 20.1, bme280_humidity: 41, bme280_pressure: 1013.2 });
    expect(out.dropped).toHaveLength(3);
    expect(out.dropped.every((r) => r.code === 'FERRY_ERR_VALUE_NOT_FINITE')).toBe(true);
  });

  it('ignores command answers such as RESULT and INFO1', () => {
    expect(d.decode('tele/plug001/INFO1', '{"Module":"Sonoff Basic"}').readings).toEqual([]);
  });
});

describe('Shelly Gen1', () => {
  const d = decoderFor({ pattern: 'shellies/{deviceId}/#', format: 'shelly-gen1' });

  it('turns per-value topics into metric names with numbers', () => {
    const r = only(d.decode('shellies/shellyplug-s-7A1B2C/relay/0/power', '12.5'));
    expect(r).toMatchObject({ deviceId: 'shellyplug-s-7A1B2C', metrics: { relay_0_power: 12.5 } });
    expect(only(d.decode('shellies/shellyplug-s-7A1B2C/relay/0/energy', '1543')).metrics).toEqual({ relay_0_energy: 1543 });
    expect(only(d.decode('shellies/shellyht-1/sensor/temperature', '21.75')).metrics).toEqual({ sensor_temperature: 21.75 });
  });

  it('reads relay on/off and inputs 0/1 as booleans, overpower as off plus a flag metric', () => {
    expect(only(d.decode('shellies/p1/relay/0', 'on')).metrics).toEqual({ relay_0: true });
    expect(only(d.decode('shellies/p1/input/0', '0')).metrics).toEqual({ input_0: false });
    expect(only(d.decode('shellies/p1/relay/0', 'overpower')).metrics).toEqual({ relay_0: false, relay_0_overpower: true });
  });

  it('reads <id>/online as availability and ignores announce and command topics', () => {
    expect(only(d.decode('shellies/p1/online', 'false'))).toMatchObject({ kind: 'status', metrics: { state: 'offline' } });
    expect(d.decode('shellies/p1/relay/0/command', 'on').readings).toEqual([]);
    expect(d.decode('shellies/p1/announce', '{"id":"p1"}').readings).toEqual([]);
  });

  it('rejects a value that is not a number, per value', () => {
    expect(d.decode('shellies/p1/relay/0/power', 'n/a').rejection?.code).toBe('FERRY_ERR_PAYLOAD_SCHEMA');
  });
});

describe('Shelly Gen2', () => {
  it('merges NotifyStatus into the known status so partial updates keep earlier values', () => {
    const d = decoderFor({ pattern: '{deviceId}/events/rpc', format: 'shelly-gen2' }, AT_2023);
    const full = only(d.decode('shellyplus1pm-a8032ab636ec/events/rpc', fixture('shelly-gen2-notify-full-status.json')));
    expect(full).toMatchObject({ deviceId: 'shellyplus1pm-a8032ab636ec', ts: 1700000000120, tsSource: 'device' });
    expect(full.metrics).toMatchObject({ switch_0_output: true, switch_0_apower: 12.4, switch_0_voltage: 230.1, switch_0_aenergy_total: 1523.62, switch_0_temperature_t_c: 41.2, wifi_rssi: -58, input_0_state: false });
    expect(full.metrics).not.toHaveProperty('switch_0_id');
    const partial = only(d.decode('shellyplus1pm-a8032ab636ec/events/rpc', fixture('shelly-gen2-notify-status.json')));
    // Only the switch changed; its voltage and energy counter come from the earlier full status.
    expect(partial.metrics).toMatchObject({ switch_0_apower: 115, switch_0_current: 0.5, switch_0_voltage: 230.1, switch_0_output: true, switch_0_aenergy_total: 1523.62 });
    expect(partial.metrics).not.toHaveProperty('wifi_rssi');
    expect(partial.ts).toBe(1700000060500);
  });

  it('keeps state per device and per gateway decoder set', () => {
    const d = decoderFor({ pattern: '{deviceId}/events/rpc', format: 'shelly-gen2' }, AT_2023);
    const partial = only(d.decode('other/events/rpc', fixture('shelly-gen2-notify-status.json')));
    expect(partial.metrics).toEqual({ switch_0_apower: 115, switch_0_current: 0.5 });
  });

  it('ignores NotifyEvent, reads <id>/online and generic status topics', () => {
    const d = decoderFor({ pattern: '{deviceId}/#', format: 'shelly-gen2' }, AT_2023);
    expect(d.decode('s1/events/rpc', fixture('shelly-gen2-notify-event.json')).readings).toEqual([]);
    expect(only(d.decode('s1/online', 'true'))).toMatchObject({ kind: 'status', metrics: { state: 'online' } });
    expect(only(d.decode('s1/status/switch:0', '{"id":0,"output":false,"apower":0}')).metrics).toEqual({ switch_0_output: false, switch_0_apower: 0 });
  });

  it('takes the device id from src when configured', () => {
    const d = decoderFor({ pattern: 'shelly/{deviceId}/events/rpc', format: 'shelly-gen2', deviceIdField: 'src' }, AT_2023);
    expect(() => d.decode('shelly/x/events/rpc', '{}')).not.toThrow();
  });
});

describe('ESPHome', () => {
  const d = decoderFor({ pattern: '{deviceId}/#', format: 'esphome' });

  it('reads sensor states as numbers and binary sensors and switches as booleans', () => {
    expect(only(d.decode('livingroom/sensor/livingroom_temperature/state', '23.50000'))).toMatchObject({ deviceId: 'livingroom', metrics: { livingroom_temperature: 23.5 } });
    expect(only(d.decode('livingroom/binary_sensor/window/state', 'OFF')).metrics).toEqual({ window: false });
    expect(only(d.decode('livingroom/switch/relay/state', 'ON')).metrics).toEqual({ relay: true });
    expect(only(d.decode('livingroom/text_sensor/ip/state', '192.168.1.20')).metrics).toEqual({ ip: '192.168.1.20' });
  });

  it('rejects the nan a sensor without a value publishes', () => {
    expect(d.decode('livingroom/sensor/co2/state', 'nan').rejection?.code).toBe('FERRY_ERR_VALUE_NOT_FINITE');
  });

  it('reads the status topic as availability and ignores commands', () => {
    expect(only(d.decode('livingroom/status', 'offline'))).toMatchObject({ kind: 'status', metrics: { state: 'offline' } });
    expect(d.decode('livingroom/switch/relay/command', 'ON').readings).toEqual([]);
  });

  it('finds the node in a multi-level topic prefix with {deviceId#}', () => {
    const deep = decoderFor({ pattern: 'esphome/{deviceId#}', format: 'esphome' });
    expect(only(deep.decode('esphome/floor1/kitchen/sensor/temp/state', '19.2'))).toMatchObject({ deviceId: 'floor1/kitchen', metrics: { temp: 19.2 } });
    expect(only(deep.decode('esphome/floor1/kitchen/status', 'online')).deviceId).toBe('floor1/kitchen');
  });

  it('reads a light JSON state with on/off as boolean', () => {
    expect(only(d.decode('desk/light/lamp/state', '{"state":"ON","brightness":128,"color_mode":"rgb"}')).metrics).toEqual({ lamp_state: true, lamp_brightness: 128, lamp_color_mode: 'rgb' });
  });
});

describe('Home Assistant JSON state', () => {
  const d = decoderFor({ pattern: 'home/{deviceId}/state', format: 'homeassistant' });

  it('reads state ON/OFF as a boolean and keeps colours as sent', () => {
    expect(only(d.decode('home/desk_lamp/state', fixture('homeassistant-light-json.json'))).metrics).toEqual({
      state: true,
      brightness: 255,
      color_mode: 'rgb',
      color_r: 255,
      color_g: 180,
      color_b: 200,
      effect: 'colorloop',
      transition: 2,
    });
  });

  it('reads a plain state as the metric state', () => {
    expect(only(d.decode('home/outside/state', '12.5')).metrics).toEqual({ state: 12.5 });
  });

  it('reads the availability pattern as status', () => {
    const withAvailability = decoderFor([
      { pattern: 'home/{deviceId}/state', format: 'homeassistant' },
      { pattern: 'home/{deviceId}/availability', format: 'homeassistant', kind: 'status' },
    ]);
    expect(only(withAvailability.decode('home/desk_lamp/availability', 'offline')).metrics).toEqual({ state: 'offline' });
  });
});

describe('OpenMQTTGateway BLE', () => {
  it('takes the MAC from the topic, keeps rssi and raw data strings, tags the model', () => {
    const d = decoderFor({ pattern: 'home/+/BTtoMQTT/{deviceId}', format: 'omg-ble' });
    const r = only(d.decode('home/OMG_ESP32_BLE/BTtoMQTT/A4C1385A20A1', fixture('omg-ble-lywsd03mmc.json')));
    expect(r.deviceId).toBe('A4C1385A20A1');
    expect(r.tags).toEqual({ model: 'LYWSD03MMC', brand: 'Xiaomi', model_id: 'LYWSD03MMC_ATC' });
    expect(r.metrics).toEqual({ name: 'ATC_5A20A1', rssi: -67, type: 'THB', tempc: 22.5, tempf: 72.5, hum: 48, batt: 81, volt: 2.953, servicedata: '1234567890123456' });
  });

  it('takes the device id from id when configured', () => {
    const d = decoderFor({ pattern: 'home/+/BTtoMQTT/{deviceId}', format: 'omg-ble', deviceIdField: 'id' });
    expect(only(d.decode('home/gw/BTtoMQTT/A4C1385A20A1', fixture('omg-ble-lywsd03mmc.json'))).deviceId).toBe('A4:C1:38:5A:20:A1');
  });
});

describe('InfluxDB line protocol (Telegraf)', () => {
  const at = Date.UTC(2023, 10, 14, 22, 14);
  const d = decoderFor({ pattern: 'telegraf/{deviceId}/+', format: 'influx-line' }, at);

  it('makes one reading per line, fields named <measurement>_<field>, tags kept, ns timestamps', () => {
    const out = d.decode('telegraf/pi4/cpu', fixture('telegraf-line-protocol.txt'));
    expect(out.rejection).toBeUndefined();
    expect(out.readings).toHaveLength(3);
    expect(out.readings[0]).toMatchObject({ deviceId: 'pi4', ts: 1700000000000, tsSource: 'device', tags: { cpu: 'cpu-total', host: 'pi4' }, metrics: { cpu_usage_idle: 97.5, cpu_usage_user: 1.25, cpu_usage_system: 0.75 } });
    expect(out.readings[1]?.metrics).toEqual({ mem_available: 3120562176, mem_used_percent: 21.5 });
  });

  it('reads escapes, strings, booleans and keeps integers beyond 2^53 exact', () => {
    const line = 'disk\\ io,path=/mnt/a\\ b,dev=sda1 label="say \\"hi\\"",ok=t,bytes=18446744073709551615u,neg=-9007199254740993i 1700000000000000000';
    const r = only(d.decode('telegraf/pi4/disk', line));
    expect(r.tags).toEqual({ path: '/mnt/a b', dev: 'sda1' });
    expect(r.metrics).toEqual({ 'disk io_label': 'say "hi"', 'disk io_ok': true, 'disk io_bytes': '18446744073709551615', 'disk io_neg': '-9007199254740993' });
  });

  it('takes the device id from a tag when configured, and sets a bad line aside', () => {
    const byHost = decoderFor({ pattern: 'telegraf/{deviceId}/+', format: 'influx-line', deviceIdField: 'host' }, at);
    const out = byHost.decode('telegraf/x/cpu', 'cpu,host=pi9 idle=1 1700000000000000000\ncpu,host=pi9 idle=\n');
    expect(out.readings.map((r) => r.deviceId)).toEqual(['pi9']);
    expect(out.readings[0]?.tags).toBeUndefined();
    expect(out.dropped).toHaveLength(1);
  });
});

describe('The Things Stack v3 uplinks', () => {
  const d = decoderFor({ pattern: 'v3/+/devices/{deviceId}/up', format: 'ttn-v3' }, AT_2020);

  it('reads decoded_payload as metrics, best rssi/snr as health signals and received_at as time', () => {
    const r = only(d.decode('v3/app1@ttn/devices/dev1/up', fixture('ttn-v3-uplink.json')));
    expect(r).toMatchObject({ deviceId: 'dev1', ts: Date.UTC(2020, 1, 12, 15, 15, 45, 802), tsSource: 'device', tags: { application_id: 'app1', f_port: '15' } });
    expect(r.metrics).toEqual({ temperature: 23.3, humidity: 45, valve: 'open', counter: '9007199254740993', rssi: -35, snr: 5.2, gateway_count: 2, f_cnt: 7 });
  });

  it('takes dev_eui as the device id when configured and ignores other message types', () => {
    const byEui = decoderFor({ pattern: 'v3/+/devices/{deviceId}/+', format: 'ttn-v3', deviceIdField: 'end_device_ids.dev_eui' }, AT_2020);
    expect(only(byEui.decode('v3/app1@ttn/devices/dev1/up', fixture('ttn-v3-uplink.json'))).deviceId).toBe('0004A30B001C0530');
    expect(byEui.decode('v3/app1@ttn/devices/dev1/join', '{}').readings).toEqual([]);
  });
});

describe('decoder set', () => {
  it('names the patterns when a topic matches none', () => {
    const d = decoderFor({ pattern: 'tele/{deviceId}/+', format: 'tasmota' });
    expect(d.decode('other/x', '{}').rejection).toMatchObject({ code: 'FERRY_ERR_TOPIC_UNKNOWN' });
  });
});
