// The value rules: how one raw field value becomes a metric value, decided by the field's
// configured rule (format default, then per-field override), never by the look of one message.
import type { MetricValue, Rejection } from '@ferry/protocol';
import type { CoercionRule } from './config.js';
import { NON_FINITE_MARKER, OUT_OF_RANGE_MARKER, RESERVED_KEY_MARKER, within64Bits } from './json.js';

/** A field's rule: a fixed rule, or `keep` (take the JSON type as sent). */
export type FieldRule = CoercionRule | 'keep';

/** Per-format defaults: exact names first, then patterns in order; `keep` when nothing matches. */
export interface FieldDefaults {
  readonly exact?: Readonly<Record<string, FieldRule>>;
  readonly patterns?: readonly (readonly [RegExp, FieldRule])[];
  readonly fallback?: FieldRule;
}

export function ruleFor(name: string, defaults: FieldDefaults, overrides: Readonly<Record<string, CoercionRule>>): FieldRule {
  // hasOwn: a field named `constructor` or `__proto__` must not find Object's own members.
  if (Object.hasOwn(overrides, name)) {
    const override = overrides[name];
    if (override) return override;
  }
  if (defaults.exact && Object.hasOwn(defaults.exact, name)) {
    const exact = defaults.exact[name];
    if (exact) return exact;
  }
  for (const [pattern, rule] of defaults.patterns ?? []) if (pattern.test(name)) return rule;
  return defaults.fallback ?? 'keep';
}

export type ValueVerdict = { readonly ok: true; readonly value: MetricValue } | { readonly ok: false; readonly rejection: Rejection } | { readonly ok: 'skip' };

const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;
const NON_FINITE_TEXT = /^[+-]?(?:nan|inf|infinity)$/i;
const TRUE_TEXT = new Set(['on', 'true', '1', 'yes']);
const FALSE_TEXT = new Set(['off', 'false', '0', 'no']);

function notFinite(name: string, raw: unknown): ValueVerdict {
  const shown = raw === NON_FINITE_MARKER ? 'NaN or infinite' : String(raw).slice(0, 20);
  return { ok: false, rejection: { code: 'FERRY_ERR_VALUE_NOT_FINITE', reason: `metric "${name}" is ${shown}` } };
}

function wrongType(name: string, raw: unknown, rule: CoercionRule): ValueVerdict {
  const shown = typeof raw === 'string' ? JSON.stringify(raw.slice(0, 40)) : typeof raw === 'number' || typeof raw === 'boolean' ? String(raw) : typeof raw === 'object' ? 'an object or array' : typeof raw;
  return {
    ok: false,
    rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `metric "${name}" is configured as ${rule} but is ${shown}` },
  };
}

function outOfRange(name: string, raw: unknown): ValueVerdict {
  const shown = raw === OUT_OF_RANGE_MARKER ? 'an integer' : String(raw).slice(0, 30);
  return {
    ok: false,
    rejection: { code: 'FERRY_ERR_VALUE_OUT_OF_RANGE', reason: `metric "${name}" is ${shown} beyond the 64-bit range (-2^63 to 2^64-1)` },
  };
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Reads a numeric string. Integers beyond 2^53 stay the exact decimal string: a float would
 * round them, and a counter or id that changes its last digits is worse than one stored as text.
 * Beyond the 64-bit range (int64 below, uint64 above) no device counts: OUT_OF_RANGE_MARKER.
 */
export function numberFromText(text: string): MetricValue | undefined {
  const trimmed = text.trim();
  if (!DECIMAL.test(trimmed)) return undefined;
  if (INTEGER.test(trimmed)) {
    const normalized = BigInt(trimmed);
    if (!within64Bits(normalized)) return OUT_OF_RANGE_MARKER;
    if (normalized > MAX_SAFE || normalized < -MAX_SAFE) return normalized.toString();
  }
  return Number(trimmed);
}

/** Applies one rule to one raw value. `null` is "no value" (Zigbee2MQTT sends it for unknowns): skipped, not an error. */
export function coerceValue(name: string, raw: unknown, rule: FieldRule): ValueVerdict {
  if (raw === null || raw === undefined) return { ok: 'skip' };
  if (raw === NON_FINITE_MARKER) return notFinite(name, raw);
  if (raw === OUT_OF_RANGE_MARKER) return outOfRange(name, raw);
  if (raw === RESERVED_KEY_MARKER) return { ok: false, rejection: { code: 'FERRY_ERR_NAME_INVALID', reason: `key "${name}" is reserved (__proto__, constructor, prototype) and never kept as a field` } };
  if (typeof raw === 'object') return wrongType(name, raw, rule === 'keep' ? 'string' : rule);
  switch (rule) {
    case 'keep':
      if (typeof raw === 'number' && !Number.isFinite(raw)) return notFinite(name, raw);
      if (typeof raw === 'number' || typeof raw === 'boolean' || typeof raw === 'string') return { ok: true, value: raw };
      return wrongType(name, raw, 'string');
    case 'number':
      if (typeof raw === 'number') return Number.isFinite(raw) ? { ok: true, value: raw } : notFinite(name, raw);
      // A boolean is not a number: stored as 1/0 it would pass for a measured value.
      if (typeof raw === 'boolean') return wrongType(name, raw, rule);
      if (typeof raw === 'string') {
        if (NON_FINITE_TEXT.test(raw.trim())) return notFinite(name, raw);
        const value = numberFromText(raw);
        if (value === OUT_OF_RANGE_MARKER) return outOfRange(name, raw);
        if (value === undefined || (typeof value === 'number' && !Number.isFinite(value))) {
          return value === undefined ? wrongType(name, raw, rule) : notFinite(name, raw);
        }
        return { ok: true, value };
      }
      return wrongType(name, raw, rule);
    case 'boolean':
      if (typeof raw === 'boolean') return { ok: true, value: raw };
      if (typeof raw === 'number') return raw === 1 || raw === 0 ? { ok: true, value: raw === 1 } : wrongType(name, raw, rule);
      if (typeof raw === 'string') {
        const lower = raw.trim().toLowerCase();
        if (TRUE_TEXT.has(lower)) return { ok: true, value: true };
        if (FALSE_TEXT.has(lower)) return { ok: true, value: false };
      }
      return wrongType(name, raw, rule);
    case 'string':
      if (typeof raw === 'number' && !Number.isFinite(raw)) return notFinite(name, raw);
      if (typeof raw === 'string' || typeof raw === 'number' || typeof raw === 'boolean') return { ok: true, value: String(raw) };
      return wrongType(name, raw, rule);
  }
}
