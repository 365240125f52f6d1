// How a dead letter is shown to an operator (ops API, CLI): JSON with the payload as text when
// it is UTF-8 (readings are JSON), else base64, so nothing of the raw bytes is lost in transit.
import type { DeadLetter } from './store.js';

export interface PresentedDeadLetter {
  readonly id: number;
  readonly at: number;
  readonly code: string;
  readonly reason: string;
  readonly source: DeadLetter['source'];
  readonly issues: readonly unknown[];
  readonly replayedAt: number | null;
  /** 'gateway': refused at a gateway and reported upstream (source.gatewayLetterId is its id there). */
  readonly origin: 'gateway' | 'local';
  readonly payloadEncoding: 'utf8' | 'base64';
  readonly payload: string;
  /** The payload shown is the first bytes of one this large. */
  readonly payloadTruncated: boolean;
  readonly payloadBytes: number;
}

export function presentDeadLetter(entry: DeadLetter): PresentedDeadLetter {
  const text = entry.payload.toString('utf8');
  const isText = Buffer.from(text, 'utf8').equals(entry.payload);
  return {
    id: entry.id,
    at: entry.at,
    code: entry.code,
    reason: entry.reason,
    source: entry.source,
    issues: entry.issues ?? [],
    replayedAt: entry.replayedAt,
    origin: entry.source.gatewayLetterId !== undefined ? 'gateway' : 'local',
    payloadEncoding: isText ? 'utf8' : 'base64',
    payload: isText ? text : entry.payload.toString('base64'),
    payloadTruncated: entry.payloadBytes !== undefined && entry.payloadBytes > entry.payload.byteLength,
    payloadBytes: entry.payloadBytes ?? entry.payload.byteLength,
  };
}
