import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFerryError } from '@ferry/protocol';
import type { EncodedLine } from '../src/index.js';
import { writeBisecting, writeBody } from '../src/bisect.js';
import type { EncodedBody } from '../src/index.js';
import { databaseMessage, judgeAnswer, parseRetryAfter, type WriteAttempt } from '../src/write-answer.js';

/**
 * A database in memory that refuses lines containing "bad". `partial` behaves like InfluxDB 1.x
 * (writes the good lines of a refused batch, then answers 400), otherwise like InfluxDB 2
 * (refuses the whole batch). Keyed storage: writing a line again overwrites it.
 */
function memoryDatabase(partial: boolean): { stored: Set<string>; requests: string[][]; send: (body: string) => Promise<WriteAttempt> } {
  const stored = new Set<string>();
  const requests: string[][] = [];
  return {
    stored,
    requests,
    send: async (body) => {
      // One request body, lines joined by '\n' (what the HTTP sinks send as it is).
      const lines = body.split('\n');
      requests.push(lines);
      const bad = lines.filter((l) => l.includes('bad'));
      if (bad.length === 0 || partial) for (const l of lines) if (!l.includes('bad')) stored.add(l);
      return bad.length === 0 ? { kind: 'written' } : { kind: 'refused', reason: `partial write: unable to parse '${bad[0]}'` };
    },
  };
}

function batchOf(kinds: readonly boolean[]): EncodedLine[] {
  return kinds.map((good, index) => ({ index: index * 10, line: `${good ? 'ok' : 'bad'} v=${index} ${index}` }));
}

describe('bisection of a refused batch', () => {
  it('writes a clean batch in one request', async () => {
    const db = memoryDatabase(false);
    expect(await writeBisecting(batchOf([true, true, true]), db.send)).toEqual({ written: 3, rejected: [] });
    expect(db.requests).toHaveLength(1);
  });

  it('returns the refused point with the database message and writes the rest', async () => {
    const db = memoryDatabase(false);
    const result = await writeBisecting(batchOf([true, true, false, true, true]), db.send);
    expect(result.written).toBe(4);
    expect(result.rejected).toEqual([{ index: 20, reason: "partial write: unable to parse 'bad v=2 2'" }]);
    expect(db.stored.size).toBe(4);
  });

  it('sends the halves in batch order so the earlier point still wins a conflict', async () => {
    const db = memoryDatabase(false);
    await writeBisecting(batchOf([true, false, true, true]), db.send);
    const order = db.requests.filter((r) => r.every((l) => l.startsWith('ok'))).flat();
    expect(order).toEqual(['ok v=0 0', 'ok v=2 2', 'ok v=3 3']);
  });

  for (const partial of [true, false]) {
    it(`counts every point exactly once, written or rejected, when the database ${partial ? 'writes part of a refused batch (InfluxDB 1.x)' : 'refuses whole batches (InfluxDB 2)'}`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.boolean(), { maxLength: 60 }), async (kinds) => {
          const db = memoryDatabase(partial);
          const lines = batchOf(kinds);
          const result = await writeBisecting(lines, db.send);
          const good = lines.filter((l) => l.line.startsWith('ok'));
          const bad = lines.filter((l) => l.line.startsWith('bad'));
          expect(result.written).toBe(good.length);
          expect(result.rejected.map((r) => r.index)).toEqual(bad.map((l) => l.index));
          // What the database holds is exactly the good points, each once.
          expect([...db.stored].sort()).toEqual(good.map((l) => l.line).sort());
          // Bounded cost: about 2 requests per refused point per halving.
          const depth = Math.ceil(Math.log2(Math.max(2, lines.length)));
          expect(db.requests.length).toBeLessThanOrEqual(1 + 2 * bad.length * depth);
        }),
        { numRuns: 300 },
      );
    });
  }

  it('counts nothing when the database becomes unavailable halfway', async () => {
    let calls = 0;
    const failing = async (body: string): Promise<WriteAttempt> => {
      const lines = body.split('\n');
      calls += 1;
      if (calls === 1) return { kind: 'refused', reason: 'bad' };
      if (calls === 2) return { kind: 'written' };
      throw new Error(`down while sending ${lines.length}`);
    };
    await expect(writeBisecting(batchOf([true, true, false, true]), failing)).rejects.toThrow(/down while sending/);
  });
});

describe('reading a database answer', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(parseRetryAfter('30', now)).toBe(30_000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:12 GMT', now)).toBe(12_000);
    expect(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });

  it("takes the database's own words from InfluxDB 1.x, 2.x and plain-text bodies", () => {
    expect(databaseMessage('{"error":"partial write: field type conflict dropped=1"}\n')).toBe('partial write: field type conflict dropped=1');
    expect(databaseMessage('{"code":"invalid","message":"unable to parse line"}')).toBe('unable to parse line');
    expect(databaseMessage('cannot parse line\n')).toBe('cannot parse line');
  });

  it("treats a write's 204 (and 201) as written and 400, 413 and 422 as a refusal of the data", () => {
    expect(judgeAnswer({ status: 204, body: '' }, 's', now)).toEqual({ kind: 'written' });
    expect(judgeAnswer({ status: 201, body: '' }, 's', now)).toEqual({ kind: 'written' });
    for (const status of [400, 413, 422]) {
      expect(judgeAnswer({ status, body: '{"error":"nope"}' }, 's', now)).toEqual({ kind: 'refused', reason: 'nope' });
    }
  });

  it.each([
    [401, /credentials refused/],
    [403, /credentials refused/],
    [404, /not found/],
    [429, /rate limited/],
    [500, /database failed/],
    [503, /database failed/],
    [418, /unexpected answer/],
    // A 200 or 202 is not a write's answer (a proxy or login page at that address, or accepted and not stored).
    [200, /unexpected answer/],
    [202, /unexpected answer/],
  ])('treats HTTP %i as the database being unavailable, never as the data being bad', (status, message) => {
    let thrown: unknown;
    try {
      judgeAnswer({ status, body: 'why', retryAfter: '7' }, 'influxdb2 http://x', now);
    } catch (err) {
      thrown = err;
    }
    expect(isFerryError(thrown, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    if (!isFerryError(thrown)) return;
    expect(thrown.message).toMatch(message);
    expect(thrown.details).toMatchObject({ status, retryAfterMs: 7000, sink: 'influxdb2 http://x' });
  });

  it('sends a whole body first and, refused, finds the same points as bisecting its lines', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.boolean(), { maxLength: 20 }), fc.boolean(), async (kinds, partial) => {
        const lines = batchOf(kinds);
        const body: EncodedBody = { body: lines.map((l) => l.line).join('\n'), indices: lines.map((l) => l.index), rejected: [] };
        const viaBody = memoryDatabase(partial);
        const viaLines = memoryDatabase(partial);
        const splits: number[] = [];
        const result = await writeBody(body, viaBody.send, { onSplit: (size) => splits.push(size) });
        const reference = lines.length === 0 ? { written: 0, rejected: [] } : await writeBisecting(lines, viaLines.send);
        expect(result).toEqual(reference);
        expect(viaBody.stored).toEqual(viaLines.stored);
        expect(viaBody.requests).toEqual(viaLines.requests);
        // A split for each refused request of more than one line, as writeBisecting reports them.
        expect(splits).toEqual(viaBody.requests.filter((r) => r.length > 1 && r.some((l) => l.includes('bad'))).map((r) => r.length));
      }),
      { numRuns: 300 },
    );
  });

  it('sends nothing for an empty body', async () => {
    const db = memoryDatabase(false);
    expect(await writeBody({ body: '', indices: [], rejected: [] }, db.send)).toEqual({ written: 0, rejected: [] });
    expect(db.requests).toHaveLength(0);
  });
});
