// The drop ledger: every reading the outbox discards is counted per device and reason, and named
// in a gap record (device, first and last seq / time / device seq, count, reason) so the cloud
// knows which intervals are missing. Both live in the outbox file, written in the transaction
// that drops the rows, so they survive restarts exactly as the rows would have.
import type Database from 'better-sqlite3';
import type { GapRecord } from '@ferry/protocol';

export type { GapRecord };

export type DropReason = 'outbox_full' | 'outbox_bytes' | 'outbox_age' | 'corrupt';

/** One discarded row, as the outbox knew it. */
export interface DroppedRow {
  readonly seq: number;
  readonly deviceId: string;
  readonly ts: number;
  readonly deviceSeq: number | null;
  /** Readings the row stands for: a compaction summary its count; 1 when absent. */
  readonly readings?: number;
}

export interface DropLedger {
  /** Counts and names dropped rows; call inside the transaction that deletes them. */
  record(reason: DropReason, rows: readonly DroppedRow[], now: number): void;
  /** A loss known only in total, or not at all (count null). */
  recordLump(reason: DropReason, deviceId: string | null, count: number | null, now: number, range?: { firstSeq: number; lastSeq: number; firstTs: number; lastTs: number }): void;
  /** Adds counts carried over from another file, without gap records. */
  carryOver(counts: readonly { reason: string; deviceId: string; count: number }[]): void;
  /** A reading of this device reached the database: later drops start a new gap. */
  delivered(deviceId: string, seq: number): void;
  /** True while some device has a gap still growing: only then does a delivery need its device and seq. */
  hasOpenGaps(): boolean;
  /** Totals by reason, since the outbox was created. */
  totals(): Record<string, number>;
  byDevice(): { reason: string; deviceId: string; count: number }[];
  /** Most recently written first. */
  gaps(limit: number): GapRecord[];
}

/** Gap records kept in the file; older ones go (their readings stay counted in the totals). */
export const MAX_GAP_RECORDS = 10_000;

interface GapRow {
  id: number;
  device_id: string | null;
  reason: string;
  count: number | null;
  first_seq: number | null;
  last_seq: number | null;
  first_ts: number | null;
  last_ts: number | null;
  first_device_seq: number | null;
  last_device_seq: number | null;
  updated_at: number;
}

/** A gap still growing: the last one written for a device and reason in this run. */
interface OpenGap {
  id: number;
  lastSeq: number;
}

export function createDropLedger(db: Database.Database): DropLedger {
  const countDrop = db.prepare<[string, string, number]>(
    'INSERT INTO outbox_dropped (reason, device_id, count) VALUES (?, ?, ?) ON CONFLICT (reason, device_id) DO UPDATE SET count = count + excluded.count',
  );
  const readDrops = db.prepare<[], { reason: string; device_id: string; count: number }>(
    'SELECT reason, device_id, count FROM outbox_dropped ORDER BY reason, device_id',
  );
  const insertGap = db.prepare<[string | null, string, number | null, number | null, number | null, number | null, number | null, number | null, number | null, number]>(
    `INSERT INTO outbox_gaps (device_id, reason, count, first_seq, last_seq, first_ts, last_ts, first_device_seq, last_device_seq, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const growGap = db.prepare<[number, number, number, number, number | null, number | null, number, number]>(
    `UPDATE outbox_gaps SET count = count + ?, last_seq = ?, first_ts = min(first_ts, ?), last_ts = max(last_ts, ?),
       first_device_seq = coalesce(first_device_seq, ?), last_device_seq = coalesce(?, last_device_seq), updated_at = ? WHERE id = ?`,
  );
  const trimGaps = db.prepare<[number]>('DELETE FROM outbox_gaps WHERE id <= ?');
  const readGaps = db.prepare<[number], GapRow>('SELECT * FROM outbox_gaps ORDER BY updated_at DESC, id DESC LIMIT ?');

  const totals: Record<string, number> = {};
  for (const row of readDrops.all()) totals[row.reason] = (totals[row.reason] ?? 0) + row.count;
  /** deviceId -> reason -> the gap that further drops extend. Only this run's gaps grow. */
  const open = new Map<string, Map<string, OpenGap>>();

  function count(reason: string, deviceId: string, n: number): void {
    countDrop.run(reason, deviceId, n);
    totals[reason] = (totals[reason] ?? 0) + n;
  }

  function insert(values: Parameters<typeof insertGap.run>): number {
    const id = Number(insertGap.run(...values).lastInsertRowid);
    if (id > MAX_GAP_RECORDS) trimGaps.run(id - MAX_GAP_RECORDS);
    return id;
  }

  return {
    record(reason, rows, now) {
      const byDevice = new Map<string, DroppedRow[]>();
      for (const row of rows) {
        const list = byDevice.get(row.deviceId);
        if (list) list.push(row);
        else byDevice.set(row.deviceId, [row]);
      }
      for (const [deviceId, list] of byDevice) {
        list.sort((a, b) => a.seq - b.seq);
        const first = list[0];
        const last = list[list.length - 1];
        if (!first || !last) continue;
        // A compaction summary dropped loses every reading it stood for.
        const lost = list.reduce((n, row) => n + (row.readings ?? 1), 0);
        count(reason, deviceId, lost);
        let firstTs = first.ts;
        let lastTs = first.ts;
        for (const row of list) {
          if (row.ts < firstTs) firstTs = row.ts;
          if (row.ts > lastTs) lastTs = row.ts;
        }
        const firstDeviceSeq = list.find((r) => r.deviceSeq !== null)?.deviceSeq ?? null;
        const lastDeviceSeq = [...list].reverse().find((r) => r.deviceSeq !== null)?.deviceSeq ?? null;
        const reasons = open.get(deviceId) ?? new Map<string, OpenGap>();
        open.set(deviceId, reasons);
        const gap = reasons.get(reason);
        // Consecutive drops of one device and reason are one gap, as long as nothing of that
        // device reached the database in between (delivered() closes the gap).
        if (gap && gap.lastSeq < first.seq) {
          growGap.run(lost, last.seq, firstTs, lastTs, firstDeviceSeq, lastDeviceSeq, now, gap.id);
          gap.lastSeq = last.seq;
        } else {
          const id = insert([deviceId, reason, lost, first.seq, last.seq, firstTs, lastTs, firstDeviceSeq, lastDeviceSeq, now]);
          reasons.set(reason, { id, lastSeq: last.seq });
        }
      }
    },
    recordLump(reason, deviceId, n, now, range) {
      if (n !== null && n > 0) count(reason, deviceId ?? '', n);
      insert([deviceId, reason, n, range?.firstSeq ?? null, range?.lastSeq ?? null, range?.firstTs ?? null, range?.lastTs ?? null, null, null, now]);
    },
    carryOver(counts) {
      for (const c of counts) if (c.count > 0) count(c.reason, c.deviceId, c.count);
    },
    delivered(deviceId, seq) {
      const reasons = open.get(deviceId);
      if (!reasons) return;
      for (const [reason, gap] of reasons) if (gap.lastSeq < seq) reasons.delete(reason);
      if (reasons.size === 0) open.delete(deviceId);
    },
    hasOpenGaps() {
      return open.size > 0;
    },
    totals() {
      return { ...totals };
    },
    byDevice() {
      return readDrops.all().map((r) => ({ reason: r.reason, deviceId: r.device_id, count: r.count }));
    },
    gaps(limit) {
      return readGaps.all(limit).map((r) => ({
        id: r.id,
        deviceId: r.device_id,
        reason: r.reason,
        count: r.count,
        firstSeq: r.first_seq,
        lastSeq: r.last_seq,
        firstTs: r.first_ts,
        lastTs: r.last_ts,
        firstDeviceSeq: r.first_device_seq,
        lastDeviceSeq: r.last_device_seq,
        updatedAt: r.updated_at,
      }));
    },
  };
}

/** What compaction did for one device, since the outbox file was created. */
export interface CompactedSpan {
  readonly deviceId: string;
  /** Readings replaced by summaries. */
  readonly readings: number;
  /** Summaries written in their place. */
  readonly summaries: number;
  /** Earliest and latest own time of the readings replaced. */
  readonly firstTs: number;
  readonly lastTs: number;
  readonly updatedAt: number;
}

/**
 * The compaction ledger: readings summarised are not lost, but the cloud must know that a span
 * holds summaries, not raw readings. Written in the transaction that compacts.
 */
export interface CompactionLedger {
  record(deviceId: string, readings: number, summaries: number, firstTs: number, lastTs: number, now: number): void;
  totals(): { readings: number; summaries: number };
  /** Most recently updated first. */
  byDevice(limit: number): CompactedSpan[];
}

export function createCompactionLedger(db: Database.Database): CompactionLedger {
  const upsert = db.prepare<[string, number, number, number, number, number]>(
    `INSERT INTO outbox_compacted (device_id, readings, summaries, first_ts, last_ts, updated_at) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (device_id) DO UPDATE SET readings = readings + excluded.readings, summaries = summaries + excluded.summaries,
       first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts), updated_at = excluded.updated_at`,
  );
  const read = db.prepare<[number], { device_id: string; readings: number; summaries: number; first_ts: number; last_ts: number; updated_at: number }>(
    'SELECT * FROM outbox_compacted ORDER BY updated_at DESC, device_id LIMIT ?',
  );
  const sums = db.prepare<[], { readings: number | null; summaries: number | null }>('SELECT sum(readings) AS readings, sum(summaries) AS summaries FROM outbox_compacted');
  const initial = sums.get();
  const totals = { readings: initial?.readings ?? 0, summaries: initial?.summaries ?? 0 };
  return {
    record(deviceId, readings, summaries, firstTs, lastTs, now) {
      upsert.run(deviceId, readings, summaries, firstTs, lastTs, now);
      totals.readings += readings;
      totals.summaries += summaries;
    },
    totals() {
      return { ...totals };
    },
    byDevice(limit) {
      return read.all(limit).map((r) => ({
        deviceId: r.device_id,
        readings: r.readings,
        summaries: r.summaries,
        firstTs: r.first_ts,
        lastTs: r.last_ts,
        updatedAt: r.updated_at,
      }));
    },
  };
}
