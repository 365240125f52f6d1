// Stage 1b, direct decode: a message a device published straight to the broker (no gateway)
// becomes a reading, through the same patterns, decoder and limits a gateway applies. Pure.
import { compilePattern, decodeDevicePayload } from '@ferry/protocol';
import type { CompiledPattern, DeviceReading, Limits, Rejection } from '@ferry/protocol';

export interface DirectPatterns {
  readonly telemetry: readonly string[];
  readonly status: readonly string[];
}

export interface DeviceTopics {
  /** MQTT filters to subscribe to. */
  readonly filters: readonly string[];
  /** The device id and kind a topic names, or undefined when no pattern matches. */
  match(topic: string): { readonly deviceId: string; readonly pattern: CompiledPattern } | undefined;
}

export function compileDeviceTopics(patterns: DirectPatterns): DeviceTopics {
  const compiled = [
    ...patterns.telemetry.map((p) => compilePattern(p, 'telemetry')),
    ...patterns.status.map((p) => compilePattern(p, 'status')),
  ];
  return {
    filters: [...new Set(compiled.map((c) => c.filter))],
    match(topic) {
      for (const pattern of compiled) {
        const m = pattern.match(topic);
        if (m) return { deviceId: m.deviceId, pattern };
      }
      return undefined;
    },
  };
}

/** A device message as the journal holds it. */
export interface DirectEntry {
  /** Journal row id. */
  readonly id: number;
  readonly topic: string;
  readonly payload: Buffer;
  /** When the ingestor received it, epoch ms: the reading's time when the device sends none. */
  readonly receivedAt: number;
}

export type DecodedDirect =
  | { readonly ok: true; readonly reading: DeviceReading }
  | { readonly ok: false; readonly rejection: Rejection; readonly deviceId: string | undefined };

/** Decodes without the skew check (limits as given): the caller applies its skew policy. */
export function decodeDirect(entry: DirectEntry, topics: DeviceTopics, limits: Limits): DecodedDirect {
  const matched = topics.match(entry.topic);
  if (!matched) {
    return { ok: false, deviceId: undefined, rejection: { code: 'FERRY_ERR_TOPIC_UNKNOWN', reason: `topic "${entry.topic.slice(0, 200)}" matches no device pattern` } };
  }
  const decoded = decodeDevicePayload({ payload: entry.payload, kind: matched.pattern.kind, deviceId: matched.deviceId, receivedAt: entry.receivedAt, limits });
  if (!decoded.ok) return { ok: false, deviceId: matched.deviceId, rejection: decoded.rejection };
  return { ok: true, reading: decoded.reading };
}
