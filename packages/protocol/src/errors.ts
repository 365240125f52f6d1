// The one registry of Ferry's error codes. Codes are stable: dashboards, dead-letter
// records and acks carry them, so a code is never renamed or reused.

export const ERROR_CODES = {
  FERRY_ERR_CONFIG_INVALID: 'a configuration value is missing or not what was expected',
  FERRY_ERR_PAYLOAD_TOO_LARGE: 'the payload is larger than the configured limit',
  FERRY_ERR_PAYLOAD_JSON: 'the payload is not well-formed JSON',
  FERRY_ERR_PAYLOAD_SCHEMA: 'the payload does not match the expected schema',
  FERRY_ERR_PAYLOAD_ENCODING: 'the payload or topic is not valid UTF-8 (or the topic holds U+0000)',
  FERRY_ERR_DEVICE_ID_INVALID: 'a device id has a control, zero-width or text-direction character, a . or .. level, or breaks the database tag rules',
  FERRY_ERR_NAME_INVALID: 'a metric name, tag or string value breaks the database name rules (empty, quote, trailing backslash, control character, line break, unpaired surrogate, reserved key)',
  FERRY_ERR_VALUE_NOT_FINITE: 'a metric value is NaN or infinite',
  FERRY_ERR_VALUE_OUT_OF_RANGE: 'an integer metric value lies beyond the 64-bit range (below -2^63 or above 2^64-1)',
  FERRY_ERR_LIMIT_EXCEEDED: 'a reading exceeds a configured limit (metric count, name or tag length)',
  FERRY_ERR_TIMESTAMP_SKEW: 'the reading timestamp is outside the allowed skew window',
  FERRY_ERR_TOPIC_UNKNOWN: 'the topic matches no configured device pattern',
  FERRY_ERR_DEVICE_NOT_AUTHORIZED: 'a device published as a device id its login is not for',
  FERRY_ERR_ENVELOPE_INVALID: 'a gateway batch envelope is malformed',
  FERRY_ERR_DUPLICATE_CONFLICT: 'a reading repeats a sequence number already written, with different values',
  FERRY_ERR_SINK_UNAVAILABLE: 'the database could not be reached or failed to confirm the write',
  FERRY_ERR_SINK_REJECTED: 'the database refused the points as invalid',
  FERRY_ERR_OUTBOX_FULL: 'the outbox reached its bound',
  FERRY_ERR_STORAGE: 'local storage failed (disk full, corrupt or unwritable file)',
  FERRY_ERR_SERVER_MISSING: 'a server binary needed by the test harness is not installed',
  FERRY_ERR_SERVER_START: 'a server started by the test harness did not become ready',
  FERRY_ERR_NOT_READY: 'the component is not ready or already closed',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export const errorCodes = Object.keys(ERROR_CODES) as ErrorCode[];

/** An error with a stable code; `details` is structured data for logs and dead letters. */
export class FerryError extends Error {
  override readonly name = 'FerryError';
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.code = code;
    this.details = details;
  }
}

export function isFerryError(err: unknown, code?: ErrorCode): err is FerryError {
  return err instanceof FerryError && (code === undefined || err.code === code);
}
