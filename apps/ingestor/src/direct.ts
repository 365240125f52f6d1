// Stage 1b, direct decode: a message a device published straight to the broker (no gateway)
// becomes readings, through the same pattern entries, decoders (@ferry/decoders) and limits a
// gateway applies. Pure but for the per-device state of stateful formats (Sparkplug aliases,
// Shelly Gen2 status), which lives in the DeviceTopics of one ingestor.
import { createDecoderSet } from '@ferry/decoders';
import type { FormatConfigInput } from '@ferry/decoders';
import type { DeviceReading, Limits, Rejection } from '@ferry/protocol';

export interface DeviceTopics {
  /** MQTT filters to subscribe to. */
  readonly filters: readonly string[];
  /**
   * The device id the topic names, and the key that keeps the messages of one device (or of one
   * Sparkplug edge node) together for partitioning; undefined when no pattern matches. An
   * `action: "ignore"` pattern that names no device gives no device id and routes by the topic.
   */
  match(topic: string): { readonly deviceId?: string; readonly routingKey: string } | undefined;
  /** Decodes by the first matching pattern's format; never throws. */
  decode(topic: string, payload: Uint8Array, receivedAt: number, limits: Limits): DecodedDirect;
}

export function compileDeviceTopics(patterns: readonly FormatConfigInput[]): DeviceTopics {
  const decoders = createDecoderSet(patterns);
  return {
    filters: [...new Set(decoders.filters)],
    match: (topic) => decoders.route(topic),
    decode(topic, payload, receivedAt, limits) {
      const outcome = decoders.decode(topic, payload, receivedAt, limits);
      const deviceId = outcome.deviceId ?? outcome.readings[0]?.deviceId;
      if (outcome.rejection) return { ok: false, rejection: outcome.rejection, deviceId };
      return { ok: true, readings: outcome.readings, dropped: outcome.dropped, deviceId };
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
  | {
      readonly ok: true;
      /** Zero (a command topic, an alias-only BIRTH), one, or several (line protocol, Sparkplug) readings. */
      readonly readings: readonly DeviceReading[];
      /** Values set aside while the rest of their reading was kept (a NaN, a string under a number rule). */
      readonly dropped: readonly Rejection[];
      readonly deviceId: string | undefined;
    }
  | { readonly ok: false; readonly rejection: Rejection; readonly deviceId: string | undefined };

/** Decodes without the skew check (limits as given): the caller applies its skew policy. */
export function decodeDirect(entry: Pick<DirectEntry, 'topic' | 'payload' | 'receivedAt'>, topics: DeviceTopics, limits: Limits): DecodedDirect {
  return topics.decode(entry.topic, entry.payload, entry.receivedAt, limits);
}
