import { describe, expect, it } from 'vitest';
import type { Reading } from '@ferry/protocol';
import { checkPoint, CLOCK_UNSYNCED_FIELD, readingToPoint, withoutBadNames } from '../src/index.js';
import type { Point } from '../src/index.js';

const T = 1_700_000_000_000_000_000n;

describe('withoutBadNames', () => {
  it('leaves out only the fields and tags the name rules refuse, so the good fields are written', () => {
    const point: Point = {
      measurement: 'telemetry',
      tags: { device: 'd1', room: 'a\\', '': 'x', site: 'north' },
      fields: { good: 1, 'bad"key': 2, 'trail\\': 3, 'nul\u0000': 4, 'line\nbreak': 5, '\uD800': 6, '': 7, note: 'a\nb', ok: 'text' },
      timestampNs: T,
    };
    expect(checkPoint(point)).toBeDefined();
    const { point: clean, dropped } = withoutBadNames(point);
    expect(clean.fields).toEqual({ good: 1, ok: 'text' });
    expect(clean.tags).toEqual({ device: 'd1', site: 'north' });
    expect(dropped).toHaveLength(9);
    expect(checkPoint(clean)).toBeUndefined();
  });

  it('returns the very point when nothing is wrong, and keeps the whole-point refusals to checkPoint', () => {
    const point: Point = { measurement: 'telemetry', tags: { device: 'd1' }, fields: { t: 1 }, timestampNs: T };
    expect(withoutBadNames(point)).toEqual({ point, dropped: [] });
    const allBad = withoutBadNames({ ...point, fields: { 'a"': 1 } });
    expect(checkPoint(allBad.point)).toMatch(/double quote/);
    expect(checkPoint(withoutBadNames({ ...point, measurement: '#m' }).point)).toMatch(/comment/);
  });

  it('keeps a field named __proto__ as an ordinary key when copying', () => {
    const fields = JSON.parse('{"__proto__":1,"a\\"":2}') as Record<string, number>;
    const { point } = withoutBadNames({ measurement: 'm', tags: {}, fields, timestampNs: T });
    expect(Object.keys(point.fields)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(point.fields)).toBe(Object.prototype);
  });
});

describe('readingToPoint flags', () => {
  const reading: Reading = { seq: 3, deviceId: 'd1', kind: 'telemetry', ts: 1_700_000_000_000, tsSource: 'gateway', receivedAt: 1_700_000_000_000, metrics: { t: 1 } };

  it('marks a point whose time is the receive time because the device clock was not set', () => {
    const point = readingToPoint({ ...reading, flags: ['clock_unsynced'] }, 'gw');
    expect(point.fields).toEqual({ t: 1, [CLOCK_UNSYNCED_FIELD]: true });
    expect(point.tags).toEqual({ device: 'd1', gateway: 'gw' });
  });

  it('adds nothing to a point with no such flag (no new series, no new field)', () => {
    expect(readingToPoint(reading, 'gw').fields).toEqual({ t: 1 });
    expect(readingToPoint({ ...reading, tsSource: 'device', flags: ['sparkplug_seq_gap'] }, 'gw').fields).toEqual({ t: 1 });
  });
});
