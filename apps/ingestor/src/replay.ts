// An operator's replay of a dead letter, after a fix: a gateway reading validated and deduplicated
// again and written; a direct device's message decoded again under the current patterns. It joins
// the data path (pipeline.ts) at the writer, and answers once the database confirmed, or 'pending'.
import type { Limits, Reading, Rejection } from '@ferry/protocol';
import type { Clock, Logger } from '@ferry/runtime';
import type { DeadLetter, DeadLetterStore } from '@ferry/deadletter';
import type { Point } from '@ferry/sinks';
import type { ReadingOutcome } from './ack.js';
import { contentHash } from './content-hash.js';
import { judge } from './dedupe.js';
import type { DedupeStore } from './dedupe.js';
import { deviceIdentity } from './device-dedupe.js';
import type { DirectEntry } from './direct.js';
import type { DirectOptions, DirectUnit, Party, PendingWrite, ReplayResult } from './pipeline.js';
import { validateReading } from './validate.js';

/** What a replay needs of the pipeline it joins. */
export interface ReplayContext {
  readonly deadLetters: DeadLetterStore;
  readonly dedupe: DedupeStore;
  readonly limits: Limits;
  readonly direct: DirectOptions | undefined;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The reading of this gateway and seq being written now, if any. */
  writing(gatewayId: string, seq: number): PendingWrite | undefined;
  /** A direct message decoded, skew-checked and deduplicated as when it arrived (refusals not filed again). */
  planDirect(entry: DirectEntry, direct: DirectOptions, partyFor: () => Party): { units: DirectUnit[]; dropped: readonly Rejection[] };
  build(reading: Reading, gatewayTag: string): { point: Point | null; rolled: Reading | undefined };
  /** Registers the readings as being written and hands them to the writer. */
  write(items: PendingWrite[]): void;
}

/** Replays dead letter `id`; waits up to `waitMs` for the database. */
export function createReplay(ctx: ReplayContext): (id: number, waitMs: number) => Promise<ReplayResult> {
  return async (id: number, waitMs: number): Promise<ReplayResult> => {
  const letter = ctx.deadLetters.get(id);
  if (!letter) return { outcome: 'not-found', id };
  const gatewayId = letter.source.gatewayId;
  // A direct device's message: no gateway, its topic kept.
  if (gatewayId === undefined && letter.source.topic !== undefined) return replayDirect(ctx, letter, letter.source.topic, waitMs);
  if (gatewayId === undefined) return { outcome: 'unreplayable', id, reason: 'the dead letter names no gateway' };
  let raw: unknown;
  try {
    raw = JSON.parse(letter.payload.toString('utf8'));
  } catch {
    return { outcome: 'unreplayable', id, reason: 'the payload is not JSON' };
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || 'compression' in raw) {
    return { outcome: 'unreplayable', id, reason: 'the payload is not a single reading (a whole batch envelope cannot be replayed)' };
  }
  const validated = validateReading(raw, { topicGatewayId: gatewayId, envelopeGatewayId: gatewayId, limits: ctx.limits, now: ctx.clock.now() });
  if (!validated.ok) return { outcome: 'rejected', id, code: validated.rejection.code, reason: validated.rejection.reason };
  return replayReading(ctx, letter, gatewayId, raw, validated.reading, waitMs);
};
}

/**
 * Replays a direct device's dead letter: its message decoded again under the current patterns
 * (a config fix), then skew, device dedupe and write, as when it arrived. All or nothing: any
 * value or reading still refused refuses the replay, and nothing is written.
 */
function replayDirect(ctx: ReplayContext, letter: DeadLetter, topic: string, waitMs: number): Promise<ReplayResult> {
  const id = letter.id;
  const direct = ctx.direct;
  if (!direct) return Promise.resolve({ outcome: 'unreplayable', id, reason: 'direct devices are not configured on this ingestor' });
  const outcomes: Promise<ReadingOutcome>[] = [];
  const partyFor = (): Party => {
    let settle!: (outcome: ReadingOutcome) => void;
    outcomes.push(new Promise<ReadingOutcome>((resolve) => (settle = resolve)));
    return { settle: (_seq, o) => settle(o) };
  };
  const entry: DirectEntry = { id: 0, topic, payload: letter.payload, receivedAt: letter.at };
  const { units, dropped } = ctx.planDirect(entry, direct, partyFor);
  const refusal = dropped[0] ?? units.flatMap((u) => (u.kind === 'refused' ? [u.rejection] : []))[0];
  if (refusal) return Promise.resolve({ outcome: 'rejected', id, code: refusal.code, reason: refusal.reason });
  if (units.length === 0) return Promise.resolve({ outcome: 'unreplayable', id, reason: 'under the current patterns the message holds no reading' });
  const toWrite: PendingWrite[] = [];
  for (const unit of units) {
    if (unit.kind === 'duplicate') unit.party.settle(null, { kind: 'duplicate' });
    else if (unit.kind === 'copy') unit.of.copies.push(unit.party);
    else if (unit.kind === 'write') toWrite.push(unit.item);
  }
  ctx.write(toWrite);
  const all = Promise.all(outcomes).then((settledOutcomes): ReadingOutcome => {
    const rejected = settledOutcomes.find((o) => o.kind === 'rejected');
    if (rejected) return rejected;
    return settledOutcomes.some((o) => o.kind === 'written') ? { kind: 'written' } : { kind: 'duplicate' };
  });
  return replayOutcome(ctx, id, all, waitMs);
}

function replayReading(ctx: ReplayContext, letter: DeadLetter, gatewayId: string, raw: unknown, reading: Reading, waitMs: number): Promise<ReplayResult> {
  const id = letter.id;
  const hash = contentHash(raw);
  let settle!: (outcome: ReadingOutcome) => void;
  const outcome = new Promise<ReadingOutcome>((resolve) => (settle = resolve));
  const party: Party = { settle: (_seq, o) => settle(o) };
  const writing = ctx.writing(gatewayId, reading.seq);
  if (writing) {
    if (writing.hash !== hash) {
      return Promise.resolve({ outcome: 'rejected', id, code: 'FERRY_ERR_DUPLICATE_CONFLICT', reason: 'seq is being written with different content' });
    }
    writing.copies.push(party);
  } else {
    const verdict = judge(ctx.dedupe.lookup(gatewayId, reading.seq), hash, raw);
    if (verdict.kind === 'conflict') return Promise.resolve({ outcome: 'rejected', id, code: 'FERRY_ERR_DUPLICATE_CONFLICT', reason: verdict.reason });
    if (verdict.kind === 'duplicate') settle({ kind: 'duplicate' });
    else {
      // New, or refused before: a replay is the operator asking to try again after a fix.
      const item: PendingWrite = {
        origin: 'gateway',
        gatewayId,
        seq: reading.seq,
        device: deviceIdentity(reading, 'gateway', gatewayId),
        hash,
        ...ctx.build(reading, gatewayId),
        deviceId: reading.deviceId,
        raw,
        owner: party,
        deadLetterOnRefusal: false,
        copies: [],
      };
      ctx.write([item]);
    }
  }
  return replayOutcome(ctx, id, outcome, waitMs);
}

/** Marks the dead letter replayed once its readings landed; answers 'pending' when the sink takes longer than `waitMs`. */
function replayOutcome(ctx: ReplayContext, id: number, outcome: Promise<ReadingOutcome>, waitMs: number): Promise<ReplayResult> {
  const landed = outcome.then((o): ReplayResult => {
    if (o.kind === 'rejected') return { outcome: 'rejected', id, code: o.code, reason: o.reason };
    try {
      ctx.deadLetters.markReplayed([id], ctx.clock.now());
    } catch (err) {
      ctx.logger.error({ err, id }, 'replayed dead letter could not be marked');
    }
    return { outcome: o.kind === 'written' ? 'written' : 'duplicate', id };
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<ReplayResult>((resolve) => {
    timer = setTimeout(() => resolve({ outcome: 'pending', id }), waitMs);
  });
  return Promise.race([landed, timeout]).finally(() => clearTimeout(timer));
}
