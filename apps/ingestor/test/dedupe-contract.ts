// The contract every DedupeStore and DeviceDedupeStore runs (STYLE.md: one interface, one suite
// every implementation passes, as aedes-persistence's abstract.js): the SQLite stores of one
// ingestor and the Redis stores the ingestors share. A subject wraps a store with what the shared
// stores need around it (prefetch before a lookup, a flush before their effects are visible); for
// SQLite those are no-ops.
import { afterEach, describe, expect, it } from 'vitest';
import type { DeviceReading } from '@ferry/protocol';
import { contentHash } from '../src/content-hash.js';
import { judge } from '../src/dedupe.js';
import type { DedupeEntry, DedupeStore } from '../src/dedupe.js';
import { deviceIdentity, judgeDevice } from '../src/device-dedupe.js';
import type { DeviceDedupeStore, DeviceIdentity } from '../src/device-dedupe.js';

export interface DedupeSubject {
  readonly store: DedupeStore;
  /** Loads what lookup() answers for these seqs (a no-op for a store that reads on lookup). */
  prefetch(gatewayId: string, seqs: readonly number[]): Promise<void>;
  /** Resolves once every record() so far is stored and counts() says so (a no-op for a synchronous store). */
  settle(): Promise<void>;
  /** Settles and closes this store, then opens another on the same state: a restart, or the next lease holder. */
  reopen(): Promise<DedupeSubject>;
  /** Settles and closes the store and whatever the subject opened for it. Idempotent. */
  close(): Promise<void>;
}

export interface DedupeImplementation {
  readonly name: string;
  /** A store on fresh, empty state. */
  open(options: { readonly windowPerGateway: number }): Promise<DedupeSubject>;
}

export interface DeviceDedupeSubject {
  readonly store: DeviceDedupeStore;
  prefetch(identities: readonly DeviceIdentity[]): Promise<void>;
  settle(): Promise<void>;
  reopen(): Promise<DeviceDedupeSubject>;
  close(): Promise<void>;
}

export interface DeviceDedupeImplementation {
  readonly name: string;
  open(options: { readonly windowMs: number; readonly maxEntries: number }): Promise<DeviceDedupeSubject>;
}

/**
 * Seqs below the window an implementation may still hold because it prunes whole runs or buckets
 * (lookup() calls them unseen all the same): the SQLite runs of one record() call, 128-seq buckets in Redis.
 */
const PRUNE_SLACK = 1_024;

const written = (gatewayId: string, seq: number, hash = contentHash({ gatewayId, seq })): DedupeEntry => ({ gatewayId, seq, hash, outcome: 'written' });
const refused = (gatewayId: string, seq: number, hash: string, reason = 'bad field'): DedupeEntry => ({
  gatewayId,
  seq,
  hash,
  outcome: 'rejected',
  code: 'FERRY_ERR_SINK_REJECTED',
  reason,
});

/** Registers the DedupeStore contract for one implementation. */
export function dedupeStoreContract(implementation: DedupeImplementation): void {
  describe(`DedupeStore contract: ${implementation.name}`, () => {
    const subjects: DedupeSubject[] = [];
    afterEach(async () => {
      for (const s of subjects.splice(0).reverse()) await s.close();
    });
    const open = async (windowPerGateway = 100_000): Promise<DedupeSubject> => {
      const s = await implementation.open({ windowPerGateway });
      subjects.push(s);
      return s;
    };
    const reopen = async (s: DedupeSubject): Promise<DedupeSubject> => {
      const again = await s.reopen();
      subjects.push(again);
      return again;
    };

    it('judges a seq new, duplicate, conflict or rejected-before from what was recorded', async () => {
      const s = await open();
      const a = contentHash({ t: 1 });
      const b = contentHash({ t: 2 });
      s.store.record([written('gw', 1, a), refused('gw', 2, b, 'field t is a string')]);
      await s.prefetch('gw', [1, 2, 3]);
      expect(judge(s.store.lookup('gw', 1), a)).toEqual({ kind: 'duplicate' });
      expect(judge(s.store.lookup('gw', 1), b)).toMatchObject({ kind: 'conflict' });
      expect(judge(s.store.lookup('gw', 2), b)).toEqual({ kind: 'rejected-before', code: 'FERRY_ERR_SINK_REJECTED', reason: 'field t is a string' });
      expect(judge(s.store.lookup('gw', 2), a)).toEqual({ kind: 'new' });
      expect(judge(s.store.lookup('gw', 3), a)).toEqual({ kind: 'new' });
      await s.prefetch('other', [1]);
      expect(s.store.lookup('other', 1)).toBeUndefined();
    });

    it('remembers written and refused seqs across a reopen', async () => {
      const s = await open();
      const entries = [written('gw', 1, 'a'), refused('gw', 2, 'b', 'nope'), ...Array.from({ length: 50 }, (_, i) => written('gw', 10 + i))];
      s.store.record(entries);
      const again = await reopen(s);
      await again.prefetch('gw', [1, 2, 3, ...entries.map((e) => e.seq)]);
      expect(again.store.lookup('gw', 1)).toEqual({ hash: 'a', outcome: 'written' });
      expect(again.store.lookup('gw', 2)).toEqual({ hash: 'b', outcome: 'rejected', code: 'FERRY_ERR_SINK_REJECTED', reason: 'nope' });
      expect(again.store.lookup('gw', 3)).toBeUndefined();
      for (let seq = 10; seq < 60; seq++) expect(again.store.lookup('gw', seq)).toEqual({ hash: contentHash({ gatewayId: 'gw', seq }), outcome: 'written' });
      await again.settle();
      expect(again.store.counts()).toEqual({ held: 52, pruned: 0 });
    });

    it('lets a later write replace a refusal but never lets a refusal replace a write, at once and after a reopen', async () => {
      const s = await open();
      s.store.record([refused('gw', 1, 'a', 'x')]);
      s.store.record([written('gw', 1, 'a')]);
      s.store.record([refused('gw', 1, 'z', 'y')]);
      s.store.record([written('gw', 2, 'b'), refused('gw', 2, 'b', 'late')]);
      s.store.record([refused('gw', 3, 'c', 'first'), refused('gw', 3, 'c', 'second')]);
      const check = async (subject: DedupeSubject): Promise<void> => {
        await subject.prefetch('gw', [1, 2, 3]);
        expect(subject.store.lookup('gw', 1)).toEqual({ hash: 'a', outcome: 'written' });
        expect(subject.store.lookup('gw', 2)).toEqual({ hash: 'b', outcome: 'written' });
        expect(subject.store.lookup('gw', 3)).toMatchObject({ outcome: 'rejected', reason: 'first' });
      };
      await check(s);
      await check(await reopen(s));
    });

    it('finds a seq recorded out of order, with gaps, after newer ones', async () => {
      const s = await open();
      s.store.record([written('gw', 12), written('gw', 10), written('gw', 11), written('gw', 15), written('other', 11), written('gw', 16)]);
      s.store.record([written('gw', 5)]);
      const check = async (subject: DedupeSubject): Promise<void> => {
        await subject.prefetch('gw', [4, 5, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
        await subject.prefetch('other', [10, 11]);
        for (const seq of [5, 10, 11, 12, 15, 16]) expect(subject.store.lookup('gw', seq)).toEqual({ hash: contentHash({ gatewayId: 'gw', seq }), outcome: 'written' });
        for (const seq of [4, 9, 13, 14, 17]) expect(subject.store.lookup('gw', seq)).toBeUndefined();
        expect(subject.store.lookup('other', 11)?.outcome).toBe('written');
        expect(subject.store.lookup('other', 10)).toBeUndefined();
      };
      await check(s);
      await check(await reopen(s));
    });

    it('keeps only the newest window of seqs per gateway, calls older ones unseen and counts what it discards', async () => {
      const window = 300;
      const s = await open(window);
      let reported = 0;
      for (let first = 0; first < 5_000; first += 100) {
        reported += s.store.record(Array.from({ length: 100 }, (_, i) => written('gw', first + i)));
      }
      s.store.record([written('quiet', 0)]);
      await s.settle();
      // What a store prunes out of the caller's sight it reports from a later record().
      reported += s.store.record([]);
      const { held, pruned } = s.store.counts();
      expect(held + pruned).toBe(5_001);
      expect(held).toBeGreaterThanOrEqual(window + 1);
      expect(held).toBeLessThanOrEqual(window + 1 + PRUNE_SLACK);
      expect(reported).toBe(pruned);
      const seqs = Array.from({ length: 5_000 }, (_, seq) => seq);
      await s.prefetch('gw', seqs);
      // Highest seq 4999, window 300: 4700..4999 count, everything below is unseen.
      for (const seq of seqs) {
        if (seq < 4_700) expect(s.store.lookup('gw', seq)).toBeUndefined();
        else expect(s.store.lookup('gw', seq)?.hash).toBe(contentHash({ gatewayId: 'gw', seq }));
      }
      await s.prefetch('quiet', [0]);
      expect(s.store.lookup('quiet', 0)?.outcome).toBe('written');
    });

    it('keeps many gateways apart, in one record and after a reopen', async () => {
      const s = await open();
      const gateways = Array.from({ length: 40 }, (_, g) => `gw-${g}`);
      s.store.record(gateways.flatMap((g) => Array.from({ length: 25 }, (_, i) => written(g, 1_000 + i))));
      const again = await reopen(s);
      for (const g of gateways) {
        await again.prefetch(g, Array.from({ length: 26 }, (_, i) => 1_000 + i));
        for (let i = 0; i < 25; i++) expect(again.store.lookup(g, 1_000 + i)?.hash).toBe(contentHash({ gatewayId: g, seq: 1_000 + i }));
        expect(again.store.lookup(g, 1_025)).toBeUndefined();
      }
      await again.settle();
      expect(again.store.counts().held).toBe(1_000);
    });

    it('answers the same after the same entries are recorded again', async () => {
      const s = await open();
      const entries = [...Array.from({ length: 30 }, (_, i) => written('gw', i)), refused('gw', 40, 'r')];
      s.store.record(entries);
      s.store.record(entries);
      const again = await reopen(s);
      await again.prefetch('gw', [...entries.map((e) => e.seq), 41]);
      for (const e of entries.slice(0, 30)) expect(again.store.lookup('gw', e.seq)).toEqual({ hash: e.hash, outcome: 'written' });
      expect(again.store.lookup('gw', 40)).toMatchObject({ outcome: 'rejected', hash: 'r' });
      expect(again.store.lookup('gw', 41)).toBeUndefined();
    });
  });
}

/** A reading from a device, times from the clock at run time. */
function reading(overrides: Partial<DeviceReading> & { deviceId?: string } = {}): DeviceReading {
  const now = Date.now();
  return { deviceId: 'dev-1', kind: 'telemetry', ts: now - 1_000, tsSource: 'device', receivedAt: now, metrics: { t: 21.5 }, ...overrides };
}

function identity(scope: string, overrides: Partial<DeviceReading> = {}): DeviceIdentity {
  const found = deviceIdentity(reading(overrides), 'gateway', scope);
  if (!found) throw new Error('the reading has no device identity');
  return found;
}

/** Registers the DeviceDedupeStore contract for one implementation. */
export function deviceDedupeStoreContract(implementation: DeviceDedupeImplementation): void {
  describe(`DeviceDedupeStore contract: ${implementation.name}`, () => {
    const subjects: DeviceDedupeSubject[] = [];
    afterEach(async () => {
      for (const s of subjects.splice(0).reverse()) await s.close();
    });
    const open = async (windowMs = 3_600_000, maxEntries = 100_000): Promise<DeviceDedupeSubject> => {
      const s = await implementation.open({ windowMs, maxEntries });
      subjects.push(s);
      return s;
    };
    const reopen = async (s: DeviceDedupeSubject): Promise<DeviceDedupeSubject> => {
      const again = await s.reopen();
      subjects.push(again);
      return again;
    };

    it('finds a recorded identity: a duplicate, a conflict under a strict key, nothing for another gateway or device', async () => {
      const s = await open();
      const ts = Date.now() - 5_000;
      const strict = identity('gw', { deviceSeq: 7, ts });
      const loose = identity('gw', { deviceSeq: 8, tsSource: 'gateway' });
      s.store.record([strict, loose], Date.now());
      const changed = identity('gw', { deviceSeq: 7, ts, metrics: { t: 99 } });
      const looseChanged = identity('gw', { deviceSeq: 8, tsSource: 'gateway', metrics: { t: 99 } });
      const elsewhere = identity('gw-2', { deviceSeq: 7, ts });
      const otherDevice = identity('gw', { deviceSeq: 7, ts, deviceId: 'dev-2' });
      const all = [strict, loose, changed, looseChanged, elsewhere, otherDevice];
      await s.prefetch(all);
      expect(judgeDevice(s.store.lookup(strict), strict)).toEqual({ kind: 'duplicate' });
      expect(judgeDevice(s.store.lookup(loose), loose)).toEqual({ kind: 'duplicate' });
      expect(judgeDevice(s.store.lookup(changed), changed)).toMatchObject({ kind: 'conflict' });
      // A loose key carries the content: other content is another key, a new reading.
      expect(s.store.lookup(looseChanged)).toBeUndefined();
      expect(s.store.lookup(elsewhere)).toBeUndefined();
      expect(s.store.lookup(otherDevice)).toBeUndefined();
      const again = await reopen(s);
      await again.prefetch(all);
      expect(again.store.lookup(strict)).toBe(strict.hash);
      expect(again.store.lookup(loose)).toBe(loose.hash);
      expect(again.store.lookup(elsewhere)).toBeUndefined();
    });

    it('records the same identities twice as once', async () => {
      const s = await open();
      const base = Date.now() - 60_000;
      const identities = Array.from({ length: 20 }, (_, i) => identity('gw', { deviceId: `dev-${i % 4}`, deviceSeq: i, ts: base + i * 1_000 }));
      s.store.record(identities, Date.now());
      await s.settle();
      expect(s.store.held).toBe(20);
      s.store.record(identities, Date.now());
      const again = await reopen(s);
      await again.prefetch(identities);
      for (const i of identities) expect(again.store.lookup(i)).toBe(i.hash);
    });

    it('forgets an identity recorded more than windowMs of ingest time ago', async () => {
      const windowMs = 60_000;
      const s = await open(windowMs);
      const now = Date.now();
      const old = identity('gw', { deviceSeq: 1, ts: now - 100_000 });
      const recent = identity('gw', { deviceSeq: 2, ts: now - 1_000 });
      s.store.record([old], now - windowMs - 20_000);
      s.store.record([recent], now);
      await s.prefetch([old, recent]);
      expect(s.store.lookup(old)).toBeUndefined();
      expect(s.store.lookup(recent)).toBe(recent.hash);
      const again = await reopen(s);
      await again.prefetch([old, recent]);
      expect(again.store.lookup(old)).toBeUndefined();
      expect(again.store.lookup(recent)).toBe(recent.hash);
    });

    it('keeps scopes and devices apart, many in one record', async () => {
      const s = await open();
      const ts = Date.now() - 10_000;
      const identities = Array.from({ length: 10 }, (_, g) => Array.from({ length: 30 }, (_, d) => identity(`gw-${g}`, { deviceId: `dev-${d}`, deviceSeq: 1, ts, metrics: { g, d } }))).flat();
      s.store.record(identities, Date.now());
      const again = await reopen(s);
      await again.prefetch(identities);
      for (const i of identities) expect(again.store.lookup(i)).toBe(i.hash);
      await again.settle();
      expect(again.store.held).toBe(300);
    });

    it('bounds what it holds by maxEntries and counts what the bound costs', async () => {
      const maxEntries = 100;
      const s = await open(3_600_000, maxEntries);
      const base = Date.now() - 600_000;
      let reported = 0;
      for (let chunk = 0; chunk < 20; chunk++) {
        reported += s.store.record(Array.from({ length: 50 }, (_, i) => identity('gw', { deviceSeq: chunk * 50 + i, ts: base + chunk * 50 + i })), Date.now());
        await s.settle();
      }
      reported += s.store.record([], Date.now());
      expect(s.store.held).toBeLessThanOrEqual(maxEntries);
      expect(reported).toBeGreaterThan(0);
    });
  });
}
