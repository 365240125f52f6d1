// Write intents shared through Redis (intents.ts has the why). The holder of a gateway's lease
// notes each chunk in the gateway's intents hash before the chunk's first write, and deletes the
// note once Redis answered the chunk's records (afterRecords), so the note never goes first.
// An ingestor that takes a gateway over (a new tenure, cluster-state.ts) loads the notes that
// other members left: those readings may be in the database already, and are looked up there
// before they are written again.
//
// Keys: `<prefix>intents:<gatewayId>`, a hash of `<memberId>:<n>` -> JSON {at, runs: [[first, last]]}.
// The hash expires maxAgeMs after its last note, and a note older than maxAgeMs is dropped on load:
// a gateway that resends a reading interrupted that long ago gets it written again.
import type { Logger } from '@ferry/runtime';
import { Suspects } from '../intents.js';
import type { Intent, IntentLog, IntentRun, OrphanRun } from '../intents.js';
import type { RedisClient } from './redis.js';

export interface SharedIntentLog extends IntentLog {
  /**
   * Notes a batch of a gateway this member took, before it is judged (in its prefetch): the
   * gateway's note then covers every seq this member has in flight, written or not yet begun, so
   * an ingestor that takes the gateway from it while it is alive (a stall) waits for them.
   */
  noteBatch(gatewayId: string, seqs: readonly number[]): Promise<void>;
  /** This member has nothing of the gateway in flight any more, its records in Redis: the batch note goes. */
  endBatches(gatewayId: string): void;
  /** Loads the notes other members left for a gateway (this ingestor just took it over). */
  load(gatewayId: string): Promise<void>;
  /** Forgets a gateway's suspects (its lease went to another ingestor, which loads them itself). */
  evict(gatewayId: string): void;
}

export interface SharedIntentLogOptions {
  readonly redis: RedisClient;
  readonly keyPrefix: string;
  readonly memberId: string;
  readonly clock: { now(): number };
  readonly logger: Logger;
  /** Default 7 days. */
  readonly maxAgeMs?: number | undefined;
  /**
   * Resolves once every dedupe record made so far is in Redis (SharedDedupeStore.flush): a note
   * is deleted only after its chunk's records landed, even when Redis refused them once (they are
   * sent again) or had lost its scripts. Rejects when Redis refused them: the note then stays.
   */
  readonly afterRecords?: (() => Promise<void>) | undefined;
  /** Whether a member is alive (membership): a note of a live member may still be written. */
  readonly isLive?: ((memberId: string) => boolean) | undefined;
  /** At most this long a takeover waits for a live member's note to end before asking the database anyway. Default 30 s. */
  readonly maxWaitMs?: number | undefined;
  /**
   * How long after a note was made its write has surely landed or failed. The member that made it
   * may be alive (its lease lapsed while Redis was away, or it stalled), so this is counted from
   * the note, not from the takeover. Default 2,000 ms.
   */
  readonly settleMs?: number | undefined;
}

interface Note {
  readonly at: number;
  readonly runs: readonly (readonly [number, number])[];
}

interface Ref {
  readonly field: string;
  readonly sources: readonly string[];
}

/** Pure: a stored note, or undefined when it is not one this release wrote. */
export function parseNote(text: string): Note | undefined {
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null) return undefined;
    const { at, runs } = value as { at?: unknown; runs?: unknown };
    if (typeof at !== 'number' || !Array.isArray(runs)) return undefined;
    const pairs: [number, number][] = [];
    for (const r of runs) {
      if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || !Number.isSafeInteger(r[1])) return undefined;
      pairs.push([r[0] as number, r[1] as number]);
    }
    return { at, runs: pairs };
  } catch {
    return undefined;
  }
}

export function openSharedIntentLog(options: SharedIntentLogOptions): SharedIntentLog {
  const { redis, keyPrefix, memberId, clock, logger } = options;
  const maxAgeMs = options.maxAgeMs ?? 7 * 24 * 3_600_000;
  const settleMs = options.settleMs ?? 2_000;
  const keyOf = (gatewayId: string): string => `${keyPrefix}intents:${gatewayId}`;
  const suspects = new Suspects();
  /** This process's notes not ended yet: never suspects of its own. */
  const own = new Set<string>();
  /** Per loaded foreign note (`gateway\0field`): its runs not settled yet. */
  const foreignLeft = new Map<string, number>();
  let next = 0;
  /** Per gateway, the runs of this member's batches in flight (the batch note's content). */
  const inFlight = new Map<string, [number, number][]>();
  const batchField = `${memberId}:batches`;
  own.add(batchField);

  const forget = (gatewayId: string, field: string): void => {
    redis.hdel(keyOf(gatewayId), field).catch((err: unknown) => logger.warn({ err, gatewayId }, 'could not delete a settled write intent; it expires by itself'));
  };

  return {
    suspects,
    async begin(runs: readonly IntentRun[]): Promise<Intent> {
      const field = `${memberId}:${next++}`;
      const bySource = new Map<string, [number, number][]>();
      for (const r of runs) {
        let list = bySource.get(r.source);
        if (!list) bySource.set(r.source, (list = []));
        list.push([r.first, r.last]);
      }
      const at = clock.now();
      const multi = redis.multi();
      for (const [source, list] of bySource) {
        multi.hset(keyOf(source), field, JSON.stringify({ at, runs: list } satisfies Note));
        multi.pexpire(keyOf(source), maxAgeMs);
      }
      own.add(field);
      const answers = await multi.exec();
      const failed = answers?.find(([err]) => err !== null)?.[0];
      if (!answers || failed) {
        own.delete(field);
        throw failed ?? new Error('redis discarded the write intent');
      }
      return { runs, ref: { field, sources: [...bySource.keys()] } satisfies Ref };
    },
    end(intent) {
      const ref = intent.ref as Ref;
      own.delete(ref.field);
      const drop = (): void => {
        for (const source of ref.sources) forget(source, ref.field);
      };
      // Deleted once the chunk's records are in Redis: a note gone before them would leave a
      // crash in between with neither.
      if (!options.afterRecords) drop();
      else options.afterRecords().then(drop, (err: unknown) => logger.warn({ err }, 'records refused by redis; the write intent stays and the next holder looks in the database'));
    },
    settled(source, seq) {
      for (const id of suspects.settle(source, seq)) {
        const cut = id.lastIndexOf('#');
        const key = id.slice(0, cut);
        const left = (foreignLeft.get(key) ?? 1) - 1;
        if (left > 0) {
          foreignLeft.set(key, left);
          continue;
        }
        foreignLeft.delete(key);
        const field = key.slice(key.indexOf('\u0000') + 1);
        forget(source, field);
      }
    },
    async load(gatewayId) {
      const notes = await redis.hgetall(keyOf(gatewayId));
      const now = clock.now();
      const runs: OrphanRun[] = [];
      for (const [field, text] of Object.entries(notes)) {
        if (own.has(field)) continue;
        const note = parseNote(text);
        if (!note || now - note.at > maxAgeMs) {
          forget(gatewayId, field);
          continue;
        }
        const key = `${gatewayId}\u0000${field}`;
        if (foreignLeft.has(key)) continue;
        foreignLeft.set(key, note.runs.length);
        note.runs.forEach(([first, last], k) => runs.push({ id: `${key}#${k}`, source: gatewayId, first, last, askAfter: note.at + settleMs }));
      }
      if (runs.length > 0) {
        logger.warn({ gatewayId, runs: runs.length }, 'took over a gateway with writes in flight elsewhere: those readings are looked up in the database before they are written again');
        suspects.add(runs);
      }
    },
    async noteBatch(gatewayId, seqs) {
      if (seqs.length === 0) return;
      const runs = inFlight.get(gatewayId) ?? [];
      const sorted = [...seqs].sort((a, b) => a - b);
      for (const seq of sorted) {
        const last = runs[runs.length - 1];
        if (last && seq >= last[0] && seq <= last[1] + 1) last[1] = Math.max(last[1], seq);
        else if (!runs.some(([first, end]) => seq >= first && seq <= end)) runs.push([seq, seq]);
      }
      inFlight.set(gatewayId, runs);
      const multi = redis.multi();
      multi.hset(keyOf(gatewayId), batchField, JSON.stringify({ at: clock.now(), runs } satisfies Note));
      multi.pexpire(keyOf(gatewayId), maxAgeMs);
      const answers = await multi.exec();
      const failed = answers?.find(([err]) => err !== null)?.[0];
      if (!answers || failed) throw failed ?? new Error('redis discarded the batch note');
    },
    endBatches(gatewayId) {
      if (!inFlight.delete(gatewayId)) return;
      forget(gatewayId, batchField);
    },
    async waitForWriters(keys) {
      // The notes covering these keys, each with the member that made it.
      const notes = new Map<string, { gatewayId: string; field: string }>();
      for (const { source, seq } of keys) {
        const id = suspects.runOf(source, seq);
        if (id === undefined) continue;
        const key = id.slice(0, id.lastIndexOf('#'));
        notes.set(key, { gatewayId: source, field: key.slice(key.indexOf('\u0000') + 1) });
      }
      const isLive = options.isLive;
      if (!isLive || notes.size === 0) return;
      const deadline = clock.now() + (options.maxWaitMs ?? 30_000);
      for (const { gatewayId, field } of notes.values()) {
        const member = field.slice(0, field.lastIndexOf(':'));
        // A member that lost the gateway while alive (a stall, Redis away) may still have this
        // chunk on its way to the database: wait until it ended the note or left.
        while (isLive(member) && clock.now() < deadline) {
          if ((await redis.hexists(keyOf(gatewayId), field)) === 0) break;
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
        if (isLive(member) && clock.now() >= deadline) {
          logger.warn({ gatewayId, member }, 'a live ingestor kept a write intent of a gateway taken over from it; asking the database anyway');
        }
      }
    },
    evict(gatewayId) {
      for (const id of suspects.drop(gatewayId)) foreignLeft.delete(id.slice(0, id.lastIndexOf('#')));
    },
  };
}
