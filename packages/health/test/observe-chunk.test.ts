// A confirmed chunk taken at once (observeReadings: one clock read, each device's deadline worked
// out once) must leave the model exactly as the same readings taken one by one (observeReading):
// liveness, history, counters, deadlines, alerts and what is marked changed.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ManualClock } from '@ferry/runtime';
import type { GatewayStatus } from '@ferry/protocol';
import { HealthMonitor } from '../src/monitor.js';
import { parseRules } from '../src/rules.js';
import type { ObservedReading } from '../src/fleet.js';

const RULES = parseRules([
  { name: 'device-offline', kind: 'device-offline', for: '1m', severity: 'warning' },
  { name: 'low-battery', kind: 'metric-threshold', metric: 'battery', op: '<', value: 20, for: '0s', severity: 'warning' },
]);
const DEFAULTS = { graceMs: 0, timeoutMs: 60_000, maxDevices: 4, flapWindowMs: 600_000, flapTransitions: 3, learnAfter: 2 };

type Step =
  | { readonly kind: 'chunk'; readonly readings: readonly ObservedReading[] }
  | { readonly kind: 'advance'; readonly ms: number }
  | { readonly kind: 'gateway'; readonly gatewayId: string; readonly state: 'online' | 'offline' };

const reading: fc.Arbitrary<ObservedReading> = fc.record({
  deviceId: fc.constantFrom('d1', 'd2', 'd3', 'd4', 'd5', 'd6'),
  gatewayId: fc.option(fc.constantFrom('gw1', 'gw2'), { nil: undefined }),
  seq: fc.option(fc.integer({ min: 0, max: 50 }), { nil: undefined }),
  kind: fc.constantFrom('telemetry' as const, 'telemetry' as const, 'status' as const),
  ts: fc.integer({ min: -120_000, max: 0 }),
  tsSource: fc.constantFrom('device' as const, 'gateway' as const),
  receivedAt: fc.integer({ min: -300_000, max: 5_000 }),
  deviceSeq: fc.option(fc.integer({ min: 0, max: 30 }), { nil: undefined }),
  metrics: fc.oneof(
    fc.record({ t: fc.double({ noNaN: true }), battery: fc.integer({ min: 0, max: 100 }) }),
    fc.record({ state: fc.constantFrom('online', 'offline') }),
    fc.record({ fw: fc.string({ maxLength: 3 }), rssi: fc.integer({ min: -90, max: -30 }) }),
  ),
  catchUp: fc.option(fc.boolean(), { nil: undefined }),
});

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('chunk' as const), readings: fc.array(reading, { maxLength: 12 }) }),
  fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 90_000 }) }),
  fc.record({ kind: fc.constant('gateway' as const), gatewayId: fc.constantFrom('gw1', 'gw2'), state: fc.constantFrom('online' as const, 'offline' as const) }),
);

/** Runs the steps on a fresh monitor, taking each chunk at once or one reading at a time. */
function run(steps: readonly Step[], atOnce: boolean): unknown {
  const start = 1_700_000_000_000;
  const clock = new ManualClock(start);
  const monitor = new HealthMonitor({ clock, rules: RULES, defaults: DEFAULTS });
  const taken: boolean[][] = [];
  const notifications: unknown[] = [];
  for (const s of steps) {
    if (s.kind === 'advance') {
      clock.set(clock.now() + s.ms);
      notifications.push(monitor.tick());
    } else if (s.kind === 'gateway') {
      const status: GatewayStatus = { v: 1, gatewayId: s.gatewayId, state: s.state, ts: clock.now(), uplink: s.state === 'online' ? 'connected' : 'lost', statusIntervalMs: 10_000 };
      monitor.observeGatewayStatus(status, clock.now());
    } else {
      const readings = s.readings.map((r) => ({ ...r, ts: clock.now() + r.ts, receivedAt: clock.now() + r.receivedAt }));
      taken.push(atOnce ? monitor.observeReadings(readings) : readings.map((r) => monitor.observeReading(r)));
      notifications.push(monitor.tick());
    }
  }
  return {
    devices: [...monitor.fleet.devices()],
    gateways: [...monitor.fleet.gateways()],
    nextDeadline: monitor.nextDeadline(),
    retention: monitor.fleet.retention(),
    changes: monitor.fleet.takeChanges(),
    dirty: monitor.takeDirty(),
    alerts: monitor.alerts.list(),
    taken,
    notifications,
  };
}

describe('a confirmed chunk taken at once', () => {
  it('leaves the model as the same readings taken one by one', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 25 }), (steps) => {
        expect(run(steps, true)).toEqual(run(steps, false));
      }),
      { numRuns: 400 },
    );
  });

  it('refuses a new device at maxDevices within a chunk as one by one does, and counts it', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const monitor = new HealthMonitor({ clock, rules: RULES, defaults: { ...DEFAULTS, maxDevices: 2 } });
    const r = (deviceId: string): ObservedReading => ({ deviceId, kind: 'telemetry', ts: clock.now(), tsSource: 'gateway', receivedAt: clock.now(), metrics: { t: 1 } });
    expect(monitor.observeReadings([r('a'), r('b'), r('c'), r('a')])).toEqual([true, true, false, true]);
    expect(monitor.fleet.retention().refused).toBe(1);
    expect(monitor.fleet.device('a')?.messages).toBe(2);
  });
});
