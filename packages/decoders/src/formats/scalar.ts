// Bare scalar payloads, one value per topic (`21.5`, `ON`, `Normal`), as per-field firmware
// publishes them: the pattern's `scalar` option names the metric (literal text and `{N}` topic
// levels) and fixes its type, so a text sensor's `Normal` is a string and a `21.5` a number.
import { scalarMetricName } from '../config.js';
import { guarded, rejected } from '../decoder.js';
import type { Decoder } from '../decoder.js';
import { buildReading, draftContext, outcomeOf } from '../draft.js';
import { parseDeviceJson, textOf } from '../json.js';
import { decodeAvailability } from './flat.js';

export function createScalarDecoder(): Decoder {
  return guarded('scalar', (input) => {
    const deviceId = input.match.deviceId;
    if (input.options.kind === 'status') return decodeAvailability(input, deviceId);
    const scalar = input.options.scalar;
    // Config validation requires the option; reaching here without it is a programming error, named as such.
    if (scalar === undefined) return rejected({ code: 'FERRY_ERR_CONFIG_INVALID', reason: 'format "scalar" needs the pattern option scalar: { metric, type }' }, deviceId);
    const name = scalarMetricName(scalar.metric, input.topic);
    if (name === undefined || name.length === 0) {
      return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `topic has no level for metric "${scalar.metric}"` }, deviceId);
    }
    let text = textOf(input.payload).trim();
    if (text.length === 0) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `metric "${name}": payload is empty` }, deviceId);
    if (text.startsWith('"')) {
      // A JSON-quoted string (`"Normal"`) is the string it quotes; anything else stays the text as sent.
      const unquoted = parseDeviceJson(text);
      if (typeof unquoted === 'string') text = unquoted;
    } else if (text.startsWith('{') || text.startsWith('[')) {
      return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `metric "${name}": a scalar pattern reads one plain value, not a JSON object or array` }, deviceId);
    }
    const result = buildReading(
      { deviceId, kind: 'telemetry', leaves: [{ name, value: text }] },
      draftContext(input, { fallback: scalar.type }, 'auto'),
    );
    return outcomeOf([result], deviceId);
  });
}
