// Tasmota: `tele/<topic>/SENSOR` and `tele/<topic>/STATE` (nested objects flattened to stable
// snake_case names: `ENERGY.Total` -> `energy_total`), `tele/<topic>/LWT` (Online/Offline).
import { deviceIdBefore, guarded, ignored, levelsFromId, nothing } from '../decoder.js';
import type { Decoder, TopicMatch } from '../decoder.js';
import { decodeAvailability } from './flat.js';
import { deviceIdFrom, parseObject, readObjectMessage } from './json-object.js';
import type { ObjectFormat } from './json-object.js';
import { decodeTasmotaAnswer } from './tasmota-stat.js';
import { decodeZigbeeReceived } from './tasmota-zigbee.js';

export const TASMOTA: ObjectFormat = {
  what: 'Tasmota',
  snake: true,
  tsKey: 'Time',
  defaultUnit: 'iso',
  isoWithoutOffset: 'receive',
  defaults: {
    // Relay states are ON/OFF strings; `Wifi.BSSId`, `TotalStartTime`, `Uptime` stay strings.
    patterns: [[/^power\d*$/, 'boolean']],
  },
};

/** Tasmota's periodic telemetry; RESULT, POWERn and STATUSn (tasmota-stat.ts) are state changes and answers. */
const TELEMETRY_TYPES = new Set(['SENSOR', 'STATE']);

/** The topic level before the device's (Tasmota's `%prefix%` with the default FullTopic), if any. */
function prefixLevel(topic: string, match: TopicMatch): string | undefined {
  const levels = topic.split('/');
  return levels[levels.length - match.tail.length - match.deviceId.split('/').length - 1];
}

export function createTasmotaDecoder(): Decoder {
  return guarded('tasmota', (input) => {
    const levels = levelsFromId(input.match);
    const type = levels[levels.length - 1] ?? '';
    const deviceId = deviceIdBefore(input.match, 1);
    if (type === 'LWT' || input.options.kind === 'status') return decodeAvailability(input, type === 'LWT' ? deviceId : input.match.deviceId);
    if (deviceId === undefined) return nothing;
    // `cmnd/<topic>/POWER ON` is a request another client sent, not the device's state.
    if (prefixLevel(input.topic, input.match) === 'cmnd') return ignored('Tasmota command (cmnd)', deviceId);
    if (!TELEMETRY_TYPES.has(type)) return decodeTasmotaAnswer(input, deviceId, type, TASMOTA);
    const parsed = parseObject(input, TASMOTA.what, deviceId);
    if (!parsed.ok) return parsed.outcome;
    // A Zigbee2Tasmota bridge reports its Zigbee devices in its own SENSOR messages.
    if (Object.hasOwn(parsed.value, 'ZbReceived')) return decodeZigbeeReceived(input, deviceId, parsed.value.ZbReceived, TASMOTA);
    const id = deviceIdFrom(input, deviceId, parsed.value);
    if (typeof id !== 'string') return id.rejection;
    return readObjectMessage(input, id, parsed.value, TASMOTA);
  });
}
