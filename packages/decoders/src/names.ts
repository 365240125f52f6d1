// Stable metric names from the keys devices use: nested objects become one snake_case name per
// leaf (`ENERGY.Total` -> `energy_total`), so a dashboard query keeps working across firmware versions.
import { RESERVED_KEYS } from '@ferry/protocol';
import { RESERVED_KEY_MARKER } from './json.js';

/** `ApparentPower` -> `apparent_power`, `BSSId` -> `bss_id`, `DS18B20-1` -> `ds18b20_1`, `switch:0` -> `switch_0`. */
export function snakeCase(key: string): string {
  return key
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .replace(/([0-9])([A-Z][a-z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .toLowerCase();
}

export function joinName(prefix: string, key: string): string {
  return prefix ? (key ? `${prefix}_${key}` : prefix) : key;
}

/** Deeper nesting than this is not telemetry; such branches are reported, not walked. */
export const MAX_NESTING = 12;

export interface FlattenOptions {
  /** Turn keys into snake_case (Tasmota, Shelly) or keep them as sent (already snake_case in Zigbee2MQTT, TTS). */
  readonly snake: boolean;
  /** Keys left out wherever they appear (e.g. a Shelly component's redundant `id`). */
  readonly skipKeys?: ReadonlySet<string>;
}

/** A leaf found while flattening: its name and raw value (a scalar or null). */
export interface Leaf {
  readonly name: string;
  readonly value: unknown;
}

/**
 * Flattens nested objects and arrays into leaves named by their path joined with `_`. Array
 * elements are numbered from 1, as Tasmota numbers its channels (`Power1`, `Power2`).
 */
export function flatten(node: unknown, prefix: string, options: FlattenOptions, out: Leaf[] = [], depth = 0): Leaf[] {
  if (Array.isArray(node)) {
    if (depth >= MAX_NESTING) {
      out.push({ name: prefix, value: node });
      return out;
    }
    node.forEach((element, i) => flatten(element, joinName(prefix, String(i + 1)), options, out, depth + 1));
    return out;
  }
  if (node !== null && typeof node === 'object') {
    if (depth >= MAX_NESTING) {
      out.push({ name: prefix, value: node });
      return out;
    }
    for (const [key, value] of Object.entries(node as Record<string, unknown>)) {
      if (options.skipKeys?.has(key)) continue;
      // `__proto__`, `constructor`, `prototype`: never a field, nor part of a field's name; the
      // value rules set the key aside with a reason.
      if (RESERVED_KEYS.has(key)) {
        out.push({ name: joinName(prefix, key), value: RESERVED_KEY_MARKER });
        continue;
      }
      const name = options.snake ? snakeCase(key) : key;
      flatten(value, joinName(prefix, name), options, out, depth + 1);
    }
    return out;
  }
  out.push({ name: prefix, value: node });
  return out;
}
