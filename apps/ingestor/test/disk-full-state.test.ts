// The full-disk state the ingestor and the broker report (DiskFullState in @ferry/runtime): pure, on
// a manual clock.
import { describe, expect, it } from 'vitest';
import { FerryError } from '@ferry/protocol';
import { DiskFullState, isDiskFull, ManualClock } from '@ferry/runtime';

const full = (): Error => Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });

describe('isDiskFull', () => {
  it("knows a full disk in SQLite's words, the OS's, and wrapped in a FerryError", () => {
    expect(isDiskFull(full())).toBe(true);
    expect(isDiskFull(new FerryError('FERRY_ERR_SINK_UNAVAILABLE', 'write failed', { sqliteCode: 'SQLITE_FULL' }))).toBe(true);
    expect(isDiskFull(new FerryError('FERRY_ERR_STORAGE', 'journal append failed', {}, { cause: Object.assign(new Error('write'), { code: 'ENOSPC' }) }))).toBe(true);
    expect(isDiskFull(new Error('health store write failed: database or disk is full'))).toBe(true);
    expect(isDiskFull(Object.assign(new Error('attempt to write a readonly database'), { code: 'SQLITE_READONLY' }))).toBe(false);
    expect(isDiskFull('disk full')).toBe(false);
  });
});

describe('DiskFullState', () => {
  it('is full from the first refusal until every failing store wrote again and the hold passed', () => {
    const clock = new ManualClock(1_000);
    const state = new DiskFullState(clock, 10_000);
    expect(state.report()).toEqual({ full: false, since: null, lastError: null, lastErrorAt: null, stores: [], failures: 0 });

    expect(state.failed('sink', full())).toBe('began');
    clock.advance(500);
    expect(state.failed('dedupe', full())).toBe('full');
    expect(state.failed('sink', full())).toBe('full');
    expect(state.report()).toMatchObject({ full: true, since: 1_000, lastErrorAt: 1_500, stores: ['sink', 'dedupe'], failures: 3 });

    // The sink writes again; dedupe still fails, so the episode goes on.
    expect(state.succeeded('sink')).toBe(false);
    expect(state.report().stores).toEqual(['dedupe']);
    clock.advance(60_000);
    // A store still failing keeps it full, however long ago its refusal was.
    expect(state.full).toBe(true);
    // Its write ends the episode, reported once.
    expect(state.succeeded('dedupe')).toBe(true);
    expect(state.succeeded('dedupe')).toBe(false);
    expect(state.report()).toMatchObject({ full: false, since: null, lastError: 'database or disk is full', stores: [], failures: 3 });
  });

  it('stays full for the hold after the last refusal, so a small commit that still fits does not end it', () => {
    const clock = new ManualClock(0);
    const state = new DiskFullState(clock, 10_000);
    state.failed('broker.db', full());
    clock.advance(1_000);
    expect(state.succeeded('broker.db')).toBe(false);
    expect(state.full).toBe(true);
    clock.advance(9_000);
    expect(state.full).toBe(false);
    // The first write after the hold ends the episode.
    expect(state.succeeded('broker.db')).toBe(true);
    // A new episode starts at its own first refusal.
    expect(state.failed('broker.db', full())).toBe('began');
    expect(state.report().since).toBe(10_000);
  });

  it('leaves the state alone for failures that are not a full disk', () => {
    const state = new DiskFullState(new ManualClock(0));
    expect(state.failed('sink', new Error('connection refused'))).toBe('other');
    expect(state.report()).toMatchObject({ full: false, failures: 0, stores: [] });
  });
});
