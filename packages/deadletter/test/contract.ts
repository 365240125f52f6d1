// The contract every DeadLetterStore implementation runs (like aedes-persistence's abstract.js).
import { afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import { ManualClock } from '@ferry/runtime';
import type { Clock } from '@ferry/runtime';
import type { DeadLetterStore, NewDeadLetter } from '../src/store.js';

export interface DeadLetterStoreHarness {
  /** Opens the store under test; a second call in the same test opens the same storage again (a restart). */
  open(options?: { maxEntries?: number; clock?: Clock }): DeadLetterStore;
  /** Closes whatever is still open and removes the storage. */
  cleanup(): void;
}

function entry(overrides: Partial<NewDeadLetter> = {}): NewDeadLetter {
  return {
    source: { gatewayId: 'gw-1', deviceId: 'dev-1', topic: 'devices/dev-1/telemetry' },
    code: 'FERRY_ERR_PAYLOAD_JSON',
    reason: 'payload is not valid JSON',
    payload: Buffer.from('{not json'),
    ...overrides,
  };
}

export function deadLetterStoreContract(name: string, makeHarness: () => DeadLetterStoreHarness): void {
  describe(`DeadLetterStore contract: ${name}`, () => {
    let harness: DeadLetterStoreHarness | undefined;
    const clock = new ManualClock(1_700_000_000_000);

    function open(options: { maxEntries?: number } = {}): DeadLetterStore {
      harness ??= makeHarness();
      return harness.open({ clock, ...options });
    }

    afterEach(() => {
      harness?.cleanup();
      harness = undefined;
    });

    it('keeps an entry with its source, reason, issues and raw bytes, stamped by the clock', () => {
      const store = open();
      const payload = Uint8Array.from([0x00, 0xff, 0x7b, 0x80]);
      const added = store.add(entry({ payload, issues: [{ path: ['metrics', 't'], message: 'expected number' }] }));
      expect(added.id).toBeGreaterThan(0);
      expect(added.at).toBe(clock.now());
      expect(added.replayedAt).toBeNull();
      expect(Buffer.isBuffer(added.payload)).toBe(true);
      expect([...added.payload]).toEqual([0x00, 0xff, 0x7b, 0x80]);
      const got = store.get(added.id);
      expect(got).toEqual(added);
      expect(got?.source).toEqual({ gatewayId: 'gw-1', deviceId: 'dev-1', topic: 'devices/dev-1/telemetry' });
      expect(got?.issues).toEqual([{ path: ['metrics', 't'], message: 'expected number' }]);
    });

    it('uses the time given with an entry over its own clock', () => {
      const store = open();
      expect(store.add(entry({ at: 42 })).at).toBe(42);
    });

    it('keeps a batch reading refused by the ingestor with its gateway sequence number', () => {
      const store = open();
      const added = store.add(entry({ source: { gatewayId: 'gw-2', seq: 17 }, code: 'FERRY_ERR_SINK_REJECTED' }));
      expect(store.get(added.id)?.source).toEqual({ gatewayId: 'gw-2', seq: 17 });
    });

    it('gives increasing ids and answers undefined for an unknown one', () => {
      const store = open();
      const a = store.add(entry());
      const b = store.add(entry());
      expect(b.id).toBeGreaterThan(a.id);
      expect(store.get(b.id + 1000)).toBeUndefined();
    });

    it('never throws on validation detail it cannot serialize', () => {
      const store = open();
      const circular: Record<string, unknown> = {};
      circular.self = circular;
      const added = store.add(entry({ issues: [circular, 10n] }));
      expect(store.get(added.id)?.issues).toHaveLength(2);
    });

    it('lists entries oldest first, filtered by code, device and gateway, and pages by id', () => {
      const store = open();
      store.addMany([
        entry({ code: 'FERRY_ERR_PAYLOAD_JSON', source: { gatewayId: 'gw-1', deviceId: 'a' } }),
        entry({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', source: { gatewayId: 'gw-1', deviceId: 'b' } }),
        entry({ code: 'FERRY_ERR_PAYLOAD_JSON', source: { gatewayId: 'gw-2', deviceId: 'b' } }),
        entry({ code: 'FERRY_ERR_TOPIC_UNKNOWN', source: { gatewayId: 'gw-2', topic: 'x/y' } }),
      ]);
      const all = store.list();
      expect(all).toHaveLength(4);
      expect(all.map((e) => e.id)).toEqual([...all.map((e) => e.id)].sort((x, y) => x - y));
      expect(store.list({ code: 'FERRY_ERR_PAYLOAD_JSON' }).map((e) => e.source.deviceId)).toEqual(['a', 'b']);
      expect(store.list({ deviceId: 'b' }).map((e) => e.code)).toEqual(['FERRY_ERR_PAYLOAD_SCHEMA', 'FERRY_ERR_PAYLOAD_JSON']);
      expect(store.list({ gatewayId: 'gw-2' })).toHaveLength(2);
      expect(store.list({ gatewayId: 'gw-2', code: 'FERRY_ERR_TOPIC_UNKNOWN' })[0]?.source.topic).toBe('x/y');
      const first = store.list({ limit: 2 });
      expect(first).toHaveLength(2);
      const next = store.list({ afterId: first[1]!.id, limit: 2 });
      expect(next.map((e) => e.id)).toEqual(all.slice(2).map((e) => e.id));
    });

    it('leaves replayed entries out of a listing unless asked for them', () => {
      const store = open();
      const a = store.add(entry());
      const b = store.add(entry());
      clock.advance(1000);
      store.markReplayed([a.id]);
      expect(store.list().map((e) => e.id)).toEqual([b.id]);
      const withReplayed = store.list({ includeReplayed: true });
      expect(withReplayed.map((e) => e.id)).toEqual([a.id, b.id]);
      expect(withReplayed[0]?.replayedAt).toBe(clock.now());
      store.markReplayed([b.id], 5);
      expect(store.get(b.id)?.replayedAt).toBe(5);
    });

    it('purges what a filter matches and keeps the counts of what was ever added', () => {
      const store = open();
      store.addMany([entry(), entry(), entry({ code: 'FERRY_ERR_TOPIC_UNKNOWN' })]);
      expect(store.purge({ code: 'FERRY_ERR_PAYLOAD_JSON' })).toBe(2);
      const counts = store.counts();
      expect(counts.held).toBe(1);
      expect(counts.byCode).toEqual({ FERRY_ERR_PAYLOAD_JSON: 2, FERRY_ERR_TOPIC_UNKNOWN: 1 });
      expect(counts.discarded).toBe(0);
    });

    it('purges replayed entries only when the filter includes them', () => {
      const store = open();
      const a = store.add(entry());
      store.add(entry());
      store.markReplayed([a.id]);
      expect(store.purge()).toBe(1);
      expect(store.purge({ includeReplayed: true })).toBe(1);
      expect(store.counts().held).toBe(0);
    });

    it('discards the oldest entries beyond its bound and counts them', () => {
      const store = open({ maxEntries: 3 });
      const ids = [1, 2, 3, 4, 5].map((n) => store.add(entry({ reason: `r${n}` })).id);
      expect(store.list().map((e) => e.reason)).toEqual(['r3', 'r4', 'r5']);
      expect(store.get(ids[0]!)).toBeUndefined();
      expect(store.counts()).toEqual({ held: 3, byCode: { FERRY_ERR_PAYLOAD_JSON: 5 }, discarded: 2 });
    });

    it('keeps the bound when one call adds more than it holds', () => {
      const store = open({ maxEntries: 2 });
      store.addMany([1, 2, 3, 4, 5].map((n) => entry({ reason: `r${n}` })));
      expect(store.list().map((e) => e.reason)).toEqual(['r4', 'r5']);
      expect(store.counts().discarded).toBe(3);
    });

    it('keeps entries, counts by code and discards across a restart', () => {
      const first = open({ maxEntries: 2 });
      first.addMany([entry(), entry(), entry({ code: 'FERRY_ERR_VALUE_NOT_FINITE' })]);
      first.close();
      const second = open({ maxEntries: 2 });
      expect(second.counts()).toEqual({
        held: 2,
        byCode: { FERRY_ERR_PAYLOAD_JSON: 2, FERRY_ERR_VALUE_NOT_FINITE: 1 },
        discarded: 1,
      });
      second.add(entry());
      expect(second.counts().discarded).toBe(2);
      expect(second.list()).toHaveLength(2);
    });

    it('keeps a letter a gateway reported once, however often the report arrives, and across a restart', () => {
      const first = open();
      const reported = (id: number, code: NewDeadLetter['code'] = 'FERRY_ERR_PAYLOAD_JSON'): NewDeadLetter =>
        entry({ source: { gatewayId: 'gw-1', deviceId: 'dev-1', gatewayLetterId: id }, code, payload: Buffer.from('{"a":'), payloadBytes: 9000 });
      expect(first.addReported([reported(1), reported(2)])).toEqual({ added: 2, duplicates: 0 });
      expect(first.addReported([reported(2), reported(3, 'FERRY_ERR_VALUE_NOT_FINITE')])).toEqual({ added: 1, duplicates: 1 });
      first.close();
      const second = open();
      expect(second.addReported([reported(1), reported(3)])).toEqual({ added: 0, duplicates: 2 });
      // Another gateway's letter 1 is another letter.
      expect(second.addReported([{ ...reported(1), source: { gatewayId: 'gw-2', gatewayLetterId: 1 } }])).toEqual({ added: 1, duplicates: 0 });
      expect(second.counts()).toMatchObject({ held: 4, byCode: { FERRY_ERR_PAYLOAD_JSON: 3, FERRY_ERR_VALUE_NOT_FINITE: 1 } });
      const got = second.getReported('gw-1', 3);
      expect(got?.source).toEqual({ gatewayId: 'gw-1', deviceId: 'dev-1', gatewayLetterId: 3 });
      expect(got?.payloadBytes).toBe(9000);
      expect(second.list({ origin: 'gateway' })).toHaveLength(4);
      second.add(entry());
      expect(second.list({ origin: 'local' })).toHaveLength(1);
      expect(second.list({ origin: 'gateway', gatewayId: 'gw-2' }).map((e) => e.source.gatewayLetterId)).toEqual([1]);
    });

    it('refuses a reported letter without its gateway and gateway letter id', () => {
      const store = open();
      expect(() => store.addReported([entry()])).toThrow(/gatewayLetterId/);
      expect(store.counts().held).toBe(0);
    });

    it('groups held letters by gateway, device and code, largest first, leaving replayed ones out', () => {
      const store = open();
      store.addMany([entry(), entry(), entry({ source: { deviceId: 'dev-2' }, code: 'FERRY_ERR_TOPIC_UNKNOWN' })]);
      const replayed = store.add(entry({ source: { deviceId: 'dev-3' } }));
      store.markReplayed([replayed.id]);
      expect(store.heldBy()).toEqual([
        { gatewayId: 'gw-1', deviceId: 'dev-1', code: 'FERRY_ERR_PAYLOAD_JSON', held: 2 },
        { gatewayId: null, deviceId: 'dev-2', code: 'FERRY_ERR_TOPIC_UNKNOWN', held: 1 },
      ]);
      expect(store.heldBy(1)).toHaveLength(1);
    });

    it('amends the code, reason and issues of a held entry, and says when there is none', () => {
      const store = open();
      const added = store.add(entry());
      expect(store.amend(added.id, { code: 'FERRY_ERR_LIMIT_EXCEEDED', reason: 'too many metrics', issues: [{ n: 1 }] })).toBe(true);
      expect(store.get(added.id)).toMatchObject({ code: 'FERRY_ERR_LIMIT_EXCEEDED', reason: 'too many metrics', issues: [{ n: 1 }] });
      expect(store.amend(added.id + 100, { code: 'FERRY_ERR_LIMIT_EXCEEDED', reason: 'x' })).toBe(false);
    });

    it('refuses use after close with FERRY_ERR_NOT_READY', () => {
      const store = open();
      store.close();
      store.close();
      let caught: unknown;
      try {
        store.add(entry());
      } catch (err) {
        caught = err;
      }
      expect(isFerryError(caught, 'FERRY_ERR_NOT_READY')).toBe(true);
    });
  });
}
