// whenFull: 'compact' on a real SQLite outbox: the oldest rows never handed to the sender become
// one summary per series and interval in the append's transaction; rows in flight or sent before
// (this run or an earlier one) stay raw; when nothing more folds, the oldest go as with drop-oldest,
// a dropped summary counting every reading it stood for.
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, parseConfig } from '@ferry/runtime';
import { isFerryError } from '@ferry/protocol';
import type { DeviceReading, Reading } from '@ferry/protocol';
import { gatewayConfigSchema } from '../src/config.js';
import { COMPACTED_COUNT_METRIC, COMPACTED_FLAG } from '../src/compact.js';
import { createSqliteOutbox } from '../src/outbox.js';
import type { Outbox, SqliteOutboxOptions } from '../src/outbox.js';
import { tempDir } from './harness.js';

const MINUTE = 60_000;
const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);

function reading(n: number, ts: number, deviceId = 'dev-a'): DeviceReading {
  return { deviceId, kind: 'telemetry', ts, tsSource: 'device', receivedAt: ts + 3, deviceSeq: n, metrics: { n, temp: 20 + (n % 7), state: n % 2 === 0 ? 'on' : 'off' } };
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()?.();
});

function place(): { open: (options?: Partial<SqliteOutboxOptions>) => Outbox; rows: () => Reading[] } {
  const dir = tempDir();
  const path = join(dir.path, 'outbox.db');
  const clock = new ManualClock(T0 + 10 * MINUTE);
  const opened: Outbox[] = [];
  cleanups.push(() => {
    for (const o of opened) o.close();
    dir.remove();
  });
  return {
    open: (options = {}) => {
      const outbox = createSqliteOutbox({ path, clock, whenFull: 'compact', compactIntervalMs: MINUTE, ...options });
      opened.push(outbox);
      return outbox;
    },
    // Read straight from the file: peek would mark the rows as handed to the sender.
    rows: () => {
      const db = new Database(path, { readonly: true });
      try {
        return db
          .prepare<[], { seq: number; payload: string }>('SELECT seq, payload FROM outbox ORDER BY seq')
          .all()
          .map((r) => ({ seq: r.seq, ...(JSON.parse(r.payload) as DeviceReading) }));
      } finally {
        db.close();
      }
    },
  };
}

function represented(rows: readonly Reading[]): number {
  return rows.reduce((n, r) => n + (r.flags?.includes(COMPACTED_FLAG) ? (r.metrics[COMPACTED_COUNT_METRIC] as number) : 1), 0);
}

describe('outbox compaction', () => {
  it('replaces the oldest unsent rows by one summary per device and interval, sparing rows in flight', () => {
    const { open, rows } = place();
    const outbox = open({ maxRows: 100 });
    // Two devices, one reading every 3 s of device time each: 20 per device and minute.
    const originals: DeviceReading[] = [];
    for (let i = 0; i < 50; i++) for (const d of ['dev-a', 'dev-b']) originals.push(reading(i, T0 + i * 3000, d));
    const seqs = [...outbox.append(originals).seqs];
    expect(outbox.stats().depth).toBe(100);

    // The sender has the first 6 rows in flight.
    const inFlight = outbox.peek({ limit: 6, maxBytes: 1 << 20, exclude: new Set() });
    const inFlightSeqs = new Set(inFlight.map((e) => e.seq));
    const before = new Map(rows().map((r) => [r.seq, r]));

    const extra = reading(50, T0 + 50 * 3000);
    const result = outbox.append([extra], { inFlight: inFlightSeqs });
    originals.push(extra);
    seqs.push(...result.seqs);
    expect(result.droppedSeqs).toEqual([]);
    expect(result.compacted).toBeDefined();
    const after = rows();
    const stats = outbox.stats();
    expect(stats.depth).toBe(after.length);
    expect(stats.depth).toBeLessThanOrEqual(90);
    expect(stats.dropped).toEqual({});

    // In-flight rows are untouched, byte for byte.
    for (const seq of inFlightSeqs) expect(after.find((r) => r.seq === seq)).toEqual(before.get(seq));
    // Nothing lost, nothing counted twice: raw rows plus summary counts are all 101 readings.
    expect(represented(after)).toBe(101);
    const summaries = after.filter((r) => r.flags?.includes(COMPACTED_FLAG));
    expect(summaries.length).toBe(result.compacted?.summaries);
    expect(stats.compacted).toEqual({ readings: result.compacted?.readings, summaries: result.compacted?.summaries });
    expect(summaries.reduce((n, s) => n + (s.metrics[COMPACTED_COUNT_METRIC] as number), 0)).toBe(result.compacted?.readings);

    // Each summary: the interval start as ts, and the arithmetic of the readings it replaced
    // (those of its device and minute, less the ones in flight).
    for (const s of summaries) {
      expect(s.ts % MINUTE).toBe(0);
      expect(s.tsSource).toBe('device');
      expect(s.deviceSeq).toBeUndefined();
      const replaced = originals
        .map((r, i) => ({ r, seq: seqs[i]! }))
        .filter(({ r, seq }) => r.deviceId === s.deviceId && r.ts >= s.ts && r.ts < s.ts + MINUTE && !inFlightSeqs.has(seq) && !after.some((a) => a.seq === seq && a !== s));
      expect(s.metrics[COMPACTED_COUNT_METRIC]).toBe(replaced.length);
      // The summary takes the seq of the oldest reading it replaced.
      expect(s.seq).toBe(Math.min(...replaced.map((x) => x.seq)));
      const temps = replaced.map(({ r }) => r.metrics.temp as number);
      expect(s.metrics.temp_count).toBe(temps.length);
      expect(s.metrics.temp_min).toBe(Math.min(...temps));
      expect(s.metrics.temp_max).toBe(Math.max(...temps));
      expect(s.metrics.temp).toBeCloseTo(temps.reduce((a, b) => a + b, 0) / temps.length, 9);
      expect(s.metrics.state).toBe(replaced.at(-1)?.r.metrics.state);
    }
    // The oldest went first: every raw row of a device left outside the in-flight ones is newer than its summaries.
    for (const d of ['dev-a', 'dev-b']) {
      const newestSummary = Math.max(...summaries.filter((s) => s.deviceId === d).map((s) => s.ts));
      for (const r of after) if (r.deviceId === d && !r.flags && !inFlightSeqs.has(r.seq)) expect(r.ts).toBeGreaterThanOrEqual(newestSummary);
    }
    // Per device, seq order is still time order: summaries go upstream before later readings.
    for (const d of ['dev-a', 'dev-b']) {
      const mine = after.filter((r) => r.deviceId === d && !inFlightSeqs.has(r.seq));
      expect(mine.map((r) => r.ts)).toEqual([...mine.map((r) => r.ts)].sort((a, b) => a - b));
    }
  });

  it('never compacts rows handed to the sender, even after a restart', () => {
    const { open, rows } = place();
    const first = open({ maxRows: 40 });
    first.append(Array.from({ length: 40 }, (_, i) => reading(i, T0 + i * 1000)));
    // Handed out and requeued (no longer in flight): may have reached the database with its ack lost.
    const handed = first.peek({ limit: 8, maxBytes: 1 << 20, exclude: new Set() }).map((e) => e.seq);
    first.close();

    const second = open({ maxRows: 40 });
    const result = second.append([reading(40, T0 + 40 * 1000)]);
    expect(result.compacted?.readings).toBe(33);
    const after = rows();
    expect(after.slice(0, 8).map((r) => r.seq)).toEqual(handed);
    expect(after.slice(0, 8).every((r) => !r.flags)).toBe(true);
    expect(after.filter((r) => r.flags?.includes(COMPACTED_FLAG))).toHaveLength(1);
    expect(represented(after)).toBe(41);
  });

  it('takes rows kept under another policy as possibly sent, since their hand-outs were not recorded', () => {
    const { open, rows } = place();
    const first = open({ maxRows: 40, whenFull: 'drop-oldest' });
    first.append(Array.from({ length: 30 }, (_, i) => reading(i, T0 + i * 1000)));
    first.close();
    const second = open({ maxRows: 40 });
    const result = second.append(Array.from({ length: 11 }, (_, k) => reading(30 + k, T0 + (30 + k) * 1000)));
    // Only the 11 rows written under 'compact' fold; the 30 older ones stay raw.
    expect(result.compacted).toMatchObject({ readings: 11, summaries: 1 });
    expect(rows().filter((r) => !r.flags)).toHaveLength(30);
    expect(represented(rows())).toBe(41);
  });

  it('drops the oldest when nothing more folds, a dropped summary counting every reading it stood for', () => {
    const { open, rows } = place();
    const outbox = open({ maxRows: 20 });
    // Two minutes of ten readings, then one in a third minute: two summaries and a raw row.
    outbox.append(Array.from({ length: 20 }, (_, i) => reading(i, T0 + i * 6000)));
    const compacted = outbox.append([reading(20, T0 + 2 * MINUTE)]);
    expect(compacted.compacted).toMatchObject({ readings: 20, summaries: 2 });
    expect(rows().map((r) => r.metrics[COMPACTED_COUNT_METRIC] ?? 1)).toEqual([10, 10, 1]);

    // Twenty readings a minute apart: none folds, so the two summaries and the raw row go.
    const result = outbox.append(Array.from({ length: 20 }, (_, k) => reading(21 + k, T0 + (3 + k) * MINUTE)));
    expect(result.compacted).toBeUndefined();
    expect(result.droppedSeqs).toHaveLength(3);
    const stats = outbox.stats();
    expect(stats.depth).toBe(20);
    expect(stats.dropped).toEqual({ outbox_full: 21 });
    expect(represented(rows()) + 21).toBe(41);
    const gaps = outbox.gaps();
    expect(gaps.reduce((n, g) => n + (g.count ?? 0), 0)).toBe(21);
    expect(outbox.compactedByDevice()).toMatchObject([{ deviceId: 'dev-a', readings: 20, summaries: 2, firstTs: T0, lastTs: T0 + 19 * 6000 }]);
  });
});

describe('compaction config', () => {
  const base = { gatewayId: 'gw', dataDir: '/tmp/x', uplink: { url: 'mqtt://127.0.0.1:1' } };

  it('takes an interval as a duration, one minute by default', () => {
    expect(parseConfig(gatewayConfigSchema, { ...base, outbox: { whenFull: 'compact' } }).outbox.compaction.interval).toBe('1m');
    expect(parseConfig(gatewayConfigSchema, { ...base, outbox: { whenFull: 'compact', compaction: { interval: '15m' } } }).outbox.whenFull).toBe('compact');
  });

  it('refuses a bad interval, and compaction with processing before the uplink, naming the field', () => {
    const cases: [unknown, string][] = [
      [{ ...base, outbox: { whenFull: 'compact', compaction: { interval: 'soon' } } }, 'outbox.compaction.interval'],
      [{ ...base, outbox: { whenFull: 'compact', compaction: { interval: '0m' } } }, 'outbox.compaction.interval'],
      [{ ...base, outbox: { whenFull: 'compact', compaction: { every: '1m' } } }, 'outbox.compaction'],
      [
        {
          ...base,
          outbox: { whenFull: 'compact' },
          processing: { before: 'uplink', pipelines: [{ match: { metric: 'level' }, steps: [{ op: 'deadband', abs: 1 }] }] },
        },
        'outbox.whenFull',
      ],
    ];
    for (const [config, field] of cases) {
      let caught: unknown;
      try {
        parseConfig(gatewayConfigSchema, config, 'gateway config');
      } catch (err) {
        caught = err;
      }
      expect(isFerryError(caught, 'FERRY_ERR_CONFIG_INVALID'), `config for ${field}`).toBe(true);
      expect((caught as Error).message).toContain(field);
    }
  });
});
