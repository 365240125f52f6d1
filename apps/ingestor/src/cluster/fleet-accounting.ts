// Fleet accounting in Redis: how many gateway readings ended written and refused, per gateway,
// counted by the dedupe record script (shared-dedupe.ts) in the same atomic step that records
// their seqs. A seq counts only when its record is new (or a refusal turns into a write), so a
// record sent twice (a resend after a kill -9, a command resent after a reconnect, a batch replayed
// by the next lease holder) counts once, whichever ingestor sent it.
//
// What it does not count: readings without a gateway seq (direct devices), duplicates (they record
// nothing), and a seq written again after the window let its record go (counted a second time,
// as the database overwrote the same point: rare, a resend older than `windowPerGateway` seqs).
import type { RedisClient } from './redis.js';

/** The hashes (field: gateway id, value: count) the record script increments. */
export function fleetCountKeys(keyPrefix: string): { readonly written: string; readonly rejected: string } {
  return { written: `${keyPrefix}fleet:count:written`, rejected: `${keyPrefix}fleet:count:rejected` };
}

export interface FleetCount {
  /** Seqs recorded as written: readings in the database, each once. */
  readonly written: number;
  /** Seqs recorded as refused for good and not written since (a later write moves a seq from here to written). */
  readonly rejected: number;
}

export interface FleetCounts {
  readonly gateways: Record<string, FleetCount>;
  readonly total: FleetCount;
}

/** The fleet's counts as Redis holds them now (one round trip: two HGETALLs in a MULTI). */
export async function fleetCounts(redis: RedisClient, keyPrefix: string): Promise<FleetCounts> {
  const keys = fleetCountKeys(keyPrefix);
  const replies = await redis.multi().hgetall(keys.written).hgetall(keys.rejected).exec();
  const hashOf = (at: number): Record<string, string> => {
    const [err, value] = replies?.[at] ?? [new Error('fleet counts: MULTI was discarded'), undefined];
    if (err) throw err;
    return value as Record<string, string>;
  };
  const written = hashOf(0);
  const rejected = hashOf(1);
  const gateways: Record<string, FleetCount> = {};
  let totalWritten = 0;
  let totalRejected = 0;
  for (const gatewayId of new Set([...Object.keys(written), ...Object.keys(rejected)])) {
    const count = { written: Number(written[gatewayId] ?? 0), rejected: Number(rejected[gatewayId] ?? 0) };
    gateways[gatewayId] = count;
    totalWritten += count.written;
    totalRejected += count.rejected;
  }
  return { gateways, total: { written: totalWritten, rejected: totalRejected } };
}
