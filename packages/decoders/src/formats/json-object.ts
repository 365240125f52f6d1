// The shared path of the JSON-object formats (flat, Tasmota, Home Assistant, OpenMQTTGateway):
// parse, pick the timestamp and device id, flatten to stable names, apply the value rules.
import type { DecodeInput, DecodeOutcome } from '../decoder.js';
import { rejected } from '../decoder.js';
import { buildReading, draftContext, outcomeOf } from '../draft.js';
import type { TimestampUnit } from '../config.js';
import { isPlainObject, parseDeviceJson, textOf, valueAt } from '../json.js';
import { flatten } from '../names.js';
import { isoHasOffset } from '../time.js';
import type { FieldDefaults } from '../values.js';

export interface ObjectFormat {
  readonly what: string;
  readonly snake: boolean;
  /** The payload key holding the device timestamp, left out of the metrics. */
  readonly tsKey?: string;
  readonly defaultUnit: TimestampUnit;
  /** Tasmota's `Time` is local time without an offset: rather than guess the zone, use the receive time. */
  readonly isoWithoutOffset?: 'utc' | 'receive';
  readonly defaults: FieldDefaults;
  readonly skipKeys?: ReadonlySet<string>;
  /** Payload keys that become tags instead of metrics (stable descriptors such as a BLE model). */
  readonly tagKeys?: readonly string[];
  /** Prefix for every metric name (e.g. an ESPHome light's name). */
  readonly prefix?: string;
  readonly flags?: readonly string[];
}

export type ParsedObject = { readonly ok: true; readonly value: Record<string, unknown> } | { readonly ok: false; readonly outcome: DecodeOutcome };

export function parseObject(input: DecodeInput, what: string, deviceId: string | undefined): ParsedObject {
  const text = textOf(input.payload);
  const value = parseDeviceJson(text);
  if (value === undefined) {
    const shown = JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text);
    return { ok: false, outcome: rejected({ code: 'FERRY_ERR_PAYLOAD_JSON', reason: `${what} payload is not valid JSON: ${shown}` }, deviceId) };
  }
  if (!isPlainObject(value)) {
    return { ok: false, outcome: rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `${what} payload must be a JSON object` }, deviceId) };
  }
  return { ok: true, value };
}

/** The device id: from the configured payload field when there is one, else from the topic. */
export function deviceIdFrom(input: DecodeInput, topicId: string, body: unknown): string | { readonly rejection: DecodeOutcome } {
  const field = input.options.deviceIdField;
  if (field === undefined) return topicId;
  const value = valueAt(body, field);
  if (typeof value === 'string' && value.length > 0) return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return {
    rejection: rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `device id field "${field}" is missing or not a string` }, topicId),
  };
}

export function readObjectMessage(input: DecodeInput, deviceId: string, body: Record<string, unknown>, format: ObjectFormat): DecodeOutcome {
  let rawTs: unknown;
  const rest: Record<string, unknown> = {};
  const tags: Record<string, string> = {};
  for (const [key, value] of Object.entries(body)) {
    if (format.tsKey !== undefined && key === format.tsKey) rawTs = value;
    else if (format.tagKeys?.includes(key) && (typeof value === 'string' || typeof value === 'number')) tags[key] = String(value);
    else Object.defineProperty(rest, key, { value, enumerable: true });
  }
  if (typeof rawTs === 'string' && format.isoWithoutOffset === 'receive' && !isoHasOffset(rawTs) && !/^\d+(\.\d+)?$/.test(rawTs.trim())) {
    rawTs = undefined;
  }
  const leaves = flatten(rest, format.prefix ?? '', { snake: format.snake, ...(format.skipKeys ? { skipKeys: format.skipKeys } : {}) });
  const result = buildReading(
    {
      deviceId,
      kind: 'telemetry',
      leaves,
      rawTs,
      tags,
      ...(format.flags ? { flags: format.flags } : {}),
    },
    draftContext(input, format.defaults, format.defaultUnit),
  );
  return outcomeOf([result], deviceId);
}

/** An availability payload: `online`/`offline` (any case), `true`/`false`, or JSON `{"state": ...}`. */
export function readAvailabilityPayload(input: DecodeInput): 'online' | 'offline' | undefined {
  const text = textOf(input.payload).trim();
  if (text.startsWith('{') || text.startsWith('"')) {
    const value = parseDeviceJson(text);
    if (typeof value === 'string') return stateWord(value);
    if (isPlainObject(value)) {
      const state = value.state ?? value.status;
      return typeof state === 'string' || typeof state === 'boolean' ? stateWord(state) : undefined;
    }
    return undefined;
  }
  return stateWord(text);
}

function stateWord(raw: string | boolean): 'online' | 'offline' | undefined {
  if (typeof raw === 'boolean') return raw ? 'online' : 'offline';
  const lower = raw.trim().toLowerCase();
  if (lower === 'online' || lower === 'true') return 'online';
  if (lower === 'offline' || lower === 'false') return 'offline';
  return undefined;
}

