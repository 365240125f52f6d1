// What a device keeps of its readings' metrics: the latest battery, rssi and firmware (health.defaults
// fields) and the latest value of each metric a rule names or that is a battery or rssi field, and
// nothing else. The model looks each name up once (fleet.ts fieldRolesOf); this holds it to the
// rules as written out plainly below, for field lists that overlap.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ManualClock } from '@ferry/runtime';
import type { MetricValue } from '@ferry/protocol';
import { HealthMonitor } from '../src/monitor.js';
import { parseRules } from '../src/rules.js';

// `level` is a battery and an rssi field, `fw` firmware and rssi; `vbat` battery and named by a rule.
const FIELDS = { battery: ['battery', 'level', 'vbat'], rssi: ['rssi', 'level', 'fw'], firmware: ['firmware', 'fw'] };
const RULES = parseRules([
  { name: 'hot', kind: 'metric-threshold', metric: 'temp', op: '>', value: 80 },
  { name: 'weak-battery', kind: 'metric-threshold', metric: 'vbat', op: '<', value: 3 },
]);
const WATCHED = new Set(['temp', 'vbat']);
const NAMES = ['battery', 'level', 'vbat', 'rssi', 'fw', 'firmware', 'temp', 'humidity', 'state'];

interface Kept {
  battery?: number;
  rssi?: number;
  firmware?: string;
  metrics: Record<string, number>;
}

/** The rules, spelled out: each reading in order, each metric in its order. */
function expected(readings: readonly Record<string, MetricValue>[]): Kept {
  const kept: Kept = { metrics: {} };
  for (const metrics of readings) {
    for (const [name, value] of Object.entries(metrics)) {
      if (typeof value === 'number') {
        if (FIELDS.battery.includes(name)) kept.battery = value;
        else if (FIELDS.rssi.includes(name)) kept.rssi = value;
        if (WATCHED.has(name) || FIELDS.battery.includes(name) || FIELDS.rssi.includes(name)) kept.metrics[name] = value;
      } else if (typeof value === 'string' && FIELDS.firmware.includes(name)) kept.firmware = value;
    }
  }
  return kept;
}

const value: fc.Arbitrary<MetricValue> = fc.oneof(fc.integer({ min: -100, max: 100 }), fc.constantFrom('1.0.2', 'x'), fc.boolean());
const metrics = fc.dictionary(fc.constantFrom(...NAMES), value, { maxKeys: 5 });

describe('the metrics a device keeps', () => {
  it('are the latest battery, rssi, firmware and watched values, whatever the chunks', () => {
    fc.assert(
      fc.property(fc.array(fc.array(metrics, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 4 }), (chunks) => {
        const clock = new ManualClock(1_700_000_000_000);
        const monitor = new HealthMonitor({ clock, rules: RULES, defaults: { fields: FIELDS } });
        for (const chunk of chunks) {
          monitor.observeReadings(chunk.map((m) => ({ deviceId: 'd1', kind: 'telemetry', ts: clock.now(), tsSource: 'gateway', receivedAt: clock.now(), metrics: m })));
          clock.advance(1000);
        }
        const d = monitor.fleet.device('d1');
        const { battery, rssi, firmware, metrics: kept } = d ?? { metrics: undefined };
        expect({ battery, rssi, firmware, metrics: kept }).toEqual(expected(chunks.flat()));
      }),
      { numRuns: 300 },
    );
  });

  it('keeps nothing of a metric no rule or field names', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const monitor = new HealthMonitor({ clock, rules: RULES, defaults: { fields: FIELDS } });
    monitor.observeReadings([{ deviceId: 'd1', kind: 'telemetry', ts: clock.now(), tsSource: 'gateway', receivedAt: clock.now(), metrics: { humidity: 40, level: 7, fw: '2.1', temp: 21 } }]);
    const d = monitor.fleet.device('d1');
    // `level` is a battery field first; `fw` as a string is firmware, not rssi.
    expect(d).toMatchObject({ battery: 7, firmware: '2.1', metrics: { level: 7, temp: 21 } });
    expect(d?.rssi).toBeUndefined();
    expect(d?.metrics).not.toHaveProperty('humidity');
  });
});
