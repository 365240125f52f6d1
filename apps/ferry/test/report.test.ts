import { describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import { demoSink } from '../src/commands/demo.js';
import { formatStatus } from '../src/commands/status.js';
import { demoSummary, statusLine } from '../src/demo-report.js';
import { parseDuration } from '../src/duration.js';
import { configFromFlags } from '../src/flags.js';

describe('duration', () => {
  it('reads milliseconds, seconds, minutes, hours and bare seconds', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('3s')).toBe(3000);
    expect(parseDuration('1.5m')).toBe(90_000);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration('30')).toBe(30_000);
  });

  it('refuses what is not a duration, naming the flag', () => {
    let caught: unknown;
    try {
      parseDuration('soon', 'duration');
    } catch (err) {
      caught = err;
    }
    expect(isFerryError(caught, 'FERRY_ERR_CONFIG_INVALID')).toBe(true);
    expect((caught as Error).message).toContain('duration: "soon"');
  });
});

describe('demo report', () => {
  it('is ok only when every reading the devices sent was written and the outbox is empty', () => {
    const base = { telemetry: 90, statuses: 6, written: 96, acked: 96, outboxDepth: 0, deadLetters: 0 };
    expect(demoSummary(base)).toEqual({ published: 96, written: 96, acked: 96, outboxDepth: 0, deadLetters: 0, ok: true, telemetry: 90, statuses: 6 });
    expect(demoSummary({ ...base, written: 95 }).ok).toBe(false);
    expect(demoSummary({ ...base, outboxDepth: 1 }).ok).toBe(false);
  });

  it('puts the summary fields first, in the documented order', () => {
    const keys = Object.keys(demoSummary({ telemetry: 1, statuses: 0, written: 1, acked: 1, outboxDepth: 0, deadLetters: 0 }));
    expect(keys.slice(0, 6)).toEqual(['published', 'written', 'acked', 'outboxDepth', 'deadLetters', 'ok']);
  });

  it('prints one status line with rate, counters and devices online', () => {
    const line = statusLine({ elapsedS: 12.2, inPerS: 29.6, written: 300, acked: 290, outboxDepth: 10, devicesOnline: 3, devices: 3, deadLetters: 1, uplinkConnected: true });
    expect(line).toBe('[  12s]  in    30/s  written 300  acked 290  outbox 10  devices 3/3 online  dead letters 1');
    expect(statusLine({ elapsedS: 1, inPerS: 0, written: 0, acked: 0, outboxDepth: 5, devicesOnline: 0, devices: 3, deadLetters: 0, uplinkConnected: false })).toContain('UPLINK DOWN');
  });

  it('chooses InfluxDB 2, InfluxDB 1 or the embedded SQLite from the environment', () => {
    expect(demoSink({ INFLUX_URL: 'http://db:8086', INFLUX_TOKEN: 't', INFLUX_ORG: 'o', INFLUX_BUCKET: 'b' })).toEqual({
      type: 'influxdb2',
      url: 'http://db:8086',
      token: 't',
      org: 'o',
      bucket: 'b',
    });
    expect(demoSink({ INFLUX_URL: 'http://db:8086', INFLUX_DB: 'ferry' })).toEqual({ type: 'influxdb1', url: 'http://db:8086', database: 'ferry' });
    expect(demoSink({ INFLUX_URL: 'http://db:8086' })).toBeUndefined();
    expect(demoSink({})).toBeUndefined();
  });
});

describe('flags', () => {
  it('builds nested config from the flags that were given, skipping the others', () => {
    expect(configFromFlags([['listen.port', 1884], ['listen.host', undefined], ['http.port', undefined], ['logLevel', 'warn']])).toEqual({
      listen: { port: 1884 },
      logLevel: 'warn',
    });
  });
});

describe('status report', () => {
  it("shows the ingestor's health, counters and each gateway's outbox", () => {
    const now = Date.now();
    const lines = formatStatus(
      { ok: true, ingestorId: 'ing-1', mqtt: { connected: true, url: 'mqtt://broker:1884/' }, sink: { up: true, description: 'sqlite /data/points.db' } },
      {
        received: 10,
        written: 9,
        duplicates: 1,
        rejected: 0,
        inFlight: 0,
        acksSent: 3,
        deadLettersHeld: 0,
        gateways: {
          'gw-1': {
            status: {
              state: 'online',
              outbox: { depth: 4, bytes: 800, oldestTs: now - 30_000 },
              deadLetters: 2,
              disk: { totalBytes: 4 * 1_048_576, freeBytes: 1_048_576 / 2, outboxBytes: 2 * 1_048_576, full: true },
            },
            receivedAt: now - 5_000,
          },
          'gw-2': {
            status: { state: 'online', outbox: { depth: 2000, bytes: 9000, oldestTs: now - 60_000 }, dropped: { outbox_full: 3 }, compacted: { readings: 540, summaries: 9 } },
            receivedAt: now - 1_000,
          },
        },
      },
      now,
    );
    expect(lines).toEqual([
      'ingestor ing-1: ok',
      '  mqtt connected mqtt://broker:1884/',
      '  sink up sqlite /data/points.db',
      '  readings received 10, written 9, duplicates 1, rejected 0, in flight 0',
      '  acks sent 3, dead letters held 0',
      'gateways (2):',
      '  gw-1: online, outbox 4 readings (800 bytes, oldest 30s ago), dead letters 2, disk 12.5% free (0.5 MiB of 4.0 MiB), outbox 2.0 MiB (50.0%), FULL: readings refused, reported 5 s ago',
      '  gw-2: online, outbox 2000 readings (9000 bytes, oldest 60s ago), dead letters 0, DROPPED 3, compacted 540 readings into 9 summaries, reported 1 s ago',
    ]);
  });

  it('says a gateway whose status is overdue is stale, with its age, before its last known figures', () => {
    const now = Date.now();
    const lines = formatStatus(
      { ok: true, ingestorId: 'ing-1', mqtt: { connected: true }, sink: { up: true } },
      {
        gateways: {
          // What the ingestor's /api/stats gives: the entry with its freshness.
          'gw-quiet': { status: { state: 'online', outbox: { depth: 2, bytes: 100, oldestTs: null } }, receivedAt: now - 38_000, ageMs: 38_000, stale: true, statusIntervalMs: 10_000 },
          'gw-live': { status: { state: 'online', outbox: { depth: 562, bytes: 9000, oldestTs: null } }, receivedAt: now - 2_000, ageMs: 2_000, stale: false, statusIntervalMs: 10_000 },
        },
      },
      now,
    );
    expect(lines.find((l) => l.includes('gw-quiet'))).toBe('  gw-quiet: online (STALE: reported 38 s ago; last known figures), outbox 2 readings (100 bytes, oldest -), dead letters 0');
    expect(lines.find((l) => l.includes('gw-live'))).toBe('  gw-live: online, outbox 562 readings (9000 bytes, oldest -), dead letters 0, reported 2 s ago');
  });

  it('says which member of a deployment sharing state this ingestor is, and what it holds', () => {
    const lines = formatStatus(
      { ok: true, ingestorId: 'ing-1', mqtt: { connected: true }, sink: { up: true } },
      { cluster: { memberId: 'ing-1#0a1b2c3d', mode: 'leases', members: ['ing-1#0a1b2c3d', 'ing-2#ffee0011', 'ing-3#12345678'], gatewaysHeld: 12, waiting: 0, acksWithheld: 2 } },
      Date.now(),
    );
    expect(lines).toContain('  cluster: member ing-1#0a1b2c3d of 3 (leases), holds 12 gateways, 0 batches waiting, ACKS WITHHELD 2 (records not in Redis)');
  });
});
