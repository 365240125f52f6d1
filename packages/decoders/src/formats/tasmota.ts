// Tasmota: `tele/<topic>/SENSOR` and `tele/<topic>/STATE` (nested objects flattened to stable
// snake_case names: `ENERGY.Total` -> `energy_total`), `tele/<topic>/LWT` (Online/Offline).
import { deviceIdBefore, guarded, levelsFromId, nothing } from '../decoder.js';
import type { Decoder } from '../decoder.js';
import { decodeAvailability } from './flat.js';
import { deviceIdFrom, parseObject, readObjectMessage } from './json-object.js';
import type { ObjectFormat } from './json-object.js';

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

/** Tasmota message types that carry telemetry; RESULT, INFO1..3, STATUSn... are answers to commands. */
const TELEMETRY_TYPES = new Set(['SENSOR', 'STATE']);

export function createTasmotaDecoder(): Decoder {
  return guarded('tasmota', (input) => {
    const levels = levelsFromId(input.match);
    const type = levels[levels.length - 1] ?? '';
    const deviceId = deviceIdBefore(input.match, 1);
    if (type === 'LWT' || input.options.kind === 'status') return decodeAvailability(input, type === 'LWT' ? deviceId : input.match.deviceId);
    if (!TELEMETRY_TYPES.has(type) || deviceId === undefined) return nothing;
    const parsed = parseObject(input, TASMOTA.what, deviceId);
    if (!parsed.ok) return parsed.outcome;
    const id = deviceIdFrom(input, deviceId, parsed.value);
    if (typeof id !== 'string') return id.rejection;
    return readObjectMessage(input, id, parsed.value, TASMOTA);
  });
}
