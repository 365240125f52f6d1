// The one interface every device format implements: bytes and topic in, readings and typed
// rejections out. A decoder never throws; what it cannot read it names in a rejection.
import { isFerryError } from '@ferry/protocol';
import type { DeviceReading, Limits, Rejection, TopicKind } from '@ferry/protocol';
import type { CoercionRule, FormatName, ScalarConfig, TimestampUnit } from './config.js';

export interface TopicMatch {
  /** The device id the pattern found in the topic. */
  readonly deviceId: string;
  /**
   * The topic levels after the `{deviceId}` level (empty for `{deviceId#}`, whose id takes the
   * rest of the topic): decoders read entity names and message types from them.
   */
  readonly tail: readonly string[];
}

/** A pattern entry's options, as a decoder sees them. */
export interface DecoderOptions {
  /** The pattern's kind: `status` makes the whole payload an availability message. */
  readonly kind: TopicKind | undefined;
  /** Per-field coercion overrides, keyed by the final metric name. */
  readonly coerce: Readonly<Record<string, CoercionRule>>;
  readonly timestampUnit: TimestampUnit | undefined;
  /** Dotted path (or line-protocol tag) holding the device id instead of the topic. */
  readonly deviceIdField: string | undefined;
  /** Format `scalar`: the metric name template and type of a bare payload. */
  readonly scalar?: ScalarConfig | undefined;
}

export interface DecodeInput {
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly match: TopicMatch;
  /** Receive time, epoch milliseconds. */
  readonly receivedAt: number;
  readonly limits: Limits;
  readonly options: DecoderOptions;
}

export interface DecodeOutcome {
  /** Zero readings is a valid answer: a command topic, a BIRTH that only defines aliases. */
  readonly readings: readonly DeviceReading[];
  /** Values set aside while the rest of their reading was kept (NaN, a string where a number was configured...). */
  readonly dropped: readonly Rejection[];
  /** Set when nothing of the message could be taken. */
  readonly rejection?: Rejection;
  /** The device id the message was about, when known, for the dead letter. */
  readonly deviceId?: string;
  /**
   * Set when the message was deliberately not read: an `action: "ignore"` pattern (its reason) or a
   * message type a format knows carries no telemetry (a command echo, a command's answer, discovery
   * metadata). Never with readings or a rejection: the receiver counts it by this reason and
   * acknowledges it, and never dead-letters it.
   */
  readonly ignored?: string;
}

export interface Decoder {
  readonly name: FormatName;
  decode(input: DecodeInput): DecodeOutcome;
  /**
   * From the topic alone, the device whose state and health a message belongs to, so that an
   * ingestor partition receives all of them (a Sparkplug node's BIRTH and DATA, a device's
   * availability beside its data). Default: the device id the pattern found.
   */
  routingKey?(topic: string, match: TopicMatch): string | undefined;
}

export const nothing: DecodeOutcome = { readings: [], dropped: [] };

/** A message deliberately not read, with the reason it is counted under. */
export function ignored(reason: string, deviceId?: string): DecodeOutcome {
  return { readings: [], dropped: [], ignored: reason, ...(deviceId !== undefined ? { deviceId } : {}) };
}

export function rejected(rejection: Rejection, deviceId?: string): DecodeOutcome {
  return { readings: [], dropped: [], rejection, ...(deviceId !== undefined ? { deviceId } : {}) };
}

/**
 * Runs a decoder body and turns anything it throws into a rejection: the promise "a decoder never
 * throws" is kept here once instead of in every format.
 */
export function guarded(name: FormatName, body: (input: DecodeInput) => DecodeOutcome): Decoder {
  return {
    name,
    decode(input) {
      if (input.payload.byteLength > input.limits.maxPayloadBytes) {
        return rejected({
          code: 'FERRY_ERR_PAYLOAD_TOO_LARGE',
          reason: `payload is ${input.payload.byteLength} bytes, at most ${input.limits.maxPayloadBytes} allowed`,
        });
      }
      try {
        return body(input);
      } catch (err) {
        // A typed refusal thrown from deep inside a format (textOf's invalid UTF-8) keeps its code.
        if (isFerryError(err)) return rejected({ code: err.code, reason: err.message.replace(`${err.code}: `, '') });
        return rejected({
          code: 'FERRY_ERR_PAYLOAD_SCHEMA',
          reason: `${name} payload could not be read: ${err instanceof Error ? err.message : String(err)}`.slice(0, 300),
        });
      }
    },
  };
}

/** The topic levels from the device id on: the id's own levels, then the tail. */
export function levelsFromId(match: TopicMatch): string[] {
  return [...match.deviceId.split('/'), ...match.tail];
}

/**
 * The device id once a format's own suffix (e.g. ESPHome's `sensor/<name>/state`) is accounted
 * for: a `{deviceId}` pattern fixed the id already; a `{deviceId#}` id took the suffix with it.
 */
export function deviceIdBefore(match: TopicMatch, suffixLength: number): string | undefined {
  if (match.tail.length >= suffixLength) return match.deviceId;
  const idLevels = match.deviceId.split('/');
  const keep = idLevels.length - (suffixLength - match.tail.length);
  return keep >= 1 ? idLevels.slice(0, keep).join('/') : undefined;
}
