// Zigbee2Tasmota bridges: `{"ZbReceived":{"<short address or name>":{"Device":"0xCB93","Name":"aqara_salon",
// "Temperature":21.13,...,"Endpoint":1,"LinkQuality":100}}}` on the bridge's topic (tele SENSOR or
// RESULT). Each Zigbee device is a device of its own, its id the Zigbee `Name` when set (`ZbName`),
// else its short address; the bridge's id is the tag `bridge`.
import type { DecodeInput, DecodeOutcome } from '../decoder.js';
import { rejected } from '../decoder.js';
import { buildReading, draftContext, outcomeOf } from '../draft.js';
import type { DraftResult } from '../draft.js';
import { isPlainObject } from '../json.js';
import { flatten } from '../names.js';
import type { ObjectFormat } from './json-object.js';

/** Addressing, not measurements: the id holds the device, and one device's endpoints are one device. */
const ADDRESS_KEYS: ReadonlySet<string> = new Set(['Device', 'Name', 'IEEEAddr', 'Endpoint', 'Group']);

function zigbeeDeviceId(key: string, report: Record<string, unknown>): string {
  const name = report.Name;
  if (typeof name === 'string' && name.length > 0) return name;
  const short = report.Device;
  if (typeof short === 'string' && short.length > 0) return short;
  return key;
}

/** `format` is Tasmota's: its value rules (POWER as on/off) apply to Zigbee attributes as well. */
export function decodeZigbeeReceived(input: DecodeInput, bridgeId: string, received: unknown, format: ObjectFormat): DecodeOutcome {
  if (!isPlainObject(received)) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'ZbReceived must be an object keyed by Zigbee device' }, bridgeId);
  const results: DraftResult[] = [];
  for (const [key, report] of Object.entries(received)) {
    if (!isPlainObject(report)) {
      results.push({ ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `ZbReceived "${key.slice(0, 60)}" is not an object` }, dropped: [] });
      continue;
    }
    const deviceId = zigbeeDeviceId(key, report);
    const leaves = flatten(report, '', { snake: true, skipKeys: ADDRESS_KEYS });
    results.push(buildReading({ deviceId, kind: 'telemetry', leaves, tags: { bridge: bridgeId } }, draftContext(input, format.defaults, format.defaultUnit)));
  }
  if (results.length === 0) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'ZbReceived names no Zigbee device' }, bridgeId);
  // The message came from the bridge: its dead letter, if any, is filed under the bridge.
  return outcomeOf(results, bridgeId);
}
