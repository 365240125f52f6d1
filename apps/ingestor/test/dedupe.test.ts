import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { judge, openDedupeStore, windowFloor } from '../src/dedupe.js';
import { canonicalJson, contentHash, legacyContentHash } from '../src/content-hash.js';

const dirs: string[] = [];
function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-dedupe-'));
  dirs.push(dir);
  return join(dir, 'dedupe.db');
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('judge', () => {
  it('calls an unseen seq new', () => {
    expect(judge(undefined, 'h1')).toEqual({ kind: 'new' });
  });
  it('calls a seq written with the same content a duplicate', () => {
    expect(judge({ hash: 'h1', outcome: 'written' }, 'h1')).toEqual({ kind: 'duplicate' });
  });
  it('calls a seq written with other content a conflict', () => {
    expect(judge({ hash: 'h1', outcome: 'written' }, 'h2').kind).toBe('conflict');
  });
  it('repeats an earlier refusal for the same content, and judges new content afresh', () => {
    const seen = { hash: 'h1', outcome: 'rejected' as const, code: 'FERRY_ERR_SINK_REJECTED' as const, reason: 'bad field' };
    expect(judge(seen, 'h1')).toEqual({ kind: 'rejected-before', code: 'FERRY_ERR_SINK_REJECTED', reason: 'bad field' });
    expect(judge(seen, 'h2')).toEqual({ kind: 'new' });
  });
});

describe('content hash', () => {
  it('does not depend on key order', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: 'x' } })).toBe('{"a":{"c":"x","d":[1,{"x":1,"y":2}]},"b":1}');
    expect(contentHash({ seq: 1, metrics: { t: 1, h: 2 } })).toBe(contentHash({ metrics: { h: 2, t: 1 }, seq: 1 }));
  });
  it('stays fixed, so a dedupe file written by this release matches after a restart or an upgrade', () => {
    const reading = { seq: 7, deviceId: 'dev-é 1', kind: 'telemetry', ts: 1700000000123, tsSource: 'device', receivedAt: 1700000000200, metrics: { temperature: 21.5, ok: true, label: 'a"b', n: -3 }, tags: { room: 'lab' }, deviceSeq: undefined };
    expect(contentHash(reading)).toBe('x4bcd411360f76d12');
    // The first releases' form (SHA-256 over the canonical JSON), still recognised in old records.
    expect(legacyContentHash(reading)).toBe('44764983be721f66');
  });
  it('hashes equal JSON content equally and different content differently', () => {
    // Equal canonical JSON (key order, -0, undefined members aside) must give the same hash; any
    // other difference a different one (64 bits: a collision in these runs would be a bug).
    fc.assert(
      fc.property(fc.jsonValue(), fc.jsonValue(), (a, b) => {
        expect(contentHash(a) === contentHash(b)).toBe(canonicalJson(a) === canonicalJson(b));
        expect(contentHash(a)).toBe(contentHash(JSON.parse(canonicalJson(a))));
      }),
      { numRuns: 1000 },
    );
    expect(contentHash({ a: 'bc' })).not.toBe(contentHash({ ab: 'c' }));
    expect(contentHash(['ab', 'c'])).not.toBe(contentHash(['a', 'bc']));
    expect(contentHash({ n: 1 })).not.toBe(contentHash({ n: '1' }));
    expect(contentHash({ n: 0 })).toBe(contentHash({ n: -0 }));
    expect(contentHash({ n: 2 ** 31 })).not.toBe(contentHash({ n: -(2 ** 31) }));
  });
  it('recognises a record stored with the earlier releases\' hash', () => {
    const raw = { seq: 3, metrics: { t: 1.5 } };
    const stored = { hash: legacyContentHash(raw), outcome: 'written' as const };
    expect(judge(stored, contentHash(raw), raw)).toEqual({ kind: 'duplicate' });
    expect(judge(stored, contentHash({ seq: 3, metrics: { t: 2 } }), { seq: 3, metrics: { t: 2 } }).kind).toBe('conflict');
  });
  it('serialises any JSON value exactly as the first release did', () => {
    // The first release's implementation, kept as the reference: stored hashes depend on it.
    const reference = (value: unknown): string => {
      if (Array.isArray(value)) return `[${value.map((v) => reference(v === undefined ? null : v)).join(',')}]`;
      if (value !== null && typeof value === 'object') {
        const entries = Object.entries(value as Record<string, unknown>)
          .filter(([, v]) => v !== undefined)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${reference(v)}`).join(',')}}`;
      }
      return JSON.stringify(value) ?? 'null';
    };
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(canonicalJson(value)).toBe(reference(value));
      }),
      { numRuns: 500 },
    );
  });
  it('differs when a value differs', () => {
    expect(contentHash({ seq: 1, metrics: { t: 1 } })).not.toBe(contentHash({ seq: 1, metrics: { t: 1.5 } }));
  });
});

describe('dedupe store', () => {
  it('remembers written and refused seqs across a reopen', () => {
    const path = tempDb();
    const store = openDedupeStore({ path, windowPerGateway: 1000 });
    store.record([
      { gatewayId: 'gw', seq: 1, hash: 'a', outcome: 'written' },
      { gatewayId: 'gw', seq: 2, hash: 'b', outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason: 'nope' },
    ]);
    store.close();
    const again = openDedupeStore({ path, windowPerGateway: 1000 });
    expect(again.lookup('gw', 1)).toEqual({ hash: 'a', outcome: 'written' });
    expect(again.lookup('gw', 2)).toEqual({ hash: 'b', outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason: 'nope' });
    expect(again.lookup('gw', 3)).toBeUndefined();
    expect(again.lookup('other', 1)).toBeUndefined();
    again.close();
  });

  it('lets a later write replace a refusal but never lets a refusal replace a write', () => {
    const store = openDedupeStore({ path: tempDb(), windowPerGateway: 1000 });
    store.record([{ gatewayId: 'gw', seq: 1, hash: 'a', outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason: 'x' }]);
    store.record([{ gatewayId: 'gw', seq: 1, hash: 'a', outcome: 'written' }]);
    expect(store.lookup('gw', 1)?.outcome).toBe('written');
    store.record([{ gatewayId: 'gw', seq: 1, hash: 'z', outcome: 'rejected', code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'y' }]);
    expect(store.lookup('gw', 1)).toEqual({ hash: 'a', outcome: 'written' });
    store.close();
  });

  it('keeps only the newest window of seqs per gateway and counts what it discards', () => {
    expect(windowFloor(100, 10)).toBe(90);
    const store = openDedupeStore({ path: tempDb(), windowPerGateway: 10 });
    const entries = Array.from({ length: 25 }, (_, seq) => ({ gatewayId: 'gw', seq, hash: `h${seq}`, outcome: 'written' as const }));
    store.record(entries.slice(0, 10));
    expect(store.counts()).toEqual({ held: 10, pruned: 0 });
    const pruned = store.record(entries.slice(10));
    // Highest seq 24, window 10: seqs 15..24 stay.
    expect(pruned).toBe(15);
    expect(store.counts()).toEqual({ held: 10, pruned: 15 });
    expect(store.lookup('gw', 14)).toBeUndefined();
    expect(store.lookup('gw', 15)?.outcome).toBe('written');
    store.record([{ gatewayId: 'other', seq: 0, hash: 'x', outcome: 'written' }]);
    expect(store.lookup('other', 0)?.outcome).toBe('written');
    store.close();
  });

  it('finds an older seq recorded after a newer one, across a reopen too (the high-water shortcut only skips seqs above it)', () => {
    const path = tempDb();
    const store = openDedupeStore({ path, windowPerGateway: 1000 });
    store.record([{ gatewayId: 'gw', seq: 50, hash: 'new', outcome: 'written' }]);
    store.record([{ gatewayId: 'gw', seq: 10, hash: 'old', outcome: 'written' }]);
    expect(store.lookup('gw', 10)).toEqual({ hash: 'old', outcome: 'written' });
    expect(store.lookup('gw', 51)).toBeUndefined();
    store.record([{ gatewayId: 'gw', seq: 51, hash: 'next', outcome: 'written' }]);
    expect(store.lookup('gw', 51)).toEqual({ hash: 'next', outcome: 'written' });
    store.close();
    const again = openDedupeStore({ path, windowPerGateway: 1000 });
    expect(again.lookup('gw', 10)?.hash).toBe('old');
    expect(again.lookup('gw', 51)?.hash).toBe('next');
    again.close();
  });

  it('records written seqs as runs: every seq keeps its own hash, gaps stay unseen, across a reopen', () => {
    const path = tempDb();
    const store = openDedupeStore({ path, windowPerGateway: 1000 });
    const h = (seq: number): string => contentHash({ seq });
    const written = (gatewayId: string, seq: number) => ({ gatewayId, seq, hash: h(seq), outcome: 'written' as const });
    // Out of order, two gateways, a gap at 13..14, and a refusal inside the range.
    store.record([written('gw', 12), written('gw', 10), written('gw', 11), written('gw', 15), written('other', 11), written('gw', 16)]);
    store.record([{ gatewayId: 'gw', seq: 13, hash: h(13), outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason: 'bad' }]);
    const check = (s: ReturnType<typeof openDedupeStore>): void => {
      for (const seq of [10, 11, 12, 15, 16]) expect(s.lookup('gw', seq)).toEqual({ hash: h(seq), outcome: 'written' });
      expect(s.lookup('gw', 13)).toMatchObject({ outcome: 'rejected', reason: 'bad' });
      expect(s.lookup('gw', 14)).toBeUndefined();
      expect(s.lookup('gw', 9)).toBeUndefined();
      expect(s.lookup('other', 11)).toEqual({ hash: h(11), outcome: 'written' });
      expect(s.lookup('other', 10)).toBeUndefined();
      expect(s.counts().held).toBe(7);
    };
    check(store);
    store.close();
    const again = openDedupeStore({ path, windowPerGateway: 1000 });
    check(again);
    // A replay that writes the refused seq: written wins over the refusal; a later refusal never replaces a write.
    again.record([written('gw', 13)]);
    again.record([{ gatewayId: 'gw', seq: 11, hash: h(11), outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason: 'late' }]);
    expect(again.lookup('gw', 13)).toEqual({ hash: h(13), outcome: 'written' });
    expect(again.lookup('gw', 11)).toEqual({ hash: h(11), outcome: 'written' });
    // The same seqs written again with other content (after a window let them go): the newest is what counts.
    again.record([{ gatewayId: 'gw', seq: 10, hash: contentHash('again'), outcome: 'written' }]);
    expect(again.lookup('gw', 10)).toEqual({ hash: contentHash('again'), outcome: 'written' });
    expect(again.lookup('gw', 12)).toEqual({ hash: h(12), outcome: 'written' });
    again.close();
  });

  it("moves each gateway's window to its highest seq when its entries come in several stretches of one record, the highest first", () => {
    const path = tempDb();
    const store = openDedupeStore({ path, windowPerGateway: 10 });
    const written = (gatewayId: string, seq: number) => ({ gatewayId, seq, hash: contentHash(seq), outcome: 'written' as const });
    // gw's highest seq (21) is in its first stretch, a lower one (3) after the other gateway's.
    store.record([written('gw', 20), written('gw', 21), written('other', 5), written('gw', 3), written('other', 4)]);
    const check = (s: ReturnType<typeof openDedupeStore>): void => {
      expect(s.lookup('gw', 21)).toEqual({ hash: contentHash(21), outcome: 'written' });
      expect(s.lookup('gw', 20)).toEqual({ hash: contentHash(20), outcome: 'written' });
      // Highest seq 21, window 10: seq 3 is below it.
      expect(s.windowFloor?.('gw')).toBe(11);
      expect(s.lookup('gw', 3)).toBeUndefined();
      expect(s.windowFloor?.('other')).toBe(-5);
      expect(s.lookup('other', 5)).toEqual({ hash: contentHash(5), outcome: 'written' });
      expect(s.lookup('other', 4)).toEqual({ hash: contentHash(4), outcome: 'written' });
      expect(s.counts()).toEqual({ held: 4, pruned: 1 });
    };
    check(store);
    store.close();
    const again = openDedupeStore({ path, windowPerGateway: 10 });
    check(again);
    again.close();
  });

  it('prunes whole runs once the window has passed them, counting their seqs', () => {
    const store = openDedupeStore({ path: tempDb(), windowPerGateway: 10 });
    const entries = Array.from({ length: 25 }, (_, seq) => ({ gatewayId: 'gw', seq, hash: contentHash(seq), outcome: 'written' as const }));
    store.record(entries.slice(0, 10));
    expect(store.counts()).toEqual({ held: 10, pruned: 0 });
    // Highest seq 24, window 10: the run 0..9 goes; the run 10..24 reaches into the window and stays whole.
    expect(store.record(entries.slice(10))).toBe(10);
    expect(store.counts()).toEqual({ held: 15, pruned: 10 });
    expect(store.lookup('gw', 14)).toBeUndefined();
    expect(store.lookup('gw', 15)).toEqual({ hash: contentHash(15), outcome: 'written' });
    store.close();
  });

  it('treats a seq below the window as unseen even before it is pruned from the file', () => {
    const path = tempDb();
    const store = openDedupeStore({ path, windowPerGateway: 1000 });
    store.record([{ gatewayId: 'gw', seq: 5, hash: 'a', outcome: 'written' }, { gatewayId: 'gw', seq: 2000, hash: 'b', outcome: 'written' }]);
    store.close();
    const narrow = openDedupeStore({ path, windowPerGateway: 10 });
    expect(narrow.lookup('gw', 5)).toBeUndefined();
    expect(narrow.lookup('gw', 2000)?.outcome).toBe('written');
    narrow.close();
  });
});
