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
import type { EncodedLine } from './line-protocol.js';
import type { WriteAttempt } from './write-answer.js';

/** Sends lines as one request; throws FERRY_ERR_SINK_UNAVAILABLE when the database cannot confirm. */
export type SendLines = (lines: readonly string[]) => Promise<WriteAttempt>;

export interface BisectHooks {
  /** Called for each refused multi-point batch before it is split. */
  readonly onSplit?: (size: number, reason: string) => void;
}

export async function writeBisecting(lines: readonly EncodedLine[], send: SendLines, hooks: BisectHooks = {}): Promise<SinkWriteResult> {
  const rejected: PointRejection[] = [];
  let written = 0;
  const visit = async (part: readonly EncodedLine[]): Promise<void> => {
    if (part.length === 0) return;
    const attempt = await send(part.map((l) => l.line));
    if (attempt.kind === 'written') {
      written += part.length;
      return;
    }
    const [only] = part;
    if (part.length === 1 && only) {
      rejected.push({ index: only.index, reason: attempt.reason });
      return;
    }
    hooks.onSplit?.(part.length, attempt.reason);
    const middle = Math.ceil(part.length / 2);
    await visit(part.slice(0, middle));
    await visit(part.slice(middle));
  };
  await visit(lines);
  return { written, rejected };
}
