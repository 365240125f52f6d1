// Scale-out (issue #20): the seams between the ingestor and the state it shares with other
// ingestors through Redis (`state.redisUrl`). Without Redis none of this is loaded and the
// single-process SQLite stores stay the default.
//
// The model, in one paragraph: every source (a gateway id) is processed by at most one ingestor
// at a time, the holder of its lease in Redis (leases.ts). The holder reads the source's dedupe
// records from Redis before it judges a batch (prefetch), records what the database confirmed in
// Redis (write-through, sent on the socket in the same tick as the confirmation), and publishes
// the gateway's ack only after those records are in Redis (flush). A dead holder's lease expires
// and another ingestor takes the source over, reading the records the dead one left.
import type { DedupeStore } from '../dedupe.js';
import type { DeviceDedupeStore, DeviceIdentity } from '../device-dedupe.js';

/** The keys of one deployment live under this prefix (`state.keyPrefix`, default `ferry:`). */
export interface RedisKeys {
  readonly prefix: string;
}

/**
 * The gateway-seq dedupe records of every gateway, in Redis. lookup() answers from a local cache
 * that prefetch() fills; record() updates the cache at once and sends the records to Redis in the
 * same tick (no auto-pipelining), so a kill -9 right after cannot lose them once written to the socket.
 */
export interface SharedDedupeStore extends DedupeStore {
  /**
   * Loads the records of these seqs of one gateway into the cache. A record this process made
   * itself (record()) is never replaced by what Redis answered (it may predate it).
   */
  prefetch(gatewayId: string, seqs: readonly number[]): Promise<void>;
  /** Resolves once every record() made so far is in Redis; rejects if Redis refused one (never for a lost connection: those wait and are sent again). */
  flush(): Promise<void>;
  /** Drops a gateway's cached records (its lease went to another ingestor). */
  evict(gatewayId: string): void;
}

/** The device identities (device-dedupe.ts), shared the same way, scoped by gateway. */
export interface SharedDeviceDedupeStore extends DeviceDedupeStore {
  prefetch(identities: readonly DeviceIdentity[]): Promise<void>;
  flush(): Promise<void>;
  /** Drops the cached identities of one scope (a gateway id). */
  evict(scope: string): void;
}
