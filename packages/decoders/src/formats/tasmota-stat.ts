// Tasmota's answers and state changes on `stat/<topic>/...`: `RESULT` (`{"POWER1":"ON"}`, a light's
// `{"POWER":"ON","Dimmer":78,...}`), `POWERn` (plain `ON`/`1`, or JSON with SetOption4) and
// `STATUSn` (`Status 10`/`Status 8` carry StatusSNS, `Status 11` StatusSTS). Other answers
// (`{"ZbSend":"Done"}`, `{"Timezone":99}`) are counted as ignored; a payload that is not JSON (a
// STATUS cut off at the MQTT buffer size) is dead-lettered, never dropped.
import type { DecodeInput, DecodeOutcome } from '../decoder.js';
import { ignored, rejected } from '../decoder.js';
import { buildReading, draftContext, outcomeOf } from '../draft.js';
import { isPlainObject, parseDeviceJson, textOf } from '../json.js';
import { snakeCase } from '../names.js';
import { readObjectMessage } from './json-object.js';
import type { ObjectFormat } from './json-object.js';
import { decodeZigbeeReceived } from './tasmota-zigbee.js';

/** RESULT keys that report a device's state (relays, lights, shutters); other keys answer a command. */
const STATE_KEY = /^(POWER\d*|Dimmer\d*|Color|HSBColor|Channel|CT|White|Shutter\d+)$/;
const POWER_TYPE = /^POWER\d*$/;
const STATUS_TYPE = /^STATUS\d*$/;

function parsed(input: DecodeInput, deviceId: string, type: string): { readonly ok: true; readonly body: Record<string, unknown> } | { readonly ok: false; readonly outcome: DecodeOutcome } {
  const text = textOf(input.payload);
  const body = parseDeviceJson(text);
  if (body === undefined) {
    const shown = JSON.stringify(text.length > 60 ? `...${text.slice(-60)}` : text);
    const hint = STATUS_TYPE.test(type) && text.trimStart().startsWith('{') ? ' (cut off? a STATUS answer longer than the MQTT buffer arrives truncated)' : '';
    return { ok: false, outcome: rejected({ code: 'FERRY_ERR_PAYLOAD_JSON', reason: `Tasmota ${type} is not valid JSON${hint}: ${shown}` }, deviceId) };
  }
  if (!isPlainObject(body)) return { ok: false, outcome: rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `Tasmota ${type} must be a JSON object` }, deviceId) };
  return { ok: true, body };
}

/** The state keys of a RESULT (or SetOption4 JSON), or undefined when it only answers a command. */
function stateOf(body: Record<string, unknown>): Record<string, unknown> | undefined {
  const state: Record<string, unknown> = {};
  let any = false;
  for (const [key, value] of Object.entries(body)) {
    if (!STATE_KEY.test(key)) continue;
    Object.defineProperty(state, key, { value, enumerable: true });
    any = true;
  }
  return any ? state : undefined;
}

function result(input: DecodeInput, deviceId: string, type: string, body: Record<string, unknown>, format: ObjectFormat): DecodeOutcome {
  if (Object.hasOwn(body, 'ZbReceived')) return decodeZigbeeReceived(input, deviceId, body.ZbReceived, format);
  const state = stateOf(body);
  if (!state) return ignored(`Tasmota ${type} answer to a command`, deviceId);
  return readObjectMessage(input, deviceId, state, format);
}

function status(input: DecodeInput, deviceId: string, type: string, body: Record<string, unknown>, format: ObjectFormat): DecodeOutcome {
  // STATUS0 carries every part; a single `Status n` one. StatusSNS is SENSOR's content, StatusSTS STATE's.
  const sensors = isPlainObject(body.StatusSNS) ? body.StatusSNS : undefined;
  const state = isPlainObject(body.StatusSTS) ? body.StatusSTS : undefined;
  if (!sensors && !state) return ignored('Tasmota STATUS answer without sensor or state values', deviceId);
  return readObjectMessage(input, deviceId, { ...state, ...sensors }, format);
}

/** A Tasmota message other than SENSOR, STATE and LWT. */
export function decodeTasmotaAnswer(input: DecodeInput, deviceId: string, type: string, format: ObjectFormat): DecodeOutcome {
  if (POWER_TYPE.test(type)) {
    const text = textOf(input.payload).trim();
    if (text.startsWith('{')) {
      const json = parsed(input, deviceId, type);
      return json.ok ? result(input, deviceId, type, json.body, format) : json.outcome;
    }
    const reading = buildReading({ deviceId, kind: 'telemetry', leaves: [{ name: snakeCase(type), value: text }] }, draftContext(input, format.defaults, format.defaultUnit));
    return outcomeOf([reading], deviceId);
  }
  if (type === 'RESULT' || STATUS_TYPE.test(type)) {
    const json = parsed(input, deviceId, type);
    if (!json.ok) return json.outcome;
    return type === 'RESULT' ? result(input, deviceId, type, json.body, format) : status(input, deviceId, type, json.body, format);
  }
  // INFO1..3, UPGRADE, LOGGING...: device information and command answers, not telemetry.
  return ignored(`Tasmota ${type.slice(0, 40)} (not telemetry)`, deviceId);
}
