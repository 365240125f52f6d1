// Reads fixtures and runs a one-pattern decoder set: the way a gateway uses the decoders.
import { readFileSync } from 'node:fs';
import { defaultLimits } from '@ferry/protocol';
import type { DeviceReading } from '@ferry/protocol';
import { createDecoderSet } from '../src/index.js';
import type { DecoderSetOutcome, FormatConfigInput } from '../src/index.js';

export function fixture(name: string): Buffer {
  return readFileSync(new URL(`./fixtures/${name}`, import.meta.url));
}

export function bytes(text: string): Buffer {
  return Buffer.from(text, 'utf8');
}

export interface OneFormat {
  decode(topic: string, payload: Uint8Array | string, receivedAt?: number): DecoderSetOutcome;
}

export function decoderFor(entries: FormatConfigInput | FormatConfigInput[], defaultReceivedAt = Date.UTC(2026, 10, 25, 12)): OneFormat {
  const set = createDecoderSet(Array.isArray(entries) ? entries : [entries]);
  return {
    decode(topic, payload, receivedAt = defaultReceivedAt) {
      return set.decode(topic, typeof payload === 'string' ? bytes(payload) : payload, receivedAt, defaultLimits);
    },
  };
}

export function only(outcome: DecoderSetOutcome): DeviceReading {
  if (outcome.rejection) throw new Error(`rejected: ${outcome.rejection.code} ${outcome.rejection.reason}`);
  if (outcome.readings.length !== 1) throw new Error(`expected one reading, got ${outcome.readings.length}`);
  return outcome.readings[0]!;
}
