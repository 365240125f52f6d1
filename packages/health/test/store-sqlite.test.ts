import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '@ferry/runtime';
import { HealthMonitor } from '../src/monitor.js';
import { parseRules } from '../src/rules.js';
import { createSqliteHealthStore, flushHealth } from '../src/store-sqlite.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const rules = parseRules([
  { name: 'offline', kind: 'device-offline', for: '1m' },
  { name: 'gateway-down', kind: 'gateway-offline' },
]);

describe('sqlite health store', () => {
  it('a restart keeps device and gateway health, firing alerts, acknowledgements and silences', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-health-'));
    dirs.push(dir);
    const path = join(dir, 'health.db');
    const clock = new ManualClock(1_700_000_000_000);
    // gw1 speaks once here: its own timeout is not what this test is about.
    const first = new HealthMonitor({ clock, rules, defaults: { timeoutMs: '2m', graceMs: '1m', gatewayTimeoutMs: '1h' } });
    const store = createSqliteHealthStore({ path });
    expect(store.load()).toBeUndefined();
    clock.advance(120_000);
    first.observeGatewayStatus({ v: 1, gatewayId: 'gw1', state: 'online', ts: clock.now(), version: '1.4.0' });
    first.observeReading({ deviceId: 'd1', gatewayId: 'gw1', kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), deviceSeq: 7, metrics: { battery: 50 } });
    first.observeReading({ deviceId: 'd2', gatewayId: 'gw1', kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { t: 1 } });
    first.tick();
    clock.advance(60_000);
    first.observeReading({ deviceId: 'd2', gatewayId: 'gw1', kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { t: 1 } });
    clock.advance(120_000);
    first.tick();
    clock.advance(60_000);
    first.observeReading({ deviceId: 'd2', gatewayId: 'gw1', kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { t: 1 } });
    const sent = first.tick();
    expect(sent.map((n) => n.alert.subject.id)).toEqual(['d1']);
    const alertId = sent[0]?.alert.id ?? 0;
    first.alerts.acknowledge(alertId, 'alice');
    first.alerts.silence({ matchers: { rule: 'offline' }, durationMs: 3_600_000, by: 'bob' });
    flushHealth(first, store);
    store.close();

    clock.advance(10_000);
    const reopened = createSqliteHealthStore({ path });
    const state = reopened.load();
    expect(state).toBeDefined();
    const second = new HealthMonitor({ clock, rules, defaults: { timeoutMs: '2m', graceMs: '1m', gatewayTimeoutMs: '1h' }, ...(state ? { restore: state } : {}) });
    expect(second.fleet.device('d1')).toMatchObject({ liveness: 'offline', gatewayId: 'gw1', battery: 50, lastDeviceSeq: 7 });
    expect(second.fleet.gateway('gw1')).toMatchObject({ state: 'online', version: '1.4.0' });
    const [alert] = second.alerts.list({ state: 'firing' });
    expect(alert).toMatchObject({ id: alertId, acknowledged: { by: 'alice' }, notified: true });
    expect(second.alerts.activeSilences()).toHaveLength(1);
    expect(second.summary().held).toBe(true);
    // No re-notification of what already fired, and new alerts get new ids.
    expect(second.tick()).toEqual([]);
    second.observeReading({ deviceId: 'd1', gatewayId: 'gw1', kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { t: 1 } });
    clock.advance(61_000);
    expect(second.tick().map((n) => `${n.alert.id}:${n.status}`)).toEqual([`${alertId}:resolved`]);
    flushHealth(second, reopened);
    reopened.close();

    const third = createSqliteHealthStore({ path });
    const after = third.load();
    expect(after?.alerts.alerts.map((a) => a.state)).toEqual(['resolved']);
    expect(after?.alerts.nextId).toBeGreaterThan(alertId);
    third.close();
  });
});
