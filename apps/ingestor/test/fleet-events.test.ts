// The fleet view's wire formats and rules (cluster/fleet-events.ts), without Redis: a written
// reading survives the trip as the model and the device page take it, in fewer bytes; the newest
// reading per device is picked by arrival; acks resolve ties alike on every member; silence ids
// do not collide; an ingestor's own alerts stay its own.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@ferry/runtime';
import { observationsOf } from '../src/health.js';
import type { WrittenReading } from '../src/health.js';
import {
  ackSupersedes,
  decodeAck,
  decodeLastSeen,
  encodeAck,
  encodeLastSeen,
  fleetAlertKey,
  fleetSilenceIds,
  fromWire,
  newestPerDevice,
  parseWrittenMessage,
  toWire,
  writtenMessageSchema,
} from '../src/cluster/fleet-events.js';
import type { AckRecord, WireReading } from '../src/cluster/fleet-events.js';

const policy = { firmwareFields: ['fw'] };

describe('fleet wire formats', () => {
  it('carries a written reading to another member as the model and the device page take it, leaving out strings neither reads', () => {
    const now = Date.now();
    const items: WrittenReading[] = [
      { gatewayId: 'gw1', origin: 'gateway', reading: { deviceId: 'pump-1', seq: 7, kind: 'telemetry', ts: now - 10, tsSource: 'device', receivedAt: now, deviceSeq: 3, flags: ['late'], metrics: { temp: 21, on: true, fw: '1.2', note: 'long text' } } },
      { gatewayId: 'gw1', origin: 'gateway', reading: { deviceId: 'pump-1', kind: 'status', ts: now, tsSource: 'gateway', receivedAt: now + 1, metrics: { state: 'offline', reason: 'will' } } },
      { gatewayId: 'ignored', origin: 'direct', reading: { deviceId: 'pump-2', kind: 'telemetry', ts: now, tsSource: 'gateway', receivedAt: now, metrics: { temp: 5 } }, point: { measurement: 'm', tags: {}, fields: { temp: 41 }, timestampNs: BigInt(now) * 1_000_000n } },
      { gatewayId: 'gw1', origin: 'gateway', reading: { deviceId: 'pump-3', kind: 'telemetry', ts: now, tsSource: 'gateway', receivedAt: now, metrics: { temp: 5 } }, point: null },
    ];
    const own = observationsOf(items);
    const wire = own.readings.map((reading, i) => toWire({ reading, recent: own.recent[i] }, policy));
    const message = writtenMessageSchema.parse(JSON.parse(JSON.stringify({ v: 1, from: 'a', r: wire })));
    const theirs = message.r.map((w) => fromWire(w, { catchUp: false, withRecent: true }));

    expect(theirs[0]).toEqual({
      reading: { deviceId: 'pump-1', gatewayId: 'gw1', seq: 7, kind: 'telemetry', ts: now - 10, tsSource: 'device', receivedAt: now, deviceSeq: 3, metrics: { temp: 21, on: true, fw: '1.2' } },
      recent: { ts: now - 10, kind: 'telemetry', metrics: { temp: 21, on: true, fw: '1.2' }, flags: ['late'] },
    });
    expect(theirs[1]?.reading.metrics).toEqual({ state: 'offline' });
    // Processed values on the page, the reading as received for the model; no gateway for a direct device.
    expect(theirs[2]).toMatchObject({ reading: { deviceId: 'pump-2', gatewayId: undefined, metrics: { temp: 5 } }, recent: { metrics: { temp: 41 } } });
    // Nothing written raw: nothing on the page.
    expect(theirs[3]?.recent).toBeUndefined();
    expect(fromWire(wire[0] as WireReading, { catchUp: true, withRecent: false })).toEqual({ reading: expect.objectContaining({ catchUp: true }) });
  });

  it('reads a written-readings message on the fast path as the schema would, and refuses a broken one with the schema\'s complaint', () => {
    const reading: WireReading = { d: 'x', g: 'gw', s: 1, k: 't', ts: 1, src: 'd', at: 2, ds: 3, m: { a: 1, b: true, fw: 'v' }, r: { ts: 1, m: { a: 2 }, f: ['late'] } };
    const text = JSON.stringify({ v: 1, from: 'a', c: true, r: [reading, { ...reading, g: undefined, r: undefined }] });
    const fast = parseWrittenMessage(text);
    expect(fast).toEqual({ message: writtenMessageSchema.parse(JSON.parse(text)) });
    expect(parseWrittenMessage(JSON.stringify({ v: 1, from: 'a', r: [{ ...reading, k: 'x' }] }))).toEqual({ issue: expect.any(String) });
    expect(parseWrittenMessage(JSON.stringify({ v: 1, from: 'a', r: [{ ...reading, m: { a: null } }] }))).toEqual({ issue: expect.any(String) });
    expect(parseWrittenMessage('{"v":2')).toEqual({ issue: expect.any(String) });
  });

  it('keeps the newest reading per device by arrival, and the last-seen value round-trips', () => {
    const base: WireReading = { d: 'x', k: 't', ts: 1, src: 'g', at: 100, m: {} };
    const newest = newestPerDevice([
      { ...base, at: 100, s: 2 },
      { ...base, at: 100, s: 1 },
      { ...base, d: 'y', at: 50 },
      { ...base, d: 'y', at: 40 },
    ]);
    expect([...newest.values()].map((r) => [r.d, r.at, r.s])).toEqual([
      ['x', 100, 2],
      ['y', 50, undefined],
    ]);
    const value = encodeLastSeen({ ...base, at: 1234.5 });
    expect(value.startsWith('1234.5 ')).toBe(true);
    expect(decodeLastSeen(value)).toEqual({ ...base, at: 1234.5 });
    expect(decodeLastSeen('garbage')).toBeUndefined();
  });

  it('lets the later ack win, and a tie go to the same member everywhere', () => {
    const a: AckRecord = { acknowledged: true, by: 'alice', at: 10, from: 'ing-a' };
    const b: AckRecord = { acknowledged: false, by: 'bob', at: 10, from: 'ing-b' };
    expect(ackSupersedes(a, undefined)).toBe(true);
    expect(ackSupersedes({ ...a, at: 11 }, b)).toBe(true);
    expect(ackSupersedes(b, a)).toBe(true);
    expect(ackSupersedes(a, b)).toBe(false);
    expect(decodeAck(encodeAck(a))).toEqual(a);
  });

  it('makes silence ids that do not repeat, even within one millisecond', () => {
    const clock = new ManualClock(Date.now());
    const next = fleetSilenceIds(clock, () => 0.5);
    const ids = [next(), next(), next()];
    expect(new Set(ids).size).toBe(3);
    expect(ids.every((id) => Number.isSafeInteger(id) && id > clock.now())).toBe(true);
  });

  it('names an alert alike on every member, except an ingestor\'s own', () => {
    expect(fleetAlertKey({ key: 'offline|device|d1', subject: { kind: 'device', id: 'd1' } }, 'ing-a')).toBe('offline|device|d1');
    expect(fleetAlertKey({ key: 'dl|ingestor|ingestor', subject: { kind: 'ingestor', id: 'ingestor' } }, 'ing-a')).toBe('dl|ingestor|ingestor|ing-a');
  });
});
