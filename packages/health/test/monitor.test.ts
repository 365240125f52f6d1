import { describe, expect, it } from 'vitest';
import { ManualClock } from '@ferry/runtime';
import type { GatewayStatus } from '@ferry/protocol';
import { HealthMonitor } from '../src/monitor.js';
import { parseRules } from '../src/rules.js';
import type { AlertRuleInput, HealthDefaultsInput } from '../src/rules.js';
import type { AlertNotification } from '../src/alerts.js';
import type { ObservedReading } from '../src/fleet.js';

const T0 = 1_700_000_000_000;
const MIN = 60_000;

function setup(rules: AlertRuleInput[], defaults: HealthDefaultsInput = {}): { clock: ManualClock; monitor: HealthMonitor; sent: AlertNotification[]; step: (ms: number) => void } {
  const clock = new ManualClock(T0);
  const monitor = new HealthMonitor({ clock, rules: parseRules(rules), defaults: { graceMs: 0, ...defaults } });
  const sent: AlertNotification[] = [];
  // Advances time the way the I/O layer does: tick at every deadline on the way.
  const step = (ms: number): void => {
    const end = clock.now() + ms;
    sent.push(...monitor.tick()); // what was fed before the step is looked at now
    for (let guard = 0; guard < 100_000; guard++) {
      const next = monitor.nextDeadline();
      if (next === undefined || next > end) break;
      clock.set(Math.max(clock.now(), next));
      sent.push(...monitor.tick());
    }
    clock.set(end);
    sent.push(...monitor.tick());
  };
  return { clock, monitor, sent, step };
}

function reading(clock: ManualClock, deviceId: string, extra: Partial<ObservedReading> = {}): ObservedReading {
  return { deviceId, kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { temp: 21 }, ...extra };
}

function gatewayStatus(gatewayId: string, state: 'online' | 'offline', ts: number, extra: Partial<GatewayStatus> = {}): GatewayStatus {
  return { v: 1, gatewayId, state, ts, ...extra };
}

describe('device liveness and the offline alert', () => {
  it('silence leads to pending, then firing after `for`, then resolved when readings return', () => {
    const { clock, monitor, sent, step } = setup([{ name: 'offline', kind: 'device-offline', for: '2m' }], { timeoutMs: '5m' });
    monitor.observeReading(reading(clock, 'd1'));
    sent.push(...monitor.tick());
    expect(monitor.fleet.device('d1')?.liveness).toBe('online');

    step(3 * MIN);
    expect(monitor.fleet.device('d1')?.liveness).toBe('suspect');
    step(2 * MIN); // 5 min of silence: offline
    expect(monitor.fleet.device('d1')?.liveness).toBe('offline');
    expect(monitor.alerts.list({ state: 'pending' })).toHaveLength(1);
    expect(sent).toHaveLength(0);

    step(2 * MIN);
    const [firing] = monitor.alerts.list({ state: 'firing' });
    expect(firing?.subject).toEqual({ kind: 'device', id: 'd1' });
    expect(sent.map((n) => n.status)).toEqual(['firing']);

    monitor.observeReading(reading(clock, 'd1'));
    sent.push(...monitor.tick());
    expect(monitor.fleet.device('d1')?.liveness).toBe('online');
    expect(sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
    const resolved = monitor.alerts.list({ state: 'resolved' });
    expect(resolved).toHaveLength(1);
    expect(resolved[0]?.history.map((e) => e.event)).toEqual(['pending', 'firing', 'resolved']);
    expect(monitor.fleet.device('d1')?.history.map((e) => e.to)).toEqual(['online', 'suspect', 'offline', 'online']);
  });

  it('a device that comes back before `for` never fires', () => {
    const { clock, monitor, sent, step } = setup([{ name: 'offline', kind: 'device-offline', for: '5m' }], { timeoutMs: '5m' });
    monitor.observeReading(reading(clock, 'd1'));
    step(6 * MIN);
    expect(monitor.alerts.list({ state: 'pending' })).toHaveLength(1);
    monitor.observeReading(reading(clock, 'd1'));
    step(1000);
    expect(monitor.alerts.list()).toHaveLength(0);
    expect(sent).toHaveLength(0);
  });

  it('a flapping device raises one alert, not many', () => {
    const { clock, monitor, sent, step } = setup([{ name: 'offline', kind: 'device-offline', for: '1m', keepFiringFor: '10m' }], { timeoutMs: '3m', flapTransitions: 4, flapWindowMs: '30m' });
    for (let cycle = 0; cycle < 6; cycle++) {
      monitor.observeReading(reading(clock, 'd1'));
      sent.push(...monitor.tick());
      step(5 * MIN); // offline after 3 min, for 2 more
    }
    expect(monitor.fleet.device('d1')?.liveness).toBe('flapping');
    expect(sent.filter((n) => n.status === 'firing')).toHaveLength(1);
    expect(monitor.alerts.list()).toHaveLength(1);

    // Stable again: readings every minute for longer than the flap window and the hysteresis.
    for (let i = 0; i < 45; i++) {
      monitor.observeReading(reading(clock, 'd1'));
      step(MIN);
    }
    expect(monitor.fleet.device('d1')?.liveness).toBe('online');
    expect(sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
  });

  it('a status message or Last Will takes the device offline at once, ordered by arrival, not by the time it carries', () => {
    const { clock, monitor } = setup([]);
    monitor.observeReading({ ...reading(clock, 'd1'), kind: 'status', metrics: { state: 'online' } });
    monitor.tick();
    expect(monitor.fleet.device('d1')?.liveness).toBe('online');
    const connectedAt = clock.now();
    clock.advance(10_000);
    monitor.observeReading(reading(clock, 'd1'));
    clock.advance(1000);
    // The Will of this session carries the time the session began, older than its data: it still wins.
    monitor.observeReading({ ...reading(clock, 'd1'), kind: 'status', ts: connectedAt, metrics: { state: 'offline' } });
    monitor.tick();
    expect(monitor.fleet.device('d1')?.liveness).toBe('offline');
    expect(monitor.fleet.device('d1')?.history.at(-1)?.reason).toBe('status');
    // Data that arrives after it brings the device back.
    clock.advance(1000);
    monitor.observeReading(reading(clock, 'd1'));
    monitor.tick();
    expect(monitor.fleet.device('d1')?.liveness).toBe('online');
  });

  it('learns the inactivity timeout from the device reporting interval', () => {
    const { clock, monitor, step } = setup([], { timeoutMs: '1h', minTimeoutMs: '1m', intervalFactor: 3, learnAfter: 5 });
    for (let i = 0; i < 8; i++) {
      monitor.observeReading(reading(clock, 'd1'));
      step(30_000);
    }
    const d = monitor.fleet.device('d1');
    expect(d && monitor.fleet.expectedIntervalOf(d)).toBeCloseTo(30_000, -2);
    expect(d && monitor.fleet.timeoutOf(d)).toBeCloseTo(90_000, -3);
    step(2 * MIN);
    expect(monitor.fleet.device('d1')?.liveness).toBe('offline');
  });

  it('uses the timeout set for the device or its profile over the learned one', () => {
    const { clock, monitor } = setup([], { profiles: { meter: { timeoutMs: '2h' } }, devices: { m1: { profile: 'meter' }, m2: { timeoutMs: '10m' } } });
    monitor.observeReading(reading(clock, 'm1'));
    monitor.observeReading(reading(clock, 'm2'));
    const m1 = monitor.fleet.device('m1');
    const m2 = monitor.fleet.device('m2');
    expect(m1 && monitor.fleet.timeoutOf(m1)).toBe(7_200_000);
    expect(m2 && monitor.fleet.timeoutOf(m2)).toBe(600_000);
  });

  it('gives a device without overrides the default timeout, whatever its id, with or without overrides for others', () => {
    for (const devices of [{}, { m2: { timeoutMs: '10m' } }]) {
      const { clock, monitor } = setup([], { timeoutMs: '5m', devices });
      for (const id of ['m1', 'constructor', 'toString', '__proto__', 'hasOwnProperty']) {
        monitor.observeReading(reading(clock, id));
        const d = monitor.fleet.device(id);
        expect(d && monitor.fleet.timeoutOf(d)).toBe(300_000);
        expect(d?.profile).toBeUndefined();
      }
    }
  });
});

describe('device facts', () => {
  it('tracks battery, rssi, firmware, completeness from sequence gaps, skew and the gateway', () => {
    const { clock, monitor } = setup([]);
    for (const seq of [1, 2, 3, 6, 7, 8, 9, 10]) {
      monitor.observeReading(reading(clock, 'd1', { gatewayId: 'gw1', deviceSeq: seq, ts: clock.now() - 2000, metrics: { battery: 80 - seq, rssi: -70, fw: '1.2.3' } }));
      clock.advance(10_000);
    }
    const d = monitor.fleet.device('d1');
    expect(d).toMatchObject({ gatewayId: 'gw1', battery: 70, rssi: -70, firmware: '1.2.3', skewMs: 2000, received: 8, missed: 2, messages: 8 });
    const view = d && monitor.deviceView(d);
    expect(view?.completeness).toBeCloseTo(0.8);
    expect(view?.ratePerMin).toBeCloseTo(6, 0);
  });
});

describe('gateways', () => {
  it('gateway down gives one unreachable alert, not one per device', () => {
    const { clock, monitor, sent, step } = setup(
      [
        { name: 'offline', kind: 'device-offline', for: '1m' },
        { name: 'gateway-down', kind: 'gateway-offline', for: '1m', severity: 'critical' },
      ],
      { timeoutMs: '5m' },
    );
    monitor.observeGatewayStatus(gatewayStatus('gw1', 'online', clock.now()));
    for (let i = 0; i < 200; i++) monitor.observeReading(reading(clock, `d${i}`, { gatewayId: 'gw1' }));
    step(1000);
    monitor.observeGatewayStatus(gatewayStatus('gw1', 'offline', clock.now()));
    step(30 * MIN);
    expect(monitor.summary().devices.unreachable).toBe(200);
    expect(sent.map((n) => [n.status, n.alert.rule])).toEqual([['firing', 'gateway-down']]);
    expect(sent[0]?.alert.summary).toContain('200 devices unreachable');

    monitor.observeGatewayStatus(gatewayStatus('gw1', 'online', clock.now(), { outbox: { depth: 4000, bytes: 1, oldestTs: clock.now() - 30 * MIN } }));
    for (let i = 0; i < 200; i++) monitor.observeReading(reading(clock, `d${i}`, { gatewayId: 'gw1' }));
    step(1000);
    expect(monitor.summary().devices.online).toBe(200);
    expect(sent.map((n) => n.status)).toEqual(['firing', 'resolved']);
  });

  it('ignores a gateway Will of an older session, whatever time it carries', () => {
    const { clock, monitor } = setup([]);
    monitor.observeGatewayStatus(gatewayStatus('gw1', 'online', clock.now(), { epoch: 2 }));
    // The first session's Will, published by the broker after the second session connected, dated later.
    monitor.observeGatewayStatus(gatewayStatus('gw1', 'offline', clock.now() + 60_000, { epoch: 1, uplink: 'lost' }));
    expect(monitor.fleet.gateway('gw1')?.state).toBe('online');
  });

  it('alerts on a backlog older than the bound and on dropped readings', () => {
    const { clock, monitor, sent, step } = setup([
      { name: 'backlog', kind: 'gateway-backlog', olderThan: '10m' },
      { name: 'dropped', kind: 'gateway-dropped', within: '5m' },
    ]);
    monitor.observeGatewayStatus(gatewayStatus('gw1', 'online', clock.now(), { outbox: { depth: 10, bytes: 100, oldestTs: clock.now() }, dropped: {} }));
    step(9 * MIN);
    expect(sent).toHaveLength(0);
    step(2 * MIN);
    expect(sent.map((n) => n.alert.rule)).toEqual(['backlog']);
    monitor.observeGatewayStatus(gatewayStatus('gw1', 'online', clock.now(), { outbox: { depth: 0, bytes: 0, oldestTs: null }, dropped: { FERRY_ERR_OUTBOX_FULL: 3 } }));
    step(1000);
    expect(sent.map((n) => `${n.alert.rule}:${n.status}`)).toEqual(['backlog:firing', 'backlog:resolved', 'dropped:firing']);
    step(6 * MIN);
    expect(sent.map((n) => `${n.alert.rule}:${n.status}`)).toContain('dropped:resolved');
  });

  it("alerts when a gateway's disk is nearly full or refusing readings, and resolves above the clear bound", () => {
    const { clock, monitor, sent, step } = setup([{ name: 'disk', kind: 'gateway-disk', freeBelow: 0.1, clear: 0.15 }]);
    const MiB = 1_048_576;
    const status = (freeMiB: number, full = false): GatewayStatus =>
      gatewayStatus('gw1', 'online', clock.now(), { disk: { totalBytes: 100 * MiB, freeBytes: freeMiB * MiB, outboxBytes: 40 * MiB, maxBytes: 50 * MiB, reserveHeld: !full, full } });
    monitor.observeGatewayStatus(status(30));
    step(1000);
    expect(sent).toHaveLength(0);
    monitor.observeGatewayStatus(status(8));
    step(1000);
    expect(sent.map((n) => `${n.alert.rule}:${n.status}`)).toEqual(['disk:firing']);
    expect(sent[0]?.alert.summary).toContain('8.0% of its disk free');
    // Above the bound but under clear: still firing (no flapping around 10%).
    monitor.observeGatewayStatus(status(12));
    step(1000);
    expect(sent).toHaveLength(1);
    monitor.observeGatewayStatus(status(20));
    step(1000);
    expect(sent.map((n) => `${n.alert.rule}:${n.status}`)).toEqual(['disk:firing', 'disk:resolved']);
    // Commits failing on a full disk fire whatever the free share says.
    monitor.observeGatewayStatus(status(20, true));
    step(1000);
    expect(sent.at(-1)).toMatchObject({ status: 'firing' });
    expect(sent.at(-1)?.alert.summary).toContain('disk is full');
  });
});

describe('rules', () => {
  it('a metric threshold with a clear bound does not flap around the threshold', () => {
    const { clock, monitor, sent } = setup([{ name: 'battery-low', kind: 'metric-threshold', metric: 'battery', op: '<', value: 15, clear: 20 }]);
    for (const battery of [30, 14, 16, 15, 19, 14, 21]) {
      monitor.observeReading(reading(clock, 'd1', { metrics: { battery } }));
      sent.push(...monitor.tick());
      clock.advance(1000);
    }
    expect(sent.map((n) => `${n.status}:${String(n.alert.value)}`)).toEqual(['firing:14', 'resolved:21']);
  });

  it('completeness under a bound, rate drop and rising dead letters alert', () => {
    const { clock, monitor, sent, step } = setup([
      { name: 'incomplete', kind: 'completeness', below: 0.9, minSamples: 10 },
      { name: 'slow', kind: 'rate-drop', fraction: 0.5, minSamples: 5 },
      { name: 'dlq', kind: 'deadletters-rising', increase: 10, within: '5m' },
    ]);
    for (let seq = 0; seq < 20; seq++) {
      monitor.observeReading(reading(clock, 'd1', { deviceSeq: seq * (seq > 10 ? 2 : 1) }));
      step(MIN);
    }
    expect(sent.map((n) => n.alert.rule)).toContain('incomplete');
    monitor.observeReading(reading(clock, 'd2'));
    for (let i = 0; i < 10; i++) {
      monitor.observeReading(reading(clock, 'd2'));
      step(MIN);
    }
    step(5 * MIN);
    expect(sent.filter((n) => n.alert.rule === 'slow').map((n) => n.alert.subject.id)).toContain('d2');
    monitor.observeDeadLetters(0);
    step(MIN);
    monitor.observeDeadLetters(15);
    step(1000);
    expect(sent.filter((n) => n.alert.rule === 'dlq').map((n) => n.status)).toEqual(['firing']);
    step(6 * MIN);
    expect(sent.filter((n) => n.alert.rule === 'dlq').map((n) => n.status)).toEqual(['firing', 'resolved']);
  });

  it('rejects a rules file with a typo, naming the field', () => {
    expect(() => parseRules([{ name: 'x', kind: 'device-offline', forr: '1m' }])).toThrow(/FERRY_ERR_CONFIG_INVALID/);
    expect(() => parseRules([{ name: 'x', kind: 'gateway-backlog', olderThan: '10 minutes' }])).toThrow(/olderThan/);
  });
});

describe('operator actions', () => {
  it('acknowledge is recorded; a silence suppresses the notification but not the alert', () => {
    const { clock, monitor, sent, step } = setup([{ name: 'offline', kind: 'device-offline' }], { timeoutMs: '1m' });
    monitor.observeReading(reading(clock, 'd1'));
    monitor.observeReading(reading(clock, 'd2'));
    monitor.alerts.silence({ matchers: { subject: 'd2' }, durationMs: 3_600_000, by: 'ops', comment: 'maintenance' });
    step(2 * MIN);
    expect(monitor.alerts.list({ state: 'firing' }).map((a) => a.subject.id).sort()).toEqual(['d1', 'd2']);
    expect(sent.map((n) => n.alert.subject.id)).toEqual(['d1']);
    const d1 = monitor.alerts.list({ subject: 'd1' })[0];
    if (!d1) throw new Error('no alert');
    monitor.alerts.acknowledge(d1.id, 'alice', 'on it');
    expect(monitor.summary().alerts).toEqual({ firing: 2, pending: 0, acknowledged: 1 });
    expect(monitor.alerts.get(d1.id)?.history.map((e) => e.event)).toEqual(['pending', 'firing', 'acknowledged']);
    monitor.observeReading(reading(clock, 'd2'));
    step(1000);
    // d2's firing was never announced, so neither is its resolve.
    expect(sent.map((n) => `${n.alert.subject.id}:${n.status}`)).toEqual(['d1:firing']);
  });
});

describe('holding alerts', () => {
  it('holds alerts while the ingestor is cut off from the broker, and does not blame devices for it', () => {
    const { clock, monitor, sent, step } = setup([{ name: 'offline', kind: 'device-offline' }], { timeoutMs: '5m', graceMs: '2m' });
    step(3 * MIN); // past the start grace
    monitor.observeReading(reading(clock, 'd1'));
    step(1000);
    monitor.setLinks({ broker: false });
    step(30 * MIN);
    expect(monitor.fleet.device('d1')?.liveness).toBe('online');
    expect(monitor.summary().held).toBe(true);
    monitor.setLinks({ broker: true });
    step(4 * MIN);
    expect(monitor.fleet.device('d1')?.liveness).not.toBe('offline');
    expect(sent).toHaveLength(0);
    step(2 * MIN);
    expect(monitor.fleet.device('d1')?.liveness).toBe('offline');
    expect(sent).toHaveLength(1);
  });

  it('a restart does not flood: alerts wait for the grace window', () => {
    const { clock, monitor, sent, step } = setup([{ name: 'offline', kind: 'device-offline' }], { timeoutMs: '1m', graceMs: '5m' });
    for (let i = 0; i < 50; i++) monitor.observeReading(reading(clock, `d${i}`, { receivedAt: clock.now() - 10 * MIN }));
    step(3 * MIN);
    expect(monitor.summary().devices.offline).toBe(50);
    expect(sent).toHaveLength(0);
    expect(monitor.alerts.list()).toHaveLength(0);
    step(3 * MIN);
    expect(sent).toHaveLength(50);
  });
});

describe('scale', () => {
  it('holds 10,000 devices in modest memory, and evaluation follows what changed', () => {
    const { clock, monitor, step } = setup(
      [
        { name: 'offline', kind: 'device-offline', for: '1m' },
        { name: 'battery-low', kind: 'metric-threshold', metric: 'battery', op: '<', value: 15 },
      ],
      { timeoutMs: '10m' },
    );
    globalThis.gc?.();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 10_000; i++) monitor.observeReading(reading(clock, `device-${i}`, { gatewayId: `gw${i % 20}`, deviceSeq: 1, metrics: { temp: 20, battery: 90, rssi: -60 } }));
    step(1000);
    const grown = process.memoryUsage().heapUsed - before;
    expect(monitor.summary().devices.online).toBe(10_000);
    expect(grown).toBeLessThan(200 * 1024 * 1024);

    const evaluations = monitor.alerts.evaluations;
    monitor.observeReading(reading(clock, 'device-7', { gatewayId: 'gw7', deviceSeq: 2, metrics: { battery: 10 } }));
    step(1000);
    expect(monitor.alerts.evaluations - evaluations).toBeLessThanOrEqual(4);
    expect(monitor.alerts.list().map((a) => a.subject.id)).toEqual(['device-7']);
  });
});
