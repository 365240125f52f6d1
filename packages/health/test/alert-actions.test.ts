// What an operator does with alerts beyond acknowledging: taking an ack back, looking up the
// silence that mutes an alert, and reading the history of resolved alerts.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@ferry/runtime';
import { HealthMonitor } from '../src/monitor.js';
import { parseRules } from '../src/rules.js';
import type { ObservedReading } from '../src/fleet.js';

const MIN = 60_000;

function setup(): { clock: ManualClock; monitor: HealthMonitor; step: (ms: number) => void; feed: (deviceId: string) => void } {
  const clock = new ManualClock(Date.now());
  const monitor = new HealthMonitor({ clock, rules: parseRules([{ name: 'offline', kind: 'device-offline' }]), defaults: { graceMs: 0, timeoutMs: '1m' } });
  const step = (ms: number): void => {
    const end = clock.now() + ms;
    monitor.tick();
    for (let guard = 0; guard < 100_000; guard++) {
      const next = monitor.nextDeadline();
      if (next === undefined || next > end) break;
      clock.set(Math.max(clock.now(), next));
      monitor.tick();
    }
    clock.set(end);
    monitor.tick();
  };
  const feed = (deviceId: string): void => {
    const reading: ObservedReading = { deviceId, kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { temp: 21 } };
    monitor.observeReading(reading);
  };
  return { clock, monitor, step, feed };
}

describe('alert actions', () => {
  it('an acknowledgement can be taken back, with who and why in the alert history', () => {
    const { monitor, step, feed } = setup();
    feed('d1');
    step(2 * MIN);
    const [alert] = monitor.alerts.list({ state: 'firing' });
    if (!alert) throw new Error('no alert');
    monitor.alerts.acknowledge(alert.id, 'alice', 'looking');
    expect(monitor.summary().alerts.acknowledged).toBe(1);
    const back = monitor.alerts.unacknowledge(alert.id, 'bob', 'not fixed, paging the owner');
    expect(back.acknowledged).toBeUndefined();
    expect(monitor.summary().alerts.acknowledged).toBe(0);
    expect(back.history.slice(-2).map((e) => [e.event, e.detail])).toEqual([
      ['acknowledged', 'alice: looking'],
      ['unacknowledged', 'bob: not fixed, paging the owner'],
    ]);
  });

  it('refuses to un-acknowledge an alert that is not active', () => {
    const { monitor } = setup();
    expect(() => monitor.alerts.unacknowledge(42, 'bob')).toThrow(/not active/);
  });

  it('names the silence muting an alert, and none once it is expired', () => {
    const { monitor, step, feed } = setup();
    feed('d1');
    const silence = monitor.alerts.silence({ matchers: { subject: 'd*' }, durationMs: 3_600_000, by: 'carol' });
    step(2 * MIN);
    const [alert] = monitor.alerts.list({ state: 'firing' });
    if (!alert) throw new Error('no alert');
    expect(monitor.alerts.silenceOf(alert)?.id).toBe(silence.id);
    monitor.alerts.expireSilence(silence.id);
    expect(monitor.alerts.silenceOf(alert)).toBeUndefined();
  });

  it('keeps resolved alerts as history, the last resolved first, filtered by rule or subject', () => {
    const { monitor, step, feed } = setup();
    feed('d1');
    feed('d2');
    step(2 * MIN);
    const firing = monitor.alerts.list({ state: 'firing' });
    expect(firing).toHaveLength(2);
    expect(monitor.alerts.history()).toEqual([]);
    feed('d2');
    step(1000);
    feed('d1');
    step(1000);
    expect(monitor.alerts.history().map((a) => a.subject.id)).toEqual(['d1', 'd2']);
    expect(monitor.alerts.history({ subject: 'd2' }).map((a) => a.state)).toEqual(['resolved']);
    expect(monitor.alerts.history({ rule: 'other' })).toEqual([]);
    expect(monitor.alerts.history({ limit: 1 })).toHaveLength(1);
    expect(monitor.alerts.historySize()).toBe(2);
  });
});
