// Stage 2, decode and validate: a device publish (topic, bytes) becomes a reading or a typed
// rejection. Pure: the receive time is passed in.
import { compilePattern, decodeDevicePayload } from '@ferry/protocol';
import type { CompiledPattern, DeviceReading, Limits, Rejection, TopicKind } from '@ferry/protocol';

export type DeviceMessageVerdict =
  | {
      readonly ok: true;
      readonly reading: DeviceReading;
      /** Values set aside while the rest of the reading was kept (e.g. a NaN metric). */
      readonly dropped: readonly Rejection[];
    }
  | { readonly ok: false; readonly rejection: Rejection; readonly deviceId?: string };

export interface DeviceMessageValidator {
  readonly patterns: readonly CompiledPattern[];
  validate(topic: string, payload: Uint8Array, receivedAt: number): DeviceMessageVerdict;
}

export function createDeviceMessageValidator(
  patterns: readonly { readonly pattern: string; readonly kind: TopicKind }[],
  limits: Limits,
): DeviceMessageValidator {
  const compiled = patterns.map((p) => compilePattern(p.pattern, p.kind));
  return {
    patterns: compiled,
    validate(topic, payload, receivedAt) {
      for (const pattern of compiled) {
        const match = pattern.match(topic);
        if (!match) continue;
        const result = decodeDevicePayload({ payload, kind: pattern.kind, deviceId: match.deviceId, receivedAt, limits });
        if (result.ok) return { ok: true, reading: result.reading, dropped: result.dropped };
        return { ok: false, rejection: result.rejection, deviceId: match.deviceId };
      }
      return {
        ok: false,
        rejection: {
          code: 'FERRY_ERR_TOPIC_UNKNOWN',
          reason: `topic "${topic.slice(0, 200)}" matches none of ${compiled.map((p) => `"${p.pattern}"`).join(', ')}`,
        },
      };
    },
  };
}
