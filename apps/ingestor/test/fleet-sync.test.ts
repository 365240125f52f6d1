// One fleet view across ingestors (cluster/fleet-sync.ts) on a real redis-server: two (or three)
// ingestor health models, each with its own health.db and its own fleet sync, as the ingestor
// wires them. Health time is one ManualClock started at the real time of the run; Redis, sockets
// and timers are real. A missing redis-server fails the test (testkit never skips).
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, recordingLogger, silentLogger } from '@ferry/runtime';
import { makeTempDir, startRedis, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import type { Alert } from '@ferry/health';
import { createIngestorHealth, healthConfigSchema } from '../src/health.js';
import type { IngestorHealth, WrittenReading } from '../src/health.js';
import { connectRedis } from '../src/cluster/redis.js';
import type { RedisClient } from '../src/cluster/redis.js';
import { createFleetSync } from '../src/cluster/fleet-sync.js';
import type { FleetSync } from '../src/cluster/fleet-sync.js';
import { fleetKeys } from '../src/cluster/fleet-events.js';
import { CLAIM_LUA } from '../src/cluster/fleet-scripts.js';
import { defineScript } from '../src/cluster/redis.js';

const PREFIX = 'ferry:';
const WAIT = { timeoutMs: 20_000 } as const;

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function redisServer(persistent = false): Promise<ServerHandle> {
  const server = await startRedis({ persistent });
  cleanups.push(() => server.stop());
  return server;
}

function client(url: string, clock: ManualClock, name: string): RedisClient {
  const redis = connectRedis({ url, name, logger: silentLogger(), clock });
  cleanups.push(() => redis.disconnect());
  return redis;
}

interface Member {
  readonly name: string;
  readonly health: IngestorHealth;
  readonly sync: FleetSync;
  /** The member's log lines: the log notifier writes `alert firing: ...` / `alert resolved: ...`. */
  readonly lines: Record<string, unknown>[];
  /** Writes a reading as the ingestor does: the own model first, then the fleet. */
  write(deviceId: string, metrics?: Record<string, number>): void;
  alert(deviceId: string): Alert | undefined;
}

async function member(name: string, url: string, clock: ManualClock): Promise<Member> {
  const dataDir = await makeTempDir(`fleet-${name}`);
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const { logger, lines } = recordingLogger('info');
  const config = healthConfigSchema.parse({
    tickMs: 20,
    flushIntervalMs: 1000,
    defaults: { timeoutMs: '1m', graceMs: 0 },
    rules: [{ name: 'device-offline', kind: 'device-offline', severity: 'critical' }],
    notifiers: { log: true },
  });
  const health = createIngestorHealth({ config, dataDir, brokerUrl: 'mqtt://127.0.0.1:1', clock, logger, links: () => ({ broker: true, sink: true }), deadLetters: () => 0 });
  cleanups.push(() => health.close());
  await health.start();
  const sync = createFleetSync({
    redis: client(url, clock, `${name}-state`),
    subscriber: client(url, clock, `${name}-fleet-events`),
    keyPrefix: PREFIX,
    memberId: name,
    health,
    clock,
    logger: silentLogger(),
  });
  cleanups.push(() => sync.close());
  await sync.start();
  return {
    name,
    health,
    sync,
    lines,
    write(deviceId, metrics = { temperature: 21 }) {
      const now = clock.now();
      const items: WrittenReading[] = [{ gatewayId: 'gw1', origin: 'gateway', reading: { deviceId, kind: 'telemetry', ts: now, tsSource: 'device', receivedAt: now, metrics } }];
      sync.publishWritten(health.observeWritten(items));
    },
    alert: (deviceId) => health.monitor.alerts.list({ subject: deviceId }).find((a) => a.state !== 'resolved'),
  };
}

function announced(members: readonly Member[], status: 'firing' | 'resolved', deviceId: string): number {
  return members.reduce((n, m) => n + m.lines.filter((l) => typeof l['msg'] === 'string' && l['msg'] === `alert ${status}: device ${deviceId} is offline`).length, 0);
}

/** Every member looked at its claims for this many transitions (so a second announcement would have shown by now). */
async function claimsSettled(members: readonly Member[], transitions: number): Promise<void> {
  await waitFor(() => members.reduce((n, m) => n + m.sync.stats().claimsWon + m.sync.stats().claimsLost, 0) >= transitions, { ...WAIT, what: `${transitions} claims settled` });
  await Promise.all(members.map((m) => m.health.notifiers.idle()));
}

describe('fleet sync on a real Redis', () => {
  it('a reading written through one ingestor makes the device known and online on the other, with its recent reading', async () => {
    const redis = await redisServer();
    const clock = new ManualClock(Date.now());
    const a = await member('a', redis.url, clock);
    const b = await member('b', redis.url, clock);

    a.write('pump-1', { temperature: 21.5 });

    const seen = await waitFor(() => b.health.monitor.fleet.device('pump-1'), { ...WAIT, what: 'pump-1 on b' });
    expect(seen).toMatchObject({ deviceId: 'pump-1', gatewayId: 'gw1', liveness: 'online', lastDataAt: clock.now() });
    expect(b.health.recentReadings('pump-1', 60_000, 10)).toEqual([{ ts: clock.now(), kind: 'telemetry', metrics: { temperature: 21.5 } }]);
    // Its own message is not taken twice.
    expect(a.health.monitor.fleet.device('pump-1')?.messages).toBe(1);
    expect(a.sync.stats().readingsApplied).toBe(0);
  });

  it('an alert fires on every ingestor but is announced once, and so is its resolve', async () => {
    const redis = await redisServer();
    const clock = new ManualClock(Date.now());
    const a = await member('a', redis.url, clock);
    const b = await member('b', redis.url, clock);
    const members = [a, b];

    a.write('pump-1');
    await waitFor(() => b.health.monitor.fleet.device('pump-1'), { ...WAIT, what: 'pump-1 on b' });
    clock.advance(61_000);

    await waitFor(() => a.alert('pump-1')?.state === 'firing' && b.alert('pump-1')?.state === 'firing', { ...WAIT, what: 'the alert firing on both' });
    await claimsSettled(members, 2);
    expect(announced(members, 'firing', 'pump-1')).toBe(1);

    clock.advance(1_000);
    b.write('pump-1');
    await waitFor(() => !a.alert('pump-1') && !b.alert('pump-1'), { ...WAIT, what: 'the alert resolved on both' });
    await claimsSettled(members, 4);
    expect(announced(members, 'resolved', 'pump-1')).toBe(1);
    expect(announced(members, 'firing', 'pump-1')).toBe(1);

    // A new episode of the same condition is announced again, once.
    clock.advance(61_000);
    await waitFor(() => a.alert('pump-1')?.state === 'firing' && b.alert('pump-1')?.state === 'firing', { ...WAIT, what: 'the second episode firing on both' });
    await claimsSettled(members, 6);
    expect(announced(members, 'firing', 'pump-1')).toBe(2);
  });

  it('an ack made through one ingestor shows on the other, and so does taking it back', async () => {
    const redis = await redisServer();
    const clock = new ManualClock(Date.now());
    const a = await member('a', redis.url, clock);
    const b = await member('b', redis.url, clock);

    a.write('pump-1');
    await waitFor(() => b.health.monitor.fleet.device('pump-1'), { ...WAIT, what: 'pump-1 on b' });
    clock.advance(61_000);
    const onA = await waitFor(() => a.alert('pump-1'), { ...WAIT, what: 'the alert on a' });
    await waitFor(() => b.alert('pump-1'), { ...WAIT, what: 'the alert on b' });

    a.health.monitor.alerts.acknowledge(onA.id, 'alice', 'on my way');
    const acked = await waitFor(() => b.alert('pump-1')?.acknowledged, { ...WAIT, what: 'the ack on b' });
    expect(acked).toEqual({ by: 'alice', at: onA.acknowledged?.at, comment: 'on my way' });
    expect(b.health.monitor.summary().alerts.acknowledged).toBe(1);

    const onB = b.alert('pump-1');
    if (!onB) throw new Error('the alert left b');
    clock.advance(1_000);
    b.health.monitor.alerts.unacknowledge(onB.id, 'bob', 'not mine');
    await waitFor(() => a.alert('pump-1') && a.alert('pump-1')?.acknowledged === undefined, { ...WAIT, what: 'the un-ack on a' });
    expect(a.alert('pump-1')?.history.at(-1)).toMatchObject({ event: 'unacknowledged', detail: 'bob: not mine' });
  });

  it('a silence made through one ingestor holds on the other, and its early end too', async () => {
    const redis = await redisServer();
    const clock = new ManualClock(Date.now());
    const a = await member('a', redis.url, clock);
    const b = await member('b', redis.url, clock);
    const members = [a, b];

    const silence = b.health.monitor.alerts.silence({ matchers: { subject: 'pump-*' }, durationMs: 3_600_000, by: 'bob', comment: 'maintenance' });
    await waitFor(() => a.health.monitor.alerts.activeSilences().find((s) => s.id === silence.id), { ...WAIT, what: 'the silence on a' });
    expect(a.health.monitor.alerts.activeSilences()).toEqual([silence]);

    a.write('pump-1');
    a.write('valve-1');
    await waitFor(() => b.health.monitor.fleet.device('valve-1'), { ...WAIT, what: 'the devices on b' });
    clock.advance(61_000);
    await waitFor(() => members.every((m) => m.alert('pump-1')?.state === 'firing' && m.alert('valve-1')?.state === 'firing'), { ...WAIT, what: 'both alerts firing on both' });
    // Only the unsilenced one was up for a claim: valve-1's two.
    await claimsSettled(members, 2);
    expect(announced(members, 'firing', 'valve-1')).toBe(1);
    expect(announced(members, 'firing', 'pump-1')).toBe(0);
    expect(a.health.monitor.alerts.silenceOf(a.alert('pump-1') as Alert)?.id).toBe(silence.id);

    // Ended early through a: gone on b as well.
    expect(a.health.monitor.alerts.expireSilence(silence.id)).toBe(true);
    await waitFor(() => b.health.monitor.alerts.activeSilences().length === 0, { ...WAIT, what: 'the silence gone from b' });
  });

  it('an ingestor started later catches up on the devices, silences and acks the others left in Redis', async () => {
    const redis = await redisServer();
    const clock = new ManualClock(Date.now());
    const a = await member('a', redis.url, clock);

    a.write('pump-1');
    a.write('pump-2');
    clock.advance(61_000);
    a.write('pump-2');
    const onA = await waitFor(() => a.alert('pump-1')?.state === 'firing' && a.alert('pump-1'), { ...WAIT, what: 'pump-1 firing on a' });
    a.health.monitor.alerts.acknowledge(onA.id, 'alice');
    const silence = a.health.monitor.alerts.silence({ matchers: { rule: 'device-offline', subject: 'valve-*' }, durationMs: 600_000, by: 'alice' });
    await claimsSettled([a], 1);

    const b = await member('b', redis.url, clock);
    expect(b.sync.connected()).toBe(true);
    expect(b.health.monitor.fleet.device('pump-2')).toMatchObject({ liveness: 'online', lastDataAt: clock.now() });
    expect(b.health.recentReadings('pump-2', 600_000, 10)).toHaveLength(1);
    expect(b.health.monitor.alerts.activeSilences()).toEqual([silence]);
    // pump-1 is offline on b too; its alert opens acknowledged and is not announced again.
    const onB = await waitFor(() => b.alert('pump-1')?.state === 'firing' && b.alert('pump-1'), { ...WAIT, what: 'pump-1 firing on b' });
    expect(onB.acknowledged).toMatchObject({ by: 'alice', at: onA.acknowledged?.at });
    await claimsSettled([a, b], 2);
    expect(announced([a, b], 'firing', 'pump-1')).toBe(1);
  });

  it.each([
    { persistent: true, what: 'a Redis that keeps its data (as the shared state runs)' },
    { persistent: false, what: 'a Redis that keeps nothing' },
  ])('after a restart of $what the syncs catch up again: readings written meanwhile arrive, silences hold, alerts were held', async ({ persistent }) => {
    const redis = await redisServer(persistent);
    const clock = new ManualClock(Date.now());
    const a = await member('a', redis.url, clock);
    const b = await member('b', redis.url, clock);
    const silence = a.health.monitor.alerts.silence({ matchers: { subject: 'valve-*' }, durationMs: 3_600_000, by: 'alice' });
    await waitFor(() => b.health.monitor.alerts.activeSilences().length === 1, { ...WAIT, what: 'the silence on b' });
    // An alert firing across the restart.
    a.write('pump-0');
    await waitFor(() => b.health.monitor.fleet.device('pump-0'), { ...WAIT, what: 'pump-0 on b' });
    clock.advance(61_000);
    await waitFor(() => a.alert('pump-0')?.state === 'firing' && b.alert('pump-0')?.state === 'firing', { ...WAIT, what: 'pump-0 firing on both' });
    await claimsSettled([a, b], 2);
    a.write('pump-1');
    await waitFor(() => b.health.monitor.fleet.device('pump-1'), { ...WAIT, what: 'pump-1 on b' });

    await redis.kill();
    await waitFor(() => !a.sync.connected() && !b.sync.connected(), { ...WAIT, what: 'both syncs to notice' });
    // Device alerts wait while a member cannot hear the others.
    expect(b.health.monitor.summary().held).toBe(true);
    clock.advance(1_000);
    a.write('pump-2');

    await redis.restart();
    await waitFor(() => a.sync.connected() && b.sync.connected(), { ...WAIT, what: 'both syncs caught up again' });
    expect(b.health.monitor.summary().held).toBe(false);
    // Written while Redis was down: shared once it was back.
    await waitFor(() => b.health.monitor.fleet.device('pump-2')?.liveness === 'online', { ...WAIT, what: 'pump-2 on b' });
    // Kept by Redis, or (nothing kept) put back by the members.
    const check = client(redis.url, clock, 'check');
    const keys = fleetKeys(PREFIX);
    await waitFor(async () => (await check.exists(keys.silence(silence.id))) === 1, { ...WAIT, what: 'the silence back in Redis' });
    // And the live path works as before.
    a.write('pump-3');
    await waitFor(() => b.health.monitor.fleet.device('pump-3'), { ...WAIT, what: 'pump-3 on b' });
    // The alert that fired before the restart resolves after it, announced once.
    b.write('pump-0');
    await waitFor(() => !a.alert('pump-0') && !b.alert('pump-0'), { ...WAIT, what: 'pump-0 resolved on both' });
    await claimsSettled([a, b], 4);
    expect(announced([a, b], 'firing', 'pump-0')).toBe(1);
    expect(announced([a, b], 'resolved', 'pump-0')).toBe(1);
    // A member started now finds the silence and the devices.
    const c = await member('c', redis.url, clock);
    expect(c.health.monitor.alerts.activeSilences()).toEqual([silence]);
    expect(c.health.monitor.fleet.device('pump-2')?.liveness).toBe('online');
  });
});

describe('notification claims (CLAIM_LUA) on a real Redis', () => {
  it('announces each episode once, and never a late member\'s firing or resolve of an episode already over', async () => {
    const server = await redisServer();
    const clock = new ManualClock(Date.now());
    const redis = client(server.url, clock, 'claims');
    const claim = defineScript(redis, 'ferryFleetClaimTest', CLAIM_LUA);
    const key = fleetKeys(PREFIX).claim('device-offline|device|pump-1');
    const t = clock.now();
    const run = async (member: string, status: 'firing' | 'resolved', startsAt: number, endsAt = startsAt): Promise<number> => {
      const reply = (await claim([key], [member, 60_000, 60_000, status, startsAt, endsAt])) as number[];
      return reply[0] ?? -1;
    };

    expect(await run('a', 'firing', t)).toBe(1);
    expect(await run('b', 'firing', t + 5)).toBe(0);
    expect(await run('b', 'resolved', t + 5, t + 100_000)).toBe(1);
    expect(await run('a', 'resolved', t, t + 100_010)).toBe(0);
    // c lagged: its firing of the episode that ended at t + 100_000 comes after the resolve.
    expect(await run('c', 'firing', t + 50)).toBe(0);
    // The next episode started after that end.
    expect(await run('a', 'firing', t + 200_000)).toBe(1);
    // c's resolve of the first episode now meets the second one's claim: not announced.
    expect(await run('c', 'resolved', t + 50, t + 100_020)).toBe(0);
    expect(await run('b', 'resolved', t + 200_003, t + 300_000)).toBe(1);
    // Claims expire (PX): nothing piles up.
    const ttl = await redis.pttl(key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });
});
