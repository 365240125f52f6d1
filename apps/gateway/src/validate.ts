// Stage 2, decode and validate: a device publish (topic, bytes) becomes readings or a typed
// rejection, by the format configured for the first pattern its topic matches (@ferry/decoders).
// Pure but for the per-device state of stateful formats (Sparkplug aliases, Shelly Gen2 status),
// which lives in this validator, one per gateway. The receive time is passed in.
import { createDecoderSet } from '@ferry/decoders';
import type { FormatConfigInput } from '@ferry/decoders';
import type { CompiledPattern, DeviceReading, Limits, Rejection } from '@ferry/protocol';

export type DeviceMessageVerdict =
  | {
      readonly ok: true;
      /** Zero (a command topic, an alias-only BIRTH), one, or several (line protocol, Sparkplug) readings. */
      readonly readings: readonly DeviceReading[];
      /** Values set aside while the rest of the reading was kept (e.g. a NaN metric). */
      readonly dropped: readonly Rejection[];
      readonly deviceId?: string;
      /**
       * Set when the message was deliberately not read (an `action: "ignore"` pattern, a command
       * echo, a command's answer): the reason to count it under. It has no readings and is
       * acknowledged, never dead-lettered.
       */
      readonly ignored?: string;
    }
  | { readonly ok: false; readonly rejection: Rejection; readonly deviceId?: string };

export interface DeviceMessageValidator {
  readonly patterns: readonly CompiledPattern[];
  validate(topic: string, payload: Uint8Array, receivedAt: number): DeviceMessageVerdict;
  /** The device id the topic names (its first matching pattern's `{deviceId}`), without decoding. */
  deviceIdOf(topic: string): string | undefined;
}

export function createDeviceMessageValidator(patterns: readonly FormatConfigInput[], limits: Limits): DeviceMessageValidator {
  const decoders = createDecoderSet(patterns);
  return {
    // Ignore patterns only shadow later ones: an attached broker need not send what is dropped.
    patterns: decoders.entries.filter((e) => e.config.action !== 'ignore').map((e) => e.compiled),
    deviceIdOf: (topic) => decoders.route(topic)?.deviceId,
    validate(topic, payload, receivedAt) {
      const outcome = decoders.decode(topic, payload, receivedAt, limits);
      const deviceId = outcome.deviceId ?? outcome.readings[0]?.deviceId;
      if (outcome.rejection) return deviceId !== undefined ? { ok: false, rejection: outcome.rejection, deviceId } : { ok: false, rejection: outcome.rejection };
      // The usual verdict, a device's readings, is built without spreading optional keys.
      if (outcome.ignored === undefined) {
        return deviceId !== undefined
          ? { ok: true, readings: outcome.readings, dropped: outcome.dropped, deviceId }
          : { ok: true, readings: outcome.readings, dropped: outcome.dropped };
      }
      return { ok: true, readings: outcome.readings, dropped: outcome.dropped, ignored: outcome.ignored, ...(deviceId !== undefined ? { deviceId } : {}) };
    },
  };
}
