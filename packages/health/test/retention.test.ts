// Retention: the fleet model and its table stay bounded. Devices silent for `forgetAfter` are
// forgotten (state, store rows, alerts), and at most `maxDevices` are tracked.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '@ferry/runtime';
import { HealthMonitor } from '../src/monitor.js';
import { parseHealthDefaults, parseRules } from '../src/rules.js';
import { createSqliteHealthStore, flushHealth } from '../src/store-sqlite.js';

const HOUR = 3_600_000;
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-retention-'));
  dirs.push(dir);
  return join(dir, 'health.db');
}

const rules = parseRules([{ name: 'offline', kind: 'device-offline', for: '1m' }]);

function monitor(clock: ManualClock, defaults: Record<string, unknown> = {}): HealthMonitor {
  return new HealthMonitor({ clock, rules, defaults: { timeoutMs: '10m', graceMs: 0, forgetAfter: '1d', ...defaults } });
}

function seen(m: HealthMonitor, clock: ManualClock, deviceId: string, gatewayId = 'gw1'): boolean {
  return m.observeReading({ deviceId, gatewayId, kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { t: 1 } });
}

describe('forgetting silent devices', () => {
  it('forgets a device not heard from for forgetAfter, and keeps one that spoke since', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const m = monitor(clock);
    seen(m, clock, 'quiet');
    seen(m, clock, 'chatty');
    m.tick();
    m.takeDirty();
    clock.advance(12 * HOUR);
    seen(m, clock, 'chatty');
    m.tick();
    clock.advance(12 * HOUR - 1);
    m.tick();
    expect(m.fleet.device('quiet')).toBeDefined();
    clock.advance(1);
    m.tick();
    expect(m.fleet.device('quiet')).toBeUndefined();
    expect(m.fleet.device('chatty')).toBeDefined();
    expect(m.fleet.devicesOf('gw1')).toBe(1);
    expect(m.fleet.retention()).toMatchObject({ forgottenDevices: 1, refused: 0 });
    expect(m.takeDirty().fleet.forgottenDevices).toEqual(['quiet']);
    expect(m.summary().devices.total).toBe(1);

    // It comes back as a new device.
    seen(m, clock, 'quiet');
    expect(m.fleet.device('quiet')?.firstSeenAt).toBe(clock.now());
    expect(m.takeDirty().fleet.forgottenDevices).toEqual([]);
  });

  it('resolves the firing alert of a device it forgets, saying why', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const m = monitor(clock);
    seen(m, clock, 'd1');
    m.tick();
    clock.advance(11 * 60_000);
    m.tick();
    clock.advance(60_000);
    expect(m.tick().map((n) => n.status)).toEqual(['firing']);
    clock.advance(24 * HOUR);
    const sent = m.tick();
    expect(sent.map((n) => [n.status, n.alert.subject.id])).toEqual([['resolved', 'd1']]);
    expect(sent[0]?.alert.history.at(-1)).toMatchObject({ event: 'resolved', detail: 'device forgotten' });
    expect(m.alerts.list({ state: 'firing' })).toEqual([]);
  });

  it('forgets nothing while the ingestor is cut off: the silence may be its own', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const m = monitor(clock);
    seen(m, clock, 'd1');
    m.tick();
    m.setLinks({ broker: false });
    clock.advance(48 * HOUR);
    m.tick();
    expect(m.fleet.device('d1')).toBeDefined();
    // Back: the device's own silence counted from before, so it goes now.
    m.setLinks({ broker: true });
    m.tick();
    expect(m.fleet.device('d1')).toBeUndefined();
  });

  it('forgets a gateway once it has no devices left and has been silent as long', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const m = monitor(clock);
    m.observeGatewayStatus({ v: 1, gatewayId: 'gw1', state: 'online', ts: clock.now() });
    m.observeGatewayStatus({ v: 1, gatewayId: 'gw-empty', state: 'online', ts: clock.now() });
    seen(m, clock, 'd1', 'gw1');
    m.tick();
    clock.advance(20 * HOUR);
    seen(m, clock, 'd1', 'gw1');
    clock.advance(5 * HOUR);
    m.tick();
    expect(m.fleet.gateway('gw-empty')).toBeUndefined();
    // gw1's status is as old, but a device still reports through it.
    expect(m.fleet.gateway('gw1')).toBeDefined();
    clock.advance(20 * HOUR);
    m.tick();
    expect(m.fleet.device('d1')).toBeUndefined();
    expect(m.fleet.gateway('gw1')).toBeUndefined();
    expect(m.fleet.retention()).toMatchObject({ forgottenDevices: 1, forgottenGateways: 2 });
  });
});

describe('the device cap', () => {
  it('refuses devices beyond maxDevices, counts them, and takes new ones once room is made', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const m = monitor(clock, { maxDevices: 2 });
    expect(seen(m, clock, 'a')).toBe(true);
    expect(seen(m, clock, 'b')).toBe(true);
    expect(seen(m, clock, 'c')).toBe(false);
    expect(seen(m, clock, 'c')).toBe(false);
    // Known devices still count.
    expect(seen(m, clock, 'a')).toBe(true);
    expect(m.fleet.device('c')).toBeUndefined();
    expect(m.fleet.full).toBe(true);
    expect(m.fleet.retention()).toMatchObject({ refused: 2 });
    clock.advance(12 * HOUR);
    seen(m, clock, 'b');
    clock.advance(13 * HOUR);
    m.tick();
    expect(m.fleet.device('a')).toBeUndefined();
    expect(seen(m, clock, 'c')).toBe(true);
    expect(m.fleet.deviceCount).toBe(2);
  });

  it('caps gateways likewise', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const m = monitor(clock, { maxGateways: 1 });
    expect(m.observeGatewayStatus({ v: 1, gatewayId: 'gw1', state: 'online', ts: clock.now() })).toBe(true);
    expect(m.observeGatewayStatus({ v: 1, gatewayId: 'gw2', state: 'online', ts: clock.now() })).toBe(false);
    expect(m.observeGatewayStatus({ v: 1, gatewayId: 'gw1', state: 'offline', ts: clock.now() + 1 })).toBe(true);
    expect(m.fleet.gateway('gw2')).toBeUndefined();
    expect(m.fleet.gateway('gw1')?.state).toBe('offline');
    expect(m.fleet.retention().refusedGateways).toBe(1);
  });

  it('has sensible defaults: 30 days, 50,000 devices, 10,000 gateways', () => {
    expect(parseHealthDefaults({})).toMatchObject({ forgetAfter: 30 * 24 * HOUR, maxDevices: 50_000, maxGateways: 10_000 });
    expect(parseHealthDefaults({ forgetAfter: '7d' }).forgetAfter).toBe(7 * 24 * HOUR);
    expect(() => parseHealthDefaults({ maxDevices: 0 })).toThrow(/maxDevices/);
  });
});

describe('retention in the store', () => {
  it('deletes the rows of forgotten devices and gateways', () => {
    const path = tempDb();
    const clock = new ManualClock(1_700_000_000_000);
    const m = monitor(clock);
    const store = createSqliteHealthStore({ path });
    m.observeGatewayStatus({ v: 1, gatewayId: 'gw-old', state: 'online', ts: clock.now() });
    seen(m, clock, 'old', 'gw-old');
    m.tick();
    flushHealth(m, store);
    clock.advance(20 * HOUR);
    seen(m, clock, 'new', 'gw-new');
    m.tick();
    flushHealth(m, store);
    clock.advance(5 * HOUR);
    m.tick();
    flushHealth(m, store);
    store.close();

    const db = new Database(path, { readonly: true });
    try {
      expect((db.prepare('SELECT id FROM devices ORDER BY id').all() as { id: string }[]).map((r) => r.id)).toEqual(['new']);
      expect((db.prepare('SELECT id FROM gateways ORDER BY id').all() as { id: string }[]).map((r) => r.id)).toEqual([]);
    } finally {
      db.close();
    }
  });

  it('after a restart with a lower maxDevices, keeps the devices heard from last and drops the rest', () => {
    const path = tempDb();
    const clock = new ManualClock(1_700_000_000_000);
    const first = monitor(clock);
    const store = createSqliteHealthStore({ path });
    for (const id of ['d1', 'd2', 'd3', 'd4']) {
      seen(first, clock, id);
      clock.advance(60_000);
    }
    first.tick();
    flushHealth(first, store);
    store.close();

    const reopened = createSqliteHealthStore({ path });
    const previous = reopened.load();
    expect(previous?.fleet.devices).toHaveLength(4);
    const second = new HealthMonitor({ clock, rules, defaults: { forgetAfter: '1d', maxDevices: 2 }, ...(previous ? { restore: previous } : {}) });
    expect([...second.fleet.devices()].map((d) => d.deviceId).sort()).toEqual(['d3', 'd4']);
    expect(second.fleet.retention().forgottenDevices).toBe(2);
    flushHealth(second, reopened);
    expect(reopened.load()?.fleet.devices.map((d) => d.deviceId).sort()).toEqual(['d3', 'd4']);
    // A restored device is forgotten on time too.
    clock.advance(24 * HOUR);
    second.tick();
    expect(second.fleet.deviceCount).toBe(0);
    reopened.close();
  });
});
