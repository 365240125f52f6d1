// Shelly Gen1: one topic per value with a plain-text payload, e.g. `shellies/<id>/relay/0/power`
// "12.5" -> metric `relay_0_power` = 12.5; `shellies/<id>/online` true/false is availability.
import { guarded, ignored, levelsFromId, nothing, rejected } from '../decoder.js';
import type { Decoder } from '../decoder.js';
import { availability, buildReading, draftContext, outcomeOf } from '../draft.js';
import { isPlainObject, parseDeviceJson, textOf } from '../json.js';
import { flatten, snakeCase } from '../names.js';
import type { Leaf } from '../names.js';
import type { FieldDefaults } from '../values.js';

const BOOLEAN_NAMES: readonly (readonly [RegExp, 'boolean' | 'string'])[] = [
  [/^relay_\d+$/, 'boolean'],
  [/^relay_\d+_overpower$/, 'boolean'],
  [/^input_\d+$/, 'boolean'],
  [/^(overtemperature|sensor_flood|sensor_charger)$/, 'boolean'],
  [/^roller_\d+$/, 'string'],
  [/^(sensor_state|sensor_error|sensor_act_reasons_\d+|roller_\d+_stop_reason|temperature_status)$/, 'string'],
];

/** Plain-text values are numbers unless named above: the topic says the field, not the text. */
export const SHELLY_GEN1_TEXT_DEFAULTS: FieldDefaults = { patterns: BOOLEAN_NAMES, fallback: 'number' };
/** JSON values (e.g. `input_event/0`) keep their JSON types. */
const JSON_DEFAULTS: FieldDefaults = { patterns: BOOLEAN_NAMES };

/** Levels that are commands or device announcements, not readings. */
const IGNORED = new Set(['command', 'announce', 'info', 'settings', 'set']);

export function createShellyGen1Decoder(): Decoder {
  return guarded('shelly-gen1', (input) => {
    const levels = levelsFromId(input.match);
    // Gen1 ids never contain `/`: with `{deviceId#}` the first level is the id.
    const deviceId = input.match.tail.length > 0 ? input.match.deviceId : (levels[0] ?? '');
    const rest = input.match.tail.length > 0 ? input.match.tail : levels.slice(1);
    if (rest.length === 0) return nothing;
    if (rest.length === 1 && rest[0] === 'online') {
      const text = textOf(input.payload).trim().toLowerCase();
      if (text !== 'true' && text !== 'false') {
        return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'Shelly online payload must be true or false' }, deviceId);
      }
      return availability(deviceId, text === 'true' ? 'online' : 'offline', input.receivedAt, input.limits);
    }
    if (input.options.kind === 'status') {
      return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'Shelly availability is published on <id>/online' }, deviceId);
    }
    const skipped = rest.find((level) => IGNORED.has(level));
    if (skipped !== undefined) return ignored(`Shelly ${skipped} (not telemetry)`, deviceId);
    const name = rest.map(snakeCase).filter((l) => l.length > 0).join('_');
    const text = textOf(input.payload).trim();
    let leaves: Leaf[];
    let defaults = SHELLY_GEN1_TEXT_DEFAULTS;
    if (text.startsWith('{') || text.startsWith('[')) {
      const value = parseDeviceJson(text);
      if (value === undefined || (!isPlainObject(value) && !Array.isArray(value))) {
        return rejected({ code: 'FERRY_ERR_PAYLOAD_JSON', reason: `Shelly ${name} payload is not valid JSON` }, deviceId);
      }
      leaves = flatten(value, name, { snake: true });
      defaults = JSON_DEFAULTS;
    } else if (/^relay_\d+$/.test(name) && text === 'overpower') {
      // The relay switched itself off on overpower: record that, and that it is off.
      leaves = [
        { name, value: false },
        { name: `${name}_overpower`, value: true },
      ];
    } else {
      leaves = [{ name, value: text }];
    }
    const result = buildReading(
      { deviceId, kind: 'telemetry', leaves },
      draftContext(input, defaults, 'auto'),
    );
    return outcomeOf([result], deviceId);
  });
}
