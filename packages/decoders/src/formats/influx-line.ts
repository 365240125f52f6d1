// InfluxDB line protocol over MQTT, as Telegraf's MQTT output sends it (`data_format = "influx"`):
// `cpu,host=pi4,cpu=cpu-total usage_idle=97.5,usage_user=1.2 1732530000000000000`, one or more
// lines per message. Each line becomes one reading: fields are named `<measurement>_<field>`,
// the line's tags become the reading's tags, timestamps are nanoseconds unless configured.
import { guarded, rejected } from '../decoder.js';
import type { Decoder } from '../decoder.js';
import { buildReading, draftContext, outcomeOf } from '../draft.js';
import type { DraftResult } from '../draft.js';
import { textOf } from '../json.js';
import type { Leaf } from '../names.js';
import { numberFromText } from '../values.js';

export interface LineProtocolPoint {
  readonly measurement: string;
  readonly tags: Record<string, string>;
  readonly fields: Record<string, unknown>;
  /** The timestamp's digits as sent (exact), or undefined. */
  readonly timestamp: string | undefined;
}

type Parsed = { readonly ok: true; readonly point: LineProtocolPoint } | { readonly ok: false; readonly reason: string };

const BOOLEAN_TRUE = new Set(['t', 'T', 'true', 'True', 'TRUE']);
const BOOLEAN_FALSE = new Set(['f', 'F', 'false', 'False', 'FALSE']);

/** Reads up to an unescaped stop character; backslash escapes the next character. */
function readEscaped(line: string, start: number, stops: string): { text: string; end: number } {
  let text = '';
  let i = start;
  while (i < line.length) {
    const c = line.charAt(i);
    if (c === '\\' && i + 1 < line.length && stops.includes(line.charAt(i + 1))) {
      text += line.charAt(i + 1);
      i += 2;
      continue;
    }
    if (stops.includes(c)) break;
    text += c;
    i++;
  }
  return { text, end: i };
}

function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Parses one line of line protocol. */
export function parseLine(line: string): Parsed {
  const m = readEscaped(line, 0, ', ');
  if (m.text.length === 0) return { ok: false, reason: 'line has no measurement' };
  let i = m.end;
  const tags: Record<string, string> = {};
  while (line.charAt(i) === ',') {
    const key = readEscaped(line, i + 1, ',= ');
    if (line.charAt(key.end) !== '=') return { ok: false, reason: `tag "${key.text.slice(0, 40)}" has no value` };
    const value = readEscaped(line, key.end + 1, ', ');
    if (key.text.length === 0 || value.text.length === 0) return { ok: false, reason: 'empty tag key or value' };
    setOwn(tags, key.text, value.text);
    i = value.end;
  }
  if (line.charAt(i) !== ' ') return { ok: false, reason: 'line has no fields' };
  while (line.charAt(i) === ' ') i++;
  const fields: Record<string, unknown> = {};
  for (;;) {
    const key = readEscaped(line, i, ',= ');
    if (key.text.length === 0 || line.charAt(key.end) !== '=') return { ok: false, reason: 'malformed field' };
    i = key.end + 1;
    if (line.charAt(i) === '"') {
      let text = '';
      i++;
      while (i < line.length && line.charAt(i) !== '"') {
        if (line.charAt(i) === '\\' && (line.charAt(i + 1) === '"' || line.charAt(i + 1) === '\\')) {
          text += line.charAt(i + 1);
          i += 2;
        } else {
          text += line.charAt(i);
          i++;
        }
      }
      if (line.charAt(i) !== '"') return { ok: false, reason: `field "${key.text.slice(0, 40)}" has an unterminated string` };
      i++;
      setOwn(fields, key.text, text);
    } else {
      const raw = readEscaped(line, i, ', ');
      i = raw.end;
      const value = fieldValue(raw.text);
      if (value === undefined) return { ok: false, reason: `field "${key.text.slice(0, 40)}" has the unreadable value "${raw.text.slice(0, 40)}"` };
      setOwn(fields, key.text, value);
    }
    if (line.charAt(i) === ',') {
      i++;
      continue;
    }
    break;
  }
  while (line.charAt(i) === ' ') i++;
  const rest = line.slice(i).trim();
  if (rest.length > 0 && !/^-?\d+$/.test(rest)) return { ok: false, reason: `timestamp "${rest.slice(0, 40)}" is not an integer` };
  return { ok: true, point: { measurement: m.text, tags, fields, timestamp: rest.length > 0 ? rest : undefined } };
}

/** Marks a float literal the databases cannot store (line protocol has none, but senders try). */
const NON_FINITE = /^[+-]?(?:nan|inf|infinity)$/i;

function fieldValue(text: string): unknown {
  if (BOOLEAN_TRUE.has(text)) return true;
  if (BOOLEAN_FALSE.has(text)) return false;
  if (/^[+-]?\d+[iu]$/.test(text)) return numberFromText(text.slice(0, -1));
  if (NON_FINITE.test(text)) return Number.NaN;
  const value = numberFromText(text);
  return typeof value === 'number' ? value : undefined;
}

export function createInfluxLineDecoder(): Decoder {
  return guarded('influx-line', (input) => {
    const lines = textOf(input.payload)
      .split('\n')
      .map((l) => l.replace(/\r$/, ''))
      .filter((l) => l.trim().length > 0 && !l.trimStart().startsWith('#'));
    if (lines.length === 0) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'line protocol payload has no lines' }, input.match.deviceId);
    const idTag = input.options.deviceIdField;
    const results: DraftResult[] = [];
    for (const [n, line] of lines.entries()) {
      const parsed = parseLine(line);
      if (!parsed.ok) {
        results.push({ ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `line ${n + 1}: ${parsed.reason}` }, dropped: [] });
        continue;
      }
      const { measurement, fields, timestamp } = parsed.point;
      const tags = { ...parsed.point.tags };
      let deviceId = input.match.deviceId;
      if (idTag !== undefined) {
        const tagged = Object.hasOwn(tags, idTag) ? tags[idTag] : undefined;
        if (tagged === undefined) {
          results.push({ ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `line ${n + 1}: no "${idTag}" tag for the device id` }, dropped: [] });
          continue;
        }
        deviceId = tagged;
        delete tags[idTag];
      }
      const leaves: Leaf[] = Object.entries(fields).map(([field, value]) => ({ name: `${measurement}_${field}`, value }));
      results.push(
        buildReading(
          { deviceId, kind: 'telemetry', leaves, rawTs: timestamp, tags },
          draftContext(input, {}, 'ns'),
        ),
      );
    }
    return outcomeOf(results, input.match.deviceId);
  });
}
