// Durations as people type them on a command line: 500ms, 30s, 2m, 1h, or plain seconds.
import { FerryError } from '@ferry/protocol';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** Milliseconds for `text`; throws FERRY_ERR_CONFIG_INVALID naming `what` when it is not a duration. */
export function parseDuration(text: string, what = 'duration'): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  const amount = match?.[1];
  if (!match || amount === undefined) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `${what}: "${text}" is not a duration; expected e.g. 500ms, 30s, 2m or 1h`, {
      fields: [what],
    });
  }
  return Math.round(Number(amount) * (UNIT_MS[match[2] ?? 's'] ?? 1_000));
}
