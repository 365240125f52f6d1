// Flat JSON objects, one reading per message, as Zigbee2MQTT (and many others) publish them:
// `zigbee2mqtt/<friendly name>` with `{"temperature":21.5,"battery":97,...}`.
import { availability } from '../draft.js';
import { deviceIdBefore, guarded, ignored, levelsFromId, rejected } from '../decoder.js';
import type { Decoder, DecodeInput, DecodeOutcome } from '../decoder.js';
import { deviceIdFrom, parseObject, readAvailabilityPayload, readObjectMessage } from './json-object.js';
import type { ObjectFormat } from './json-object.js';

const FLAT: ObjectFormat = { what: 'flat JSON', snake: false, tsKey: 'ts', defaultUnit: 'auto', defaults: {} };

/** An availability message: `online`/`offline` or `{"state":"online"}`. */
export function decodeAvailability(input: DecodeInput, deviceId: string | undefined): DecodeOutcome {
  if (deviceId === undefined) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'availability topic names no device' });
  const state = readAvailabilityPayload(input);
  if (!state) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'availability payload must be online or offline' }, deviceId);
  return availability(deviceId, state, input.receivedAt, input.limits);
}

export function createFlatDecoder(): Decoder {
  const decoder = guarded('flat', (input) => {
    const levels = levelsFromId(input.match);
    const last = levels[levels.length - 1];
    // Zigbee2MQTT: `<name>/availability` is the device's availability, `<name>/set|get[/attr]`
    // are commands other clients publish, `bridge/...` is Zigbee2MQTT itself, not a device.
    if (levels.length > 1 && last === 'availability') return decodeAvailability(input, deviceIdBefore(input.match, 1));
    if (input.options.kind === 'status') return decodeAvailability(input, input.match.deviceId);
    if (levels[0] === 'bridge') return ignored('Zigbee2MQTT bridge topic');
    if (levels.slice(1).some((l) => l === 'set' || l === 'get')) return ignored('Zigbee2MQTT command (set/get)', input.match.deviceId);
    const parsed = parseObject(input, FLAT.what, input.match.deviceId);
    if (!parsed.ok) return parsed.outcome;
    const id = deviceIdFrom(input, input.match.deviceId, parsed.value);
    if (typeof id !== 'string') return id.rejection;
    return readObjectMessage(input, id, parsed.value, FLAT);
  });
  return {
    ...decoder,
    routingKey(_topic, match) {
      const levels = levelsFromId(match);
      return levels.length > 1 && levels[levels.length - 1] === 'availability' ? deviceIdBefore(match, 1) : match.deviceId;
    },
  };
}
