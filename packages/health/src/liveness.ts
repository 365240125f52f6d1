// Which liveness word wins: the order of gateway statuses (by uplink session, then by arrival) and
// of device statuses (by arrival at the gateway). Pure. No device- or gateway-supplied time decides
// alone: a Will carries the time its session began, older than that session's last status, and a
// gateway or device clock may be minutes off (docs/health.md, "Ordering").

/** What the model keeps of the gateway status it took last. */
export interface GatewayStatusMark {
  /** The uplink session of that status (absent from gateways older than epochs). */
  readonly epoch?: number | undefined;
  readonly state: 'online' | 'offline';
  /** The gateway's own time on it. */
  readonly ts: number;
  /** The gateway's time on the last offline status taken: a replay of it is not news (no-epoch fallback). */
  readonly offlineTs?: number | undefined;
}

export interface GatewayStatusWord {
  readonly epoch?: number | undefined;
  readonly state: 'online' | 'offline';
  readonly ts: number;
}

/**
 * Whether a gateway status that just arrived supersedes the one taken last. Statuses reach the
 * ingestor in the broker's order of arrival, and the rules are:
 *
 * - A newer session (larger epoch) always wins; an older one never does: a retained Will of an old
 *   session, replayed to a restarted ingestor or published by the broker after the gateway
 *   reconnected, cannot override the new session's `online`.
 * - Within one session, arrival order decides, except that the session's end is final: its
 *   offline status (Will or clean close) wins over every status of the session, and nothing of
 *   that session after it changes anything (a retained copy crossing a live one).
 * - Without epochs (a gateway older than them), the fallback: an `online` wins unless it is older
 *   by the gateway's clock than the status taken (a retained copy crossing a live one); an
 *   `offline` wins unless it is a Will already taken (same time or older than the last offline).
 *   A late Will of an old session then shows the gateway offline until its next status, one
 *   status interval later.
 */
export function gatewayStatusSupersedes(known: GatewayStatusMark | undefined, next: GatewayStatusWord): boolean {
  if (!known) return true;
  if (next.epoch !== undefined && known.epoch !== undefined) {
    if (next.epoch !== known.epoch) return next.epoch > known.epoch;
    return known.state === 'online';
  }
  // A gateway upgraded to epochs: its first status with one starts the order afresh.
  if (next.epoch !== undefined) return true;
  if (next.state === 'offline') return known.offlineTs === undefined || next.ts > known.offlineTs;
  return known.state === 'offline' || next.ts >= known.ts;
}

/** When a message arrived: the (clock-corrected) receive time, and the gateway's seq when it has one. */
export interface Arrival {
  readonly at: number;
  /** The gateway's outbox sequence: its order of arrival at that gateway, whatever the clocks. */
  readonly seq?: number | undefined;
}

/**
 * Whether `a` arrived at or after `b`. Two messages that came through the same gateway are ordered
 * by the gateway's seq (assigned in arrival order, monotonic across its restarts), so replays and
 * batches that settle out of order cannot reorder them; otherwise by receive time, a tie counting
 * as after.
 */
export function arrivedAfter(a: Arrival, b: Arrival): boolean {
  if (a.seq !== undefined && b.seq !== undefined) return a.seq >= b.seq;
  return a.at >= b.at;
}

/** Samples of the gateway clock's offset kept per session: the smallest is the best estimate. */
export const CLOCK_OFFSET_SAMPLES = 5;

/**
 * The gateway clock's offset from ours (add it to a gateway time to get ours): the smallest of
 * the recent samples `our receive time - status ts`, since transit only ever adds to it and a
 * retained copy replayed later adds a lot.
 */
export function clockOffsetOf(samples: readonly number[]): number {
  let min: number | undefined;
  for (const s of samples) if (min === undefined || s < min) min = s;
  return min ?? 0;
}
