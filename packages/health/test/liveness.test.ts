// Liveness ordering and gateway timeouts, on the pure model with an injected clock: which status
// wins (by session and arrival, not by a device's or gateway's clock), a quiet gateway going
// offline, its devices unreachable and their alerts inhibited behind one gateway-offline alert.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@ferry/runtime';
import type { GatewayStatus } from '@ferry/protocol';
import { arrivedAfter, clockOffsetOf, gatewayStatusSupersedes } from '../src/liveness.js';
import { HealthMonitor } from '../src/monitor.js';
import { parseRules } from '../src/rules.js';
import type { AlertRuleInput, HealthDefaultsInput } from '../src/rules.js';
import type { AlertNotification } from '../src/alerts.js';
import type { ObservedReading } from '../src/fleet.js';

const SEC = 1000;
const MIN = 60 * SEC;

interface Setup {
  clock: ManualClock;
  monitor: HealthMonitor;
  sent: AlertNotification[];
  /** Advances time, ticking at every deadline on the way (what the ingestor's timer does). */
  step: (ms: number) => void;
}

function setup(rules: AlertRuleInput[] = [], defaults: HealthDefaultsInput = {}, clock = new ManualClock(Date.now())): Setup {
  const monitor = new HealthMonitor({ clock, rules: parseRules(rules), defaults: { graceMs: 0, ...defaults } });
  const sent: AlertNotification[] = [];
  const step = (ms: number): void => {
    const end = clock.now() + ms;
    sent.push(...monitor.tick());
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

function gw(state: 'online' | 'offline', ts: number, extra: Partial<GatewayStatus> = {}): GatewayStatus {
  return { v: 1, gatewayId: 'gw1', state, ts, uplink: state === 'online' ? 'connected' : 'lost', ...extra };
}

let seq = 1_000_000;
function fromGateway(clock: ManualClock, deviceId: string, extra: Partial<ObservedReading> = {}): ObservedReading {
  return { deviceId, gatewayId: 'gw1', seq: ++seq, kind: 'telemetry', ts: clock.now(), tsSource: 'device', receivedAt: clock.now(), metrics: { t: 1 }, ...extra };
}

const RULES: AlertRuleInput[] = [
  { name: 'device-offline', kind: 'device-offline' },
  { name: 'gateway-offline', kind: 'gateway-offline', severity: 'critical' },
];

describe('gateway status order', () => {
  it('a newer session wins, an older one never does, whatever times they carry', () => {
    expect(gatewayStatusSupersedes({ epoch: 5, state: 'online', ts: 1000 }, { epoch: 6, state: 'online', ts: 0 })).toBe(true);
    expect(gatewayStatusSupersedes({ epoch: 6, state: 'online', ts: 1000 }, { epoch: 5, state: 'offline', ts: 9999 })).toBe(false);
    expect(gatewayStatusSupersedes({ epoch: 6, state: 'offline', ts: 1000 }, { epoch: 5, state: 'online', ts: 9999 })).toBe(false);
  });

  it("a session's Will wins over that session's earlier statuses, and nothing of the session after it", () => {
    expect(gatewayStatusSupersedes({ epoch: 6, state: 'online', ts: 5000 }, { epoch: 6, state: 'offline', ts: 1000 })).toBe(true);
    expect(gatewayStatusSupersedes({ epoch: 6, state: 'offline', ts: 1000 }, { epoch: 6, state: 'online', ts: 5000 })).toBe(false);
    // Within a session, statuses are taken in arrival order: a clock stepped back changes nothing.
    expect(gatewayStatusSupersedes({ epoch: 6, state: 'online', ts: 5000 }, { epoch: 6, state: 'online', ts: 10 })).toBe(true);
  });

  it('falls back for gateways without epochs: a new Will counts, a replayed one does not', () => {
    expect(gatewayStatusSupersedes({ state: 'online', ts: 5000, offlineTs: 100 }, { state: 'offline', ts: 1000 })).toBe(true);
    expect(gatewayStatusSupersedes({ state: 'online', ts: 5000, offlineTs: 1000 }, { state: 'offline', ts: 1000 })).toBe(false);
    expect(gatewayStatusSupersedes({ state: 'online', ts: 5000 }, { state: 'online', ts: 4000 })).toBe(false);
    expect(gatewayStatusSupersedes({ state: 'offline', ts: 5000 }, { state: 'online', ts: 4000 })).toBe(true);
    // A gateway upgraded to epochs starts the order afresh.
    expect(gatewayStatusSupersedes({ state: 'online', ts: 5000 }, { epoch: 1, state: 'online', ts: 10 })).toBe(true);
  });

  it('orders device messages by the gateway seq when both have one, else by receive time', () => {
    expect(arrivedAfter({ at: 1000, seq: 11 }, { at: 5000, seq: 10 })).toBe(true);
    expect(arrivedAfter({ at: 5000, seq: 9 }, { at: 1000, seq: 10 })).toBe(false);
    expect(arrivedAfter({ at: 5000 }, { at: 1000, seq: 10 })).toBe(true);
    expect(clockOffsetOf([600_020, 600_003, 600_900])).toBe(600_003);
    expect(clockOffsetOf([])).toBe(0);
  });
});

describe('a gateway killed (its Will)', () => {
  it('goes offline at once though its Will carries its connect time; devices unreachable, one gateway alert, no device alerts', () => {
    const { clock, monitor, sent, step } = setup(RULES, { timeoutMs: '1m', minTimeoutMs: '1m' });
    const connectedAt = clock.now();
    monitor.observeGatewayStatus(gw('online', clock.now(), { epoch: 7, statusIntervalMs: 10_000 }));
    for (let i = 0; i < 6; i++) {
      for (const id of ['d1', 'd2', 'd3']) monitor.observeReading(fromGateway(clock, id));
      step(10 * SEC);
      monitor.observeGatewayStatus(gw('online', clock.now(), { epoch: 7, statusIntervalMs: 10_000 }));
    }
    // The broker publishes the Will registered at connect: the session's epoch, its connect time.
    monitor.observeGatewayStatus(gw('offline', connectedAt, { epoch: 7 }));
    step(SEC);
    expect(monitor.fleet.gateway('gw1')).toMatchObject({ state: 'offline' });
    expect(monitor.fleet.gateway('gw1')?.history.at(-1)).toMatchObject({ to: 'offline', reason: 'will' });
    for (const id of ['d1', 'd2', 'd3']) expect(monitor.fleet.device(id)?.liveness).toBe('unreachable');
    // Their own timeouts stopped: long after, still unreachable, never offline, never alerted.
    step(30 * MIN);
    for (const id of ['d1', 'd2', 'd3']) expect(monitor.fleet.device(id)?.liveness).toBe('unreachable');
    expect(sent.map((n) => `${n.alert.rule}:${n.alert.subject.id}:${n.status}`)).toEqual(['gateway-offline:gw1:firing']);
    expect(monitor.summary().devices).toMatchObject({ unreachable: 3, offline: 0 });

    // Back with a new session: devices resume with a fresh timeout, no storm.
    monitor.observeGatewayStatus(gw('online', clock.now(), { epoch: 8, statusIntervalMs: 10_000 }));
    step(SEC);
    for (const id of ['d1', 'd2', 'd3']) expect(monitor.fleet.device(id)?.liveness).toBe('online');
    for (let i = 0; i < 3; i++) {
      for (const id of ['d1', 'd2', 'd3']) monitor.observeReading(fromGateway(clock, id));
      step(10 * SEC);
      monitor.observeGatewayStatus(gw('online', clock.now(), { epoch: 8, statusIntervalMs: 10_000 }));
    }
    expect(sent.map((n) => `${n.alert.rule}:${n.status}`)).toEqual(['gateway-offline:firing', 'gateway-offline:resolved']);
  });

  it('a retained Will of an old session, replayed to a restarted ingestor, does not override the newer online', () => {
    const first = setup(RULES);
    first.monitor.observeGatewayStatus(gw('online', first.clock.now(), { epoch: 7, statusIntervalMs: 10_000 }));
    first.monitor.observeGatewayStatus(gw('offline', first.clock.now() - 5 * SEC, { epoch: 7 }));
    first.monitor.observeGatewayStatus(gw('online', first.clock.now(), { epoch: 9, statusIntervalMs: 10_000 }));
    first.step(SEC);
    const saved = { fleet: { devices: [...first.monitor.fleet.devices()], gateways: [...first.monitor.fleet.gateways()] }, alerts: first.monitor.alerts.snapshot() };
    const restarted = new HealthMonitor({ clock: first.clock, rules: parseRules(RULES), defaults: { graceMs: 0 }, restore: JSON.parse(JSON.stringify(saved)) as typeof saved });
    // What a broker may replay: the old session's Will, dated later by a clock that moved on.
    restarted.observeGatewayStatus(gw('offline', first.clock.now() + 10 * MIN, { epoch: 7 }));
    restarted.tick();
    expect(restarted.fleet.gateway('gw1')?.state).toBe('online');
  });

  it('after a restart with the gateway gone meanwhile, its retained Will of the same session shows it offline', () => {
    const first = setup(RULES);
    first.monitor.observeGatewayStatus(gw('online', first.clock.now(), { epoch: 7, statusIntervalMs: 10_000 }));
    first.monitor.observeReading(fromGateway(first.clock, 'd1'));
    first.step(SEC);
    const saved = JSON.parse(JSON.stringify({ fleet: { devices: [...first.monitor.fleet.devices()], gateways: [...first.monitor.fleet.gateways()] }, alerts: first.monitor.alerts.snapshot() })) as {
      fleet: { devices: never[]; gateways: never[] };
      alerts: ReturnType<HealthMonitor['alerts']['snapshot']>;
    };
    first.clock.advance(5 * MIN);
    const restarted = new HealthMonitor({ clock: first.clock, rules: parseRules(RULES), defaults: { graceMs: 0 }, restore: saved });
    restarted.observeGatewayStatus(gw('offline', first.clock.now() - 10 * MIN, { epoch: 7 }));
    restarted.tick();
    expect(restarted.fleet.gateway('gw1')?.state).toBe('offline');
    expect(restarted.fleet.device('d1')?.liveness).toBe('unreachable');
  });

  it('after a restart with no word at all from the gateway, it times out offline', () => {
    const first = setup(RULES);
    first.monitor.observeGatewayStatus(gw('online', first.clock.now(), { epoch: 7, statusIntervalMs: 10_000 }));
    first.step(SEC);
    const saved = JSON.parse(JSON.stringify({ fleet: { devices: [], gateways: [...first.monitor.fleet.gateways()] }, alerts: first.monitor.alerts.snapshot() })) as {
      fleet: { devices: never[]; gateways: never[] };
      alerts: ReturnType<HealthMonitor['alerts']['snapshot']>;
    };
    const restarted = new HealthMonitor({ clock: first.clock, rules: parseRules(RULES), defaults: { graceMs: 0 }, restore: saved });
    expect(restarted.fleet.gateway('gw1')?.state).toBe('online');
    for (let t = 0; t < 40; t++) {
      first.clock.advance(SEC);
      restarted.tick();
    }
    expect(restarted.fleet.gateway('gw1')?.history.at(-1)).toMatchObject({ to: 'offline', reason: 'timeout' });
  });
});

describe('a gateway gone quiet', () => {
  it('is offline after 3 status intervals, its devices unreachable; it comes back with its next status', () => {
    const { clock, monitor, sent, step } = setup(RULES, { timeoutMs: '1m', minTimeoutMs: '1m' });
    monitor.observeGatewayStatus(gw('online', clock.now(), { epoch: 1, statusIntervalMs: 5_000 }));
    monitor.observeReading(fromGateway(clock, 'd1'));
    step(5 * SEC);
    expect(monitor.fleet.gatewayTimeoutOf(monitor.fleet.gateway('gw1')!)).toBe(15_000);
    expect(monitor.fleet.gateway('gw1')?.state).toBe('online');
    step(11 * SEC);
    expect(monitor.fleet.gateway('gw1')?.history.at(-1)).toMatchObject({ to: 'offline', reason: 'timeout' });
    expect(monitor.fleet.device('d1')?.liveness).toBe('unreachable');
    step(10 * MIN);
    expect(monitor.fleet.device('d1')?.liveness).toBe('unreachable');
    // The same session speaks again (it was only cut off): online, its device rebased.
    monitor.observeGatewayStatus(gw('online', clock.now(), { epoch: 1, statusIntervalMs: 5_000 }));
    step(SEC);
    expect(monitor.fleet.gateway('gw1')?.state).toBe('online');
    expect(monitor.fleet.device('d1')?.liveness).toBe('online');
    expect(sent.filter((n) => n.alert.rule === 'device-offline')).toEqual([]);
  });

  it('uses the default timeout for a gateway that does not say its interval, and no timeout while the ingestor is cut off', () => {
    const { clock, monitor, step } = setup(RULES, { gatewayTimeoutMs: '90s' });
    monitor.observeGatewayStatus(gw('online', clock.now()));
    step(80 * SEC);
    monitor.setLinks({ broker: false });
    step(10 * MIN);
    expect(monitor.fleet.gateway('gw1')?.state).toBe('online');
    monitor.setLinks({ broker: true });
    step(80 * SEC);
    expect(monitor.fleet.gateway('gw1')?.state).toBe('online');
    step(20 * SEC);
    expect(monitor.fleet.gateway('gw1')?.state).toBe('offline');
  });

  it("inhibits a device's firing alert while the gateway is offline: no resolve, no new alerts", () => {
    const { clock, monitor, sent, step } = setup(RULES, { timeoutMs: '1m', minTimeoutMs: '1m' });
    const status = (): boolean => monitor.observeGatewayStatus(gw('online', clock.now(), { epoch: 3, statusIntervalMs: 10_000 }));
    status();
    monitor.observeReading(fromGateway(clock, 'dead'));
    monitor.observeReading(fromGateway(clock, 'alive'));
    for (let i = 0; i < 12; i++) {
      monitor.observeReading(fromGateway(clock, 'alive'));
      step(10 * SEC);
      status();
    }
    expect(sent.map((n) => `${n.alert.subject.id}:${n.status}`)).toEqual(['dead:firing']);
    monitor.observeGatewayStatus(gw('offline', clock.now() - 5 * MIN, { epoch: 3 }));
    step(10 * MIN);
    expect(sent.map((n) => `${n.alert.subject.id}:${n.status}`)).toEqual(['dead:firing', 'gw1:firing']);
    expect(monitor.alerts.list({ state: 'firing' }).map((a) => a.subject.id).sort()).toEqual(['dead', 'gw1']);
    monitor.observeGatewayStatus(gw('online', clock.now(), { epoch: 4, statusIntervalMs: 10_000 }));
    monitor.observeReading(fromGateway(clock, 'alive'));
    step(SEC);
    // The dead device is still offline (it was before the gateway went): its alert simply goes on.
    expect(monitor.fleet.device('dead')?.liveness).toBe('offline');
    expect(sent.map((n) => `${n.alert.subject.id}:${n.status}`)).toEqual(['dead:firing', 'gw1:firing', 'gw1:resolved']);
  });
});

describe('device status order', () => {
  it("takes a device's Will at arrival even though its time is older than the session's online", () => {
    const { clock, monitor, step } = setup([], { timeoutMs: '10m' });
    const connectedAt = clock.now();
    monitor.observeReading(fromGateway(clock, 'd1', { kind: 'status', metrics: { state: 'online' } }));
    step(30 * SEC);
    monitor.observeReading(fromGateway(clock, 'd1'));
    step(30 * SEC);
    monitor.observeReading(fromGateway(clock, 'd1', { kind: 'status', ts: connectedAt, metrics: { state: 'offline' } }));
    step(SEC);
    expect(monitor.fleet.device('d1')).toMatchObject({ liveness: 'offline', raw: 'offline' });
    expect(monitor.fleet.device('d1')?.history.at(-1)).toMatchObject({ to: 'offline', reason: 'status' });
  });

  it('a batch that settles late does not undo what arrived after it at the gateway', () => {
    const { clock, monitor, step } = setup([], { timeoutMs: '10m' });
    const online = fromGateway(clock, 'd1', { kind: 'status', metrics: { state: 'online' } });
    const data = fromGateway(clock, 'd1');
    const will = fromGateway(clock, 'd1', { kind: 'status', metrics: { state: 'offline' } });
    // The Will's batch reaches the database first; the earlier ones settle after it, same receive ms.
    monitor.observeReading(will);
    monitor.observeReading(online);
    monitor.observeReading(data);
    step(SEC);
    expect(monitor.fleet.device('d1')?.liveness).toBe('offline');
    monitor.observeReading(fromGateway(clock, 'd1'));
    step(SEC);
    expect(monitor.fleet.device('d1')?.liveness).toBe('online');
  });

  it('a gateway clock 10 minutes behind or ahead does not make its devices look silent or fresh', () => {
    for (const skew of [-10 * MIN, 10 * MIN]) {
      const { clock, monitor, step } = setup([], { timeoutMs: '1m', minTimeoutMs: '1m' });
      const gatewayNow = (): number => clock.now() + skew;
      for (let i = 0; i < 5; i++) {
        monitor.observeGatewayStatus(gw('online', gatewayNow(), { epoch: 1, statusIntervalMs: 10_000 }));
        monitor.observeReading(fromGateway(clock, 'd1', { ts: gatewayNow(), tsSource: 'gateway', receivedAt: gatewayNow() }));
        step(10 * SEC);
      }
      expect(monitor.fleet.device('d1')?.liveness).toBe('online');
      expect(Math.abs((monitor.fleet.gateway('gw1')?.clockOffsetMs ?? 0) + skew)).toBeLessThan(11 * SEC);
      // Silent from here (its gateway still speaking): offline after its timeout by our clock.
      const quietFor = (ms: number): void => {
        for (let t = 0; t < ms; t += 10 * SEC) {
          step(10 * SEC);
          monitor.observeGatewayStatus(gw('online', gatewayNow(), { epoch: 1, statusIntervalMs: 10_000 }));
        }
      };
      quietFor(30 * SEC);
      expect(monitor.fleet.device('d1')?.liveness).toBe('suspect');
      quietFor(30 * SEC);
      step(SEC);
      expect(monitor.fleet.device('d1')?.liveness).toBe('offline');
    }
  });
});
