// Stage 4, batch: when to cut a batch from the unsent readings. Pure; the sender asks it after
// every commit, ack and timer.

export interface BatchPolicy {
  readonly maxReadings: number;
  /** Upper bound on an envelope's size, in bytes (before compression). */
  readonly maxBytes: number;
  /** How long a partial batch waits for more readings. */
  readonly lingerMs: number;
}

export interface Backlog {
  /** Readings in the outbox not in any batch awaiting an ack. */
  readonly readings: number;
  readonly bytes: number;
  /** When the oldest unsent reading became sendable (epoch ms); undefined when none is waiting. */
  readonly waitingSince: number | undefined;
}

export type BatchDecision = { readonly action: 'idle' } | { readonly action: 'send' } | { readonly action: 'wait'; readonly ms: number };

/** What the envelope adds around a stored reading: `"seq":<up to 16 digits>,` and a separator. */
export const READING_OVERHEAD_BYTES = 32;
/** The envelope's header and brackets. */
export const ENVELOPE_OVERHEAD_BYTES = 256;

export function decideBatch(backlog: Backlog, policy: BatchPolicy, now: number): BatchDecision {
  if (backlog.readings <= 0) return { action: 'idle' };
  if (backlog.readings >= policy.maxReadings) return { action: 'send' };
  if (backlog.bytes + backlog.readings * READING_OVERHEAD_BYTES >= readingsBudget(policy)) return { action: 'send' };
  const waited = backlog.waitingSince === undefined ? 0 : now - backlog.waitingSince;
  if (waited >= policy.lingerMs) return { action: 'send' };
  return { action: 'wait', ms: policy.lingerMs - waited };
}

/** Bytes of readings (with their per-reading overhead) that fit in one envelope. */
export function readingsBudget(policy: BatchPolicy): number {
  return Math.max(1, policy.maxBytes - ENVELOPE_OVERHEAD_BYTES);
}
