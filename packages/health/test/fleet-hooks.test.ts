// What several ingestors need of one health model to keep a fleet view in step (the ingestor's
// cluster/fleet-sync.ts): a watcher hears alerts open and end and what an operator did, acks and
// silences made elsewhere apply as they were made, a catch-up reading counts no gap, and a lost
// link to the other ingestors holds the alerts.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@ferry/runtime';
import { HealthMonitor } from '../src/monitor.js';
import { parseRules } from '../src/rules.js';
import type { AlertEngineEvent } from '../src/alerts.js';
import type { ObservedReading } from '../src/fleet.js';

const MIN = 60_000;

function setup(): { clock: ManualClock; monitor: HealthMonitor; events: AlertEngineEvent[]; feed: (deviceId: string, extra?: Partial<ObservedReading>) => void } {
  const clock = new ManualClock(Date.now());
  const monitor = new HealthMonitor({ clock, rules: parseRules([{ name: 'offline', kind: 'device-offline' }]), defaults: { graceMs: 0, timeoutMs: '1m' } });
  const events: AlertEngineEvent[] = [];
  monitor.alerts.watch((e) => events.push(e));
  const feed = (deviceId: string, extra: Partial<ObservedReading> = {}): void => {
    monitor.observeReading({ deviceId, kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { temp: 21 }, ...extra });
  };
  return { clock, monitor, events, feed };
}

describe('health model hooks for a fleet of ingestors', () => {
  it('tells a watcher when an alert opens and ends and what an operator did, but not what was applied from elsewhere', () => {
    const { clock, monitor, events, feed } = setup();
    feed('d1');
    clock.advance(2 * MIN);
    monitor.tick();
    const alert = monitor.alerts.activeByKey('offline|device|d1');
    if (!alert) throw new Error('no alert');
    monitor.alerts.acknowledge(alert.id, 'alice', 'on it');
    monitor.alerts.applyAcknowledgement(alert.key, { acknowledged: false, by: 'bob', at: clock.now() + 5 });
    const silence = monitor.alerts.silence({ matchers: { subject: 'x*' }, durationMs: MIN, by: 'carol' });
    monitor.alerts.applySilence({ ...silence, id: silence.id + 100 });
    monitor.alerts.expireSilence(silence.id);
    feed('d1');
    monitor.tick();
    expect(events.map((e) => e.type)).toEqual(['opened', 'acknowledgement', 'silenced', 'silence-expired', 'ended']);
    expect(events[1]).toMatchObject({ change: { acknowledged: true, by: 'alice', comment: 'on it', at: clock.now() } });
    // The ack taken back elsewhere shows in the history with its own time and author.
    expect(alert.history.filter((e) => e.event.endsWith('acknowledged')).map((e) => [e.event, e.detail, e.at - clock.now()])).toEqual([
      ['acknowledged', 'alice: on it', 0],
      ['unacknowledged', 'bob', 5],
    ]);
  });

  it('keeps the id of a silence made elsewhere, takes it once, and drops it when expired elsewhere', () => {
    const { clock, monitor } = setup();
    const id = clock.now() * 1000 + 7;
    const made = { id, matchers: { rule: 'offline' }, startsAt: clock.now(), endsAt: clock.now() + MIN, by: 'dave' };
    expect(monitor.alerts.applySilence(made)).toBe(true);
    expect(monitor.alerts.applySilence(made)).toBe(false);
    expect(monitor.alerts.applySilence({ ...made, id: id + 1, endsAt: clock.now() })).toBe(false);
    expect(monitor.alerts.activeSilences()).toEqual([made]);
    expect(monitor.alerts.applySilenceExpired(id)).toBe(true);
    expect(monitor.alerts.activeSilences()).toEqual([]);
  });

  it('takes silence ids from the fleet when told to', () => {
    const { monitor } = setup();
    monitor.alerts.useSilenceIds(() => 123_456_789);
    expect(monitor.alerts.silence({ matchers: { subject: 'd1' }, durationMs: MIN, by: 'erin' }).id).toBe(123_456_789);
    monitor.alerts.useSilenceIds(undefined);
    expect(monitor.alerts.silence({ matchers: { subject: 'd2' }, durationMs: MIN, by: 'erin' }).id).toBe(123_456_790);
  });

  it('a catch-up reading updates liveness and values but counts no missed readings, and an older one changes nothing', () => {
    const { clock, monitor, feed } = setup();
    feed('d1', { deviceSeq: 10, metrics: { battery: 90 } });
    clock.advance(10 * MIN);
    feed('d1', { deviceSeq: 70, metrics: { battery: 80 }, catchUp: true });
    const d = monitor.fleet.device('d1');
    expect(d).toMatchObject({ liveness: 'online', lastDataAt: clock.now(), battery: 80, lastDeviceSeq: 70, missed: 0, received: 1, intervalSamples: 0 });
    feed('d1', { deviceSeq: 40, metrics: { battery: 85 }, receivedAt: clock.now() - 5 * MIN, catchUp: true });
    expect(monitor.fleet.device('d1')).toMatchObject({ battery: 80, lastDeviceSeq: 70, lastDataAt: clock.now() });
    clock.advance(1_000);
    feed('d1', { deviceSeq: 71 });
    expect(monitor.fleet.device('d1')).toMatchObject({ missed: 0, received: 2 });
  });

  it('holds alerts while the other ingestors cannot be heard, and counts silence from their return', () => {
    const { clock, monitor, feed } = setup();
    feed('d1');
    monitor.setLinks({ peers: false });
    expect(monitor.summary().held).toBe(true);
    clock.advance(5 * MIN);
    monitor.tick();
    expect(monitor.alerts.list()).toEqual([]);
    monitor.setLinks({ peers: true });
    monitor.tick();
    expect(monitor.summary().held).toBe(false);
    expect(monitor.fleet.device('d1')?.liveness).toBe('online');
    clock.advance(2 * MIN);
    monitor.tick();
    expect(monitor.alerts.activeByKey('offline|device|d1')?.state).toBe('firing');
  });
});
