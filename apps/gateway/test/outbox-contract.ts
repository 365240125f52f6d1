// The contract every Outbox implementation runs (like MQTT.js's abstract_store).
import { afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import type { DeviceReading } from '@ferry/protocol';
import { ManualClock } from '@ferry/runtime';
import type { Clock } from '@ferry/runtime';
import type { Outbox } from '../src/outbox.js';

export interface OutboxHarness {
  /** Opens the outbox under test; a second call in the same test reopens the same storage (a restart). */
  open(options?: { maxRows?: number; clock?: Clock }): Outbox;
  cleanup(): void;
}

export function reading(n: number, deviceId = 'dev-1', receivedAt = 1_700_000_000_000 + n): DeviceReading {
  return { deviceId, kind: 'telemetry', ts: receivedAt, tsSource: 'gateway', receivedAt, metrics: { n, label: `r${n}` } };
}

const none = new Set<number>();

export function outboxContract(name: string, makeHarness: () => OutboxHarness): void {
  describe(`Outbox contract: ${name}`, () => {
    let harness: OutboxHarness | undefined;
    const clock = new ManualClock(1_700_000_000_000);

    function open(options: { maxRows?: number } = {}): Outbox {
      harness ??= makeHarness();
      return harness.open({ clock, ...options });
    }

    afterEach(() => {
      harness?.cleanup();
      harness = undefined;
    });

    it('gives appended readings increasing seqs and returns them oldest first with the seq set', () => {
      const outbox = open();
      const { seqs } = outbox.append([reading(1), reading(2), reading(3)]);
      expect(seqs).toHaveLength(3);
      expect(seqs[1]! - seqs[0]!).toBe(1);
      expect(seqs[2]! - seqs[1]!).toBe(1);
      const peeked = outbox.peek({ limit: 10, maxBytes: 1 << 20, exclude: none });
      expect(peeked.map((e) => e.seq)).toEqual(seqs);
      expect(peeked[0]?.reading).toEqual({ seq: seqs[0], ...reading(1) });
      expect(peeked[0]?.bytes).toBe(Buffer.byteLength(JSON.stringify(reading(1))));
    });

    it('never reuses a seq, after deletes or a restart', () => {
      const first = open();
      const a = first.append([reading(1), reading(2)]).seqs;
      first.delete(a);
      const b = first.append([reading(3)]).seqs;
      expect(b[0]).toBeGreaterThan(a[1]!);
      first.delete(b);
      first.close();
      const second = open();
      const c = second.append([reading(4)]).seqs;
      expect(c[0]).toBeGreaterThan(b[0]!);
    });

    it('peeks past the seqs in flight, within the count and byte limits', () => {
      const outbox = open();
      const seqs = outbox.append([1, 2, 3, 4, 5].map((n) => reading(n))).seqs;
      const exclude = new Set([seqs[0]!, seqs[2]!]);
      expect(outbox.peek({ limit: 2, maxBytes: 1 << 20, exclude }).map((e) => e.seq)).toEqual([seqs[1], seqs[3]]);
      const size = outbox.peek({ limit: 1, maxBytes: 1 << 20, exclude: none })[0]!.bytes;
      expect(outbox.peek({ limit: 10, maxBytes: size * 2, exclude: none })).toHaveLength(2);
      expect(outbox.peek({ limit: 10, maxBytes: size * 2, exclude: none, rowOverhead: 1 })).toHaveLength(1);
      // A row larger than the byte budget still goes, alone.
      expect(outbox.peek({ limit: 10, maxBytes: 1, exclude: none })).toHaveLength(1);
      expect(outbox.peek({ limit: 10, maxBytes: 1 << 20, exclude: new Set(seqs) })).toEqual([]);
    });

    it('peeks from a cursor and up to a boundary, and reports the newest seq given out', () => {
      const outbox = open();
      const before = outbox.newestSeq() ?? -1;
      const seqs = outbox.append([1, 2, 3, 4, 5].map((n) => reading(n))).seqs;
      expect(before).toBeLessThan(seqs[0]!);
      expect(outbox.newestSeq()).toBe(seqs[4]);
      const peek = (afterSeq?: number, upToSeq?: number): number[] =>
        outbox
          .peek({ limit: 10, maxBytes: 1 << 20, exclude: none, ...(afterSeq !== undefined ? { afterSeq } : {}), ...(upToSeq !== undefined ? { upToSeq } : {}) })
          .map((e) => e.seq);
      expect(peek(seqs[1])).toEqual(seqs.slice(2));
      expect(peek(undefined, seqs[2])).toEqual(seqs.slice(0, 3));
      expect(peek(seqs[0], seqs[3])).toEqual(seqs.slice(1, 4));
      outbox.delete(seqs);
      expect(outbox.newestSeq()).toBe(seqs[4]);
    });

    it('deletes by seq, ignoring seqs it does not hold', () => {
      const outbox = open();
      const seqs = outbox.append([reading(1), reading(2), reading(3)]).seqs;
      expect(outbox.delete([seqs[0]!, seqs[2]!, 999_999_999_999_999])).toBe(2);
      expect(outbox.delete([seqs[0]!])).toBe(0);
      expect(outbox.peek({ limit: 10, maxBytes: 1 << 20, exclude: none }).map((e) => e.seq)).toEqual([seqs[1]]);
    });

    it('stores a large group whole, in order, with consecutive seqs, and hands each row out as stored', () => {
      const outbox = open();
      // 64 + 16 + 4 + 1 + 64 + 2: every statement size a group commit is split into.
      const group = Array.from({ length: 151 }, (_, i) => reading(i, `dev-${i % 7}`));
      const { seqs } = outbox.append(group);
      expect(seqs).toHaveLength(group.length);
      seqs.forEach((seq, i) => expect(seq).toBe(seqs[0]! + i));
      const peeked = outbox.peek({ limit: 1000, maxBytes: 1 << 30, exclude: none });
      expect(peeked.map((e) => e.seq)).toEqual(seqs);
      peeked.forEach((entry, i) => {
        expect(entry.json).toBe(JSON.stringify(group[i]));
        expect(entry.reading).toEqual({ seq: seqs[i], ...group[i] });
      });
      expect(outbox.stats()).toMatchObject({ depth: group.length, bytes: group.reduce((n, r) => n + Buffer.byteLength(JSON.stringify(r)), 0) });
    });

    it('deletes only the seqs asked for when others in flight lie between them', () => {
      const outbox = open();
      const seqs = outbox.append(Array.from({ length: 10 }, (_, i) => reading(i))).seqs;
      // A batch that skipped the rows of another batch still in flight (seqs 3 and 4).
      const batch = [...seqs.slice(0, 3), ...seqs.slice(5, 10)];
      const sizes = outbox.peek({ limit: 100, maxBytes: 1 << 30, exclude: none }).map((e) => e.bytes);
      expect(outbox.delete(batch)).toBe(8);
      expect(outbox.peek({ limit: 100, maxBytes: 1 << 30, exclude: none }).map((e) => e.seq)).toEqual([seqs[3], seqs[4]]);
      expect(outbox.stats()).toMatchObject({ depth: 2, bytes: sizes[3]! + sizes[4]! });
    });

    it('keeps depth, bytes and the oldest receive time in step with appends and deletes', () => {
      const outbox = open();
      expect(outbox.stats()).toEqual({ depth: 0, bytes: 0, oldestTs: null, dropped: {} });
      const seqs = outbox.append([reading(1, 'a', 1000), reading(2, 'a', 2000)]).seqs;
      const sizes = outbox.peek({ limit: 10, maxBytes: 1 << 20, exclude: none }).map((e) => e.bytes);
      expect(outbox.stats()).toMatchObject({ depth: 2, bytes: sizes[0]! + sizes[1]!, oldestTs: 1000 });
      outbox.delete([seqs[0]!]);
      expect(outbox.stats()).toMatchObject({ depth: 1, bytes: sizes[1], oldestTs: 2000 });
      outbox.delete([seqs[1]!]);
      expect(outbox.stats()).toMatchObject({ depth: 0, bytes: 0, oldestTs: null });
    });

    it('keeps its figures across a restart', () => {
      const first = open();
      first.append([reading(1, 'a', 1000), reading(2, 'a', 2000)]);
      const before = first.stats();
      first.close();
      expect(open().stats()).toEqual(before);
    });

    it('drops the oldest rows beyond its bound and counts them by device, across restarts', () => {
      const first = open({ maxRows: 3 });
      const seqs = first.append([reading(1, 'a'), reading(2, 'b'), reading(3, 'a')]).seqs;
      const result = first.append([reading(4, 'c'), reading(5, 'c')]);
      expect(result.droppedSeqs).toEqual([seqs[0], seqs[1]]);
      expect(first.stats()).toMatchObject({ depth: 3, dropped: { outbox_full: 2 } });
      expect(first.peek({ limit: 10, maxBytes: 1 << 20, exclude: none }).map((e) => e.reading.metrics.n)).toEqual([3, 4, 5]);
      first.close();
      const second = open({ maxRows: 3 });
      second.append([reading(6, 'a')]);
      expect(second.stats().dropped).toEqual({ outbox_full: 3 });
      expect(second.droppedByDevice()).toEqual([
        { reason: 'outbox_full', deviceId: 'a', count: 2 },
        { reason: 'outbox_full', deviceId: 'b', count: 1 },
      ]);
    });

    it('keeps its bound when one append alone is larger than it', () => {
      const outbox = open({ maxRows: 2 });
      const result = outbox.append([1, 2, 3, 4].map((n) => reading(n)));
      expect(result.seqs).toHaveLength(4);
      expect(result.droppedSeqs).toEqual(result.seqs.slice(0, 2));
      expect(outbox.stats()).toMatchObject({ depth: 2, dropped: { outbox_full: 2 } });
    });

    it('hands out batch ids never used before, across restarts', () => {
      const first = open();
      const ids = [first.nextBatchId(), first.nextBatchId(), first.nextBatchId()];
      expect(ids[1]! - ids[0]!).toBe(1);
      first.close();
      const second = open();
      expect(second.nextBatchId()).toBeGreaterThan(ids[2]!);
    });

    it('refuses use after close with FERRY_ERR_NOT_READY', () => {
      const outbox = open();
      outbox.close();
      outbox.close();
      let caught: unknown;
      try {
        outbox.append([reading(1)]);
      } catch (err) {
        caught = err;
      }
      expect(isFerryError(caught, 'FERRY_ERR_NOT_READY')).toBe(true);
    });
  });
}
