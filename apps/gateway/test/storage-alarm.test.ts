// Storage failures are logged at a bounded rate, and a full disk is recognised in any of its guises.
import { describe, expect, it } from 'vitest';
import { FerryError } from '@ferry/protocol';
import { ManualClock } from '@ferry/runtime';
import { isDiskFull } from '@ferry/runtime';
import { StorageAlarm } from '../src/storage-alarm.js';

describe('StorageAlarm', () => {
  it('logs the first failure, then at most one line an interval with the count left out, and once on recovery', () => {
    const clock = new ManualClock(0);
    const alarm = new StorageAlarm(clock, 10_000);
    expect(alarm.failed()).toEqual({ log: true, suppressed: 0 });
    expect(alarm.failed()).toEqual({ log: false });
    clock.advance(5_000);
    expect(alarm.failed()).toEqual({ log: false });
    clock.advance(5_000);
    expect(alarm.failed()).toEqual({ log: true, suppressed: 2 });
    expect(alarm.failures).toBe(4);
    expect(alarm.succeeded()).toBe(true);
    expect(alarm.succeeded()).toBe(false);
    expect(alarm.failed()).toEqual({ log: true, suppressed: 0 });
  });
});

describe('isDiskFull', () => {
  it("recognises SQLite's and the OS's words for a full disk, wrapped or not", () => {
    const sqlite = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    expect(isDiskFull(sqlite)).toBe(true);
    expect(isDiskFull(new FerryError('FERRY_ERR_STORAGE', 'outbox append failed', { sqlite: 'SQLITE_FULL' }))).toBe(true);
    expect(isDiskFull(new FerryError('FERRY_ERR_STORAGE', 'wrapped', {}, { cause: Object.assign(new Error('write'), { code: 'ENOSPC' }) }))).toBe(true);
    expect(isDiskFull(Object.assign(new Error('attempt to write a readonly database'), { code: 'SQLITE_READONLY' }))).toBe(false);
  });
});
