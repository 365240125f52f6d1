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
  readonly payloadEncoding: 'utf8' | 'base64';
  readonly payload: string;
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
    payloadEncoding: isText ? 'utf8' : 'base64',
    payload: isText ? text : entry.payload.toString('base64'),
  };
}
