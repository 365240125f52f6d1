import { describe, expect, it } from 'vitest';
import { decideBatch, ENVELOPE_OVERHEAD_BYTES, READING_OVERHEAD_BYTES } from '../src/batch.js';

const policy = { maxReadings: 100, maxBytes: 10_000, lingerMs: 20 };

describe('decideBatch', () => {
  it('stays idle with nothing unsent', () => {
    expect(decideBatch({ readings: 0, bytes: 0, waitingSince: undefined }, policy, 1000)).toEqual({ action: 'idle' });
  });

  it('sends at once when a full batch of readings is waiting', () => {
    expect(decideBatch({ readings: 100, bytes: 100, waitingSince: 1000 }, policy, 1000)).toEqual({ action: 'send' });
  });

  it('sends at once when the waiting readings fill the byte budget', () => {
    const bytes = policy.maxBytes - ENVELOPE_OVERHEAD_BYTES - 2 * READING_OVERHEAD_BYTES;
    expect(decideBatch({ readings: 2, bytes, waitingSince: 1000 }, policy, 1000)).toEqual({ action: 'send' });
    expect(decideBatch({ readings: 2, bytes: bytes - 1, waitingSince: 1000 }, policy, 1000)).toEqual({ action: 'wait', ms: 20 });
  });

  it('lets a partial batch linger for what is left of lingerMs, then sends it', () => {
    expect(decideBatch({ readings: 3, bytes: 300, waitingSince: 1000 }, policy, 1005)).toEqual({ action: 'wait', ms: 15 });
    expect(decideBatch({ readings: 3, bytes: 300, waitingSince: 1000 }, policy, 1020)).toEqual({ action: 'send' });
  });

  it('sends a partial batch at once when linger is zero', () => {
    expect(decideBatch({ readings: 1, bytes: 10, waitingSince: 1000 }, { ...policy, lingerMs: 0 }, 1000)).toEqual({ action: 'send' });
  });
});
