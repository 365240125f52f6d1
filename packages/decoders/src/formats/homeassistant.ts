// Home Assistant style JSON state (the MQTT "json" schema lights, and sensors with a JSON state
// topic): `{"state":"ON","brightness":255,"color":{"r":255,"g":180,"b":200}}`. A payload that is
// not an object (a plain state such as `23.4` or `ON`) becomes the metric `state`.
import { guarded, rejected } from '../decoder.js';
import type { Decoder } from '../decoder.js';
import { buildReading, draftContext, outcomeOf } from '../draft.js';
import { isPlainObject, parseDeviceJson, textOf } from '../json.js';
import { decodeAvailability } from './flat.js';
import { deviceIdFrom, readObjectMessage } from './json-object.js';
import type { ObjectFormat } from './json-object.js';

export const HOME_ASSISTANT: ObjectFormat = {
  what: 'Home Assistant',
  snake: false,
  tsKey: 'timestamp',
  defaultUnit: 'auto',
  // ON/OFF is Home Assistant's payload_on/payload_off default; `color`, `effect`, `color_mode` stay as sent.
  defaults: { exact: { state: 'boolean' } },
};

export function createHomeAssistantDecoder(): Decoder {
  return guarded('homeassistant', (input) => {
    if (input.options.kind === 'status') return decodeAvailability(input, input.match.deviceId);
    const text = textOf(input.payload).trim();
    const value = parseDeviceJson(text);
    if (isPlainObject(value)) {
      const id = deviceIdFrom(input, input.match.deviceId, value);
      if (typeof id !== 'string') return id.rejection;
      return readObjectMessage(input, id, value, HOME_ASSISTANT);
    }
    // A plain state: the JSON value, or the text itself when it is not JSON (`ON`, `heat`).
    const raw = value === undefined ? text : value;
    if (raw !== null && typeof raw === 'object') {
      return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'Home Assistant state must be a JSON object or a plain value' }, input.match.deviceId);
    }
    const result = buildReading(
      { deviceId: input.match.deviceId, kind: 'telemetry', leaves: [{ name: 'state', value: raw }] },
      draftContext(input, { exact: { state: 'keep' } }, 'auto'),
    );
    return outcomeOf([result], input.match.deviceId);
  });
}
