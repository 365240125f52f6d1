// Finding the points a database refuses in a batch by splitting it in halves, so one bad point
// costs only itself: the rest of the batch is written.
//
// Why this never counts a point twice nor misses one, whatever the database does on a refusal:
// - The halves partition the batch, so every point ends in exactly one leaf of the search:
//   a send that succeeded (counted in `written` once) or a single-point send that was
//   refused (reported in `rejected` once).
// - A database may write part of a refused batch: InfluxDB 1.x answers 400 `partial write: ...`
//   after writing the valid points, InfluxDB 2 answers 422 the same way. Those points are sent
//   again in a half; that second write is the same series, timestamp and field values, which
//   the database keeps as one point (a repeated write overwrites itself). Only the successful
//   leaf counts them.
// - Halves are sent in batch order, so where two points compete (e.g. a field's first type
//   in a shard) the earlier one wins, as in the original batch.
// - If any send finds the database unavailable, the error propagates and nothing of the call
//   counts as written: the caller retries the whole batch, which is safe for the same reason.
// Cost: a batch of n points with k refused ones takes at most about 2k·log2(n) + 1 requests.
import type { PointRejection, SinkWriteResult } from './sink.js';
import type { EncodedBody, EncodedLine } from './line-protocol.js';
import { linesOf } from './line-protocol.js';
import type { WriteAttempt } from './write-answer.js';

/**
 * Sends one request body (lines joined by '\n', ready to go: the sink does not split or copy
 * it again); throws FERRY_ERR_SINK_UNAVAILABLE when the database cannot confirm.
 */
export type SendBody = (body: string) => Promise<WriteAttempt>;

/** The request body of some encoded lines. */
function bodyOf(lines: readonly EncodedLine[]): string {
  return lines.map((l) => l.line).join('\n');
}

export interface BisectHooks {
  /** Called for each refused multi-point batch before it is split. */
  readonly onSplit?: (size: number, reason: string) => void;
}

/** A search in progress: how to send, and what was written and refused so far. */
interface Search {
  readonly send: SendBody;
  readonly hooks: BisectHooks;
  written: number;
  readonly rejected: PointRejection[];
}

/**
 * Sends the encoded batch as it is, one request; only when the database refuses it are its lines
 * taken apart and searched by halves, the first half sent next.
 */
export async function writeBody(encoded: EncodedBody, send: SendBody, hooks: BisectHooks = {}): Promise<SinkWriteResult> {
  const count = encoded.indices.length;
  if (count === 0) return { written: 0, rejected: [] };
  const attempt = await send(encoded.body);
  if (attempt.kind === 'written') return { written: count, rejected: [] };
  if (count === 1) return { written: 0, rejected: [{ index: encoded.indices[0]!, reason: attempt.reason }] };
  const search: Search = { send, hooks, written: 0, rejected: [] };
  await splitRefused(linesOf(encoded), attempt.reason, search);
  return { written: search.written, rejected: search.rejected };
}

export async function writeBisecting(lines: readonly EncodedLine[], send: SendBody, hooks: BisectHooks = {}): Promise<SinkWriteResult> {
  const search: Search = { send, hooks, written: 0, rejected: [] };
  await visit(lines, search);
  return { written: search.written, rejected: search.rejected };
}

/** Sends a part; a refused one is searched further (one point: refused alone). */
async function visit(part: readonly EncodedLine[], search: Search): Promise<void> {
  if (part.length === 0) return;
  const attempt = await search.send(bodyOf(part));
  if (attempt.kind === 'written') {
    search.written += part.length;
    return;
  }
  const [only] = part;
  if (part.length === 1 && only) {
    search.rejected.push({ index: only.index, reason: attempt.reason });
    return;
  }
  await splitRefused(part, attempt.reason, search);
}

/** The split step: a refused part of several points is reported, then its halves are sent in order. */
async function splitRefused(part: readonly EncodedLine[], reason: string, search: Search): Promise<void> {
  search.hooks.onSplit?.(part.length, reason);
  const middle = Math.ceil(part.length / 2);
  await visit(part.slice(0, middle), search);
  await visit(part.slice(middle), search);
}
