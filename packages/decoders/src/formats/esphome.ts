// ESPHome's MQTT component: one topic per entity, `<prefix>/<component>/<object_id>/state`, plain
// text payloads ("23.50000", "ON", "nan" for a sensor without a value), `<prefix>/status`
// online/offline (its birth and last will). Lights and some others publish a JSON state.
import { deviceIdBefore, guarded, ignored, levelsFromId, nothing, rejected } from '../decoder.js';
import type { Decoder } from '../decoder.js';
import { availability, buildReading, draftContext, outcomeOf } from '../draft.js';
import { isPlainObject, parseDeviceJson, textOf } from '../json.js';
import { flatten } from '../names.js';
import type { Leaf } from '../names.js';
import type { FieldDefaults, FieldRule } from '../values.js';

/** What each component's plain-text state is. Unknown components keep the text. */
const COMPONENT_RULES: Readonly<Record<string, FieldRule>> = {
  sensor: 'number',
  number: 'number',
  binary_sensor: 'boolean',
  switch: 'boolean',
  fan: 'boolean',
  lock: 'string',
  text_sensor: 'string',
  text: 'string',
  select: 'string',
  cover: 'string',
  climate: 'string',
};

export function createEsphomeDecoder(): Decoder {
  const decoder = guarded('esphome', (input) => {
    const levels = levelsFromId(input.match);
    const last = levels[levels.length - 1];
    if (last === 'status' || input.options.kind === 'status') {
      const deviceId = last === 'status' && levels.length > 1 ? deviceIdBefore(input.match, 1) : input.match.deviceId;
      if (deviceId === undefined) return nothing;
      const text = textOf(input.payload).trim().toLowerCase();
      if (text !== 'online' && text !== 'offline') {
        return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'ESPHome status payload must be online or offline' }, deviceId);
      }
      return availability(deviceId, text, input.receivedAt, input.limits);
    }
    // `<component>/<object_id>/state`; `.../command` and `debug` are not readings.
    if (last !== 'state' || levels.length < 4) return ignored(`ESPHome ${(last ?? '').slice(0, 40)} (not a state)`);
    const component = levels[levels.length - 3] ?? '';
    const objectId = levels[levels.length - 2] ?? '';
    const deviceId = deviceIdBefore(input.match, 3);
    if (deviceId === undefined) return nothing;
    const text = textOf(input.payload).trim();
    let leaves: Leaf[];
    let defaults: FieldDefaults;
    if (text.startsWith('{')) {
      const value = parseDeviceJson(text);
      if (!isPlainObject(value)) return rejected({ code: 'FERRY_ERR_PAYLOAD_JSON', reason: `ESPHome ${component} state is not a JSON object` }, deviceId);
      leaves = flatten(value, objectId, { snake: false });
      // A light's `{"state":"ON","brightness":255,...}`: the state is on/off, the rest keeps its JSON type.
      defaults = { exact: { [`${objectId}_state`]: 'boolean' } };
    } else {
      leaves = [{ name: objectId, value: text }];
      defaults = { fallback: (Object.hasOwn(COMPONENT_RULES, component) ? COMPONENT_RULES[component] : undefined) ?? 'string' };
    }
    const result = buildReading(
      { deviceId, kind: 'telemetry', leaves },
      draftContext(input, defaults, 'auto'),
    );
    return outcomeOf([result], deviceId);
  });
  return {
    ...decoder,
    // `<node>/status` and `<node>/<component>/<object_id>/state` belong to the node.
    routingKey(_topic, match) {
      const levels = levelsFromId(match);
      const last = levels[levels.length - 1];
      if (last === 'status' && levels.length > 1) return deviceIdBefore(match, 1);
      if (last === 'state' && levels.length >= 4) return deviceIdBefore(match, 3);
      return match.deviceId;
    },
  };
}
