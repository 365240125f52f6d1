// Sink.present(): recovery after a crash mid-write asks which points the database holds already.
// VictoriaMetrics (through both APIs it serves) is read back for real; InfluxDB 1.x answers
// false for every point (a rewrite replaces); an unreachable database rejects as unavailable.
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '@ferry/protocol';
import { freePort, startInfluxd, startVictoriaMetrics, type InfluxdHandle, type VictoriaHandle } from '@ferry/testkit';
import type { Point, Sink } from '../src/index.js';
import { createInfluxV1Sink, createInfluxV2Sink, createSqliteSink } from '../src/index.js';
import { classifyProbe } from '../src/presence.js';
import {
  expectationOf,
  metricsqlIdent,
  parseBestEffort,
  parseExportLine,
  planExports,
  quoteRegex,
  sameStoredValue,
  selectorOf,
  storedValue,
} from '../src/victoria-series.js';

const MS = 1_000_000n;

/**
 * The server's own time (its Date header): VictoriaMetrics drops points far from its clock, and
 * keeps the real time while the suite may run with a shifted clock (scripts/any-date.mjs).
 */
async function serverNowMs(url: string): Promise<number> {
  const response = await fetch(`${url}/health`);
  await response.arrayBuffer();
  const date = Date.parse(response.headers.get('date') ?? '');
  if (Number.isNaN(date)) throw new Error('server sent no Date header');
  return date;
}

async function failureOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => 'resolved',
    (err: unknown) => err,
  );
}

/** A chunk with every kind of point recovery meets, and the answers it must get. */
function recoveryCase(baseMs: number): { written: Point[]; asked: Point[]; expected: boolean[] } {
  const t = (ms: number, sub = 0n): bigint => BigInt(baseMs + ms) * MS + sub;
  const gw = { gateway: 'gw-1' };
  const heating: Point = {
    measurement: 'telemetry',
    tags: { device: 'dev-1', ...gw },
    fields: { temperature: 21.5, humidity: 40.25, door_open: true, state: 'heating' },
    timestampNs: t(0, 123_456n),
  };
  const hostile: Point = {
    measurement: 'telemetry',
    tags: { device: 'dev 2, "quoted" \'single\' = Zürich ☃ 🚀', 'site name, with=all three': 'C:\\temp\\new', '🌡️ sensor': 'x', ...gw },
    fields: { temperature: -3.125, door_open: false, 'naïve 🚀 \\d': 0.1 + 0.2 },
    timestampNs: t(1),
  };
  const hostileMeasurement: Point = {
    measurement: 'room temp, "quoted" = \'single\' C:\\sensors (a|b).*',
    tags: { device: 'dev-1', ...gw },
    fields: { "field key, =x 'q'": 1.5, big: 1.7976931348623157e308, tiny: 5e-324 },
    timestampNs: t(2),
  };
  const onlyText: Point = { measurement: 'telemetry', tags: { device: 'dev-3', ...gw }, fields: { state: 'idle' }, timestampNs: t(3) };
  const numericText: Point = { measurement: 'telemetry', tags: { device: 'dev-4', ...gw }, fields: { reading: '12.5', note: 'n/a' }, timestampNs: t(4) };
  const status: Point = { measurement: 'device_status', tags: { device: 'dev-1', ...gw }, fields: { online: true, battery: 0.875 }, timestampNs: t(0, 123_456n) };
  const written = [heating, hostile, hostileMeasurement, onlyText, numericText, status];
  const notWritten: Point[] = [
    // a device never written
    { ...heating, tags: { device: 'dev-9', ...gw } },
    // same series, another time
    { ...heating, timestampNs: t(5_000) },
    // same series and time, another value
    { ...heating, fields: { ...heating.fields, temperature: 22 } },
    // same series and time, a field more
    { ...heating, fields: { ...heating.fields, pressure: 1013 } },
    // another series: a tag less, a tag more
    { ...heating, tags: { device: 'dev-1' } },
    { ...heating, tags: { ...heating.tags, site: 'hall' } },
    // a boolean the other way round
    { ...hostile, fields: { ...hostile.fields, door_open: true } },
    // a string field never written, and a written one with other text
    { ...onlyText, tags: { device: 'dev-8', ...gw } },
    { ...numericText, fields: { reading: '12.75', note: 'n/a' } },
    // a point write() refuses: it must be written (and dead-lettered), not skipped
    { measurement: 'telemetry', tags: { device: 'dev-1' }, fields: {}, timestampNs: t(0) },
  ];
  return { written, asked: [...written, ...notWritten], expected: [...written.map(() => true), ...notWritten.map(() => false)] };
}

describe('present() against VictoriaMetrics', () => {
  let vm: VictoriaHandle;
  beforeAll(async () => {
    vm = await startVictoriaMetrics();
  });
  afterAll(async () => {
    await vm.stop();
  });

  const sinks: Array<[string, (vmUrl: string, db: string) => Sink]> = [
    ['influxdb2 sink (/api/v2/write)', (url) => createInfluxV2Sink({ url, token: 't', org: 'o', bucket: 'b', timeoutMs: 5_000 })],
    ['influxdb1 sink (/write?db=)', (url, db) => createInfluxV1Sink({ url, database: db, timeoutMs: 5_000 })],
  ];

  let run = 0;
  /** Each test its own measurements' times: a minute apart, ten minutes before the server's now. */
  async function freshBase(): Promise<number> {
    run += 1;
    return (await serverNowMs(vm.url)) - 3_600_000 + run * 60_000;
  }

  it.each(sinks)('%s: answers exactly which points were written, right after the write', async (_name, make) => {
    const sink = make(vm.url, `db-${run}`);
    const { written, asked, expected } = recoveryCase(await freshBase());
    expect(await sink.write(written)).toEqual({ written: written.length, rejected: [] });
    // No wait: present() makes VictoriaMetrics flush what it just took.
    expect(await sink.present?.(asked)).toEqual(expected);
    await sink.close();
  });

  it.each(sinks)('%s: tells apart two points of one series in one millisecond by how many samples there are', async (_name, make) => {
    const sink = make(vm.url, 'twins');
    const base = await freshBase();
    const first: Point = { measurement: 'twins', tags: { device: 'd' }, fields: { v: 1 }, timestampNs: BigInt(base) * MS + 41n };
    const second: Point = { ...first, timestampNs: BigInt(base) * MS + 42n };
    await sink.write([first]);
    // VictoriaMetrics keeps milliseconds: one sample stands for one of the two.
    expect(await sink.present?.([first, second])).toEqual([true, false]);
    await sink.write([second]);
    expect(await sink.present?.([first, second])).toEqual([true, true]);
    await sink.close();
  });

  it('influxdb1 sink: matches the db label VictoriaMetrics adds, and a point whose own db tag wins', async () => {
    const base = await freshBase();
    const v1 = createInfluxV1Sink({ url: vm.url, database: 'plant' });
    const other = createInfluxV1Sink({ url: vm.url, database: 'elsewhere' });
    const v2 = createInfluxV2Sink({ url: vm.url, token: 't', org: 'o', bucket: 'plant' });
    const plain: Point = { measurement: 'dbl', tags: { device: 'd' }, fields: { v: 1 }, timestampNs: BigInt(base) * MS };
    const ownDb: Point = { measurement: 'dbl', tags: { device: 'd', db: 'mine' }, fields: { v: 2 }, timestampNs: BigInt(base) * MS };
    await v1.write([plain, ownDb]);
    await vm.flush();
    const [series] = await vm.exportSeries('{__name__="dbl_v",device="d",db="plant"}', { start: base - 1000, end: base + 1000 });
    expect(series?.metric).toEqual({ __name__: 'dbl_v', device: 'd', db: 'plant' });
    expect(await v1.present?.([plain, ownDb])).toEqual([true, true]);
    // Another database, or the v2 API (which adds no label), is another series.
    expect(await other.present?.([plain, ownDb])).toEqual([false, true]);
    expect(await v2.present?.([plain, ownDb])).toEqual([false, true]);
    await Promise.all([v1.close(), other.close(), v2.close()]);
  });

  it('recovers a chunk cut by a crash: after present() and writing only the absent points, every point has one sample', async () => {
    const sink = createInfluxV2Sink({ url: vm.url, token: 't', org: 'o', bucket: 'b' });
    const base = await freshBase();
    const chunk: Point[] = Array.from({ length: 40 }, (_, i) => ({
      measurement: 'recovery',
      tags: { device: `dev-${i % 8}`, gateway: 'gw-1' },
      fields: { temperature: 20 + i / 4, door_open: i % 2 === 0, state: 'ok' },
      timestampNs: BigInt(base + i * 10) * MS + BigInt(i),
    }));
    // The dead process got the first 25 points into the database.
    await sink.write(chunk.slice(0, 25));
    const present = (await sink.present?.(chunk)) ?? [];
    expect(present).toEqual(chunk.map((_, i) => i < 25));
    await sink.write(chunk.filter((_, i) => present[i] !== true));
    await vm.flush();
    const series = await vm.exportSeries('{__name__=~"recovery_.*"}', { start: base - 1000, end: base + 10_000 });
    expect(series).toHaveLength(8 * 3);
    for (const s of series) expect(new Set(s.timestamps).size).toBe(s.timestamps.length);
    expect(series.reduce((n, s) => n + s.timestamps.length, 0)).toBe(40 * 3);
    expect(await sink.present?.(chunk)).toEqual(chunk.map(() => true));
    await sink.close();
  });

  it('answers a chunk of 5,000 points from 1,000 devices with three requests (probe, flush, one export)', async () => {
    const proxy = await countingProxy(vm.url);
    const sink = createInfluxV2Sink({ url: proxy.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 30_000 });
    const base = await freshBase();
    const chunk: Point[] = Array.from({ length: 5_000 }, (_, i) => ({
      measurement: 'fleet',
      tags: { device: `device-${String(i % 1_000).padStart(4, '0')}`, gateway: 'gw-7', site: 'north hall' },
      fields: { temperature: 18 + (i % 97) / 8, humidity: 30 + (i % 13), door_open: i % 3 === 0, state: i % 2 === 0 ? 'heating' : 'idle' },
      timestampNs: BigInt(base + Math.floor(i / 1_000) * 1_000) * MS + BigInt(i % 1_000),
    }));
    // Written by the dead process: every other point.
    await sink.write(chunk.filter((_, i) => i % 2 === 0));
    proxy.requests.length = 0;
    const started = performance.now();
    const answer = await sink.present?.(chunk);
    const elapsedMs = performance.now() - started;
    expect(answer).toEqual(chunk.map((_, i) => i % 2 === 0));
    expect(proxy.requests.map((r) => r.split('?')[0])).toEqual(['/api/v1/export', '/internal/force_flush', '/api/v1/export']);
    expect(elapsedMs).toBeLessThan(10_000);
    // The server is known now: no second probe.
    proxy.requests.length = 0;
    await sink.present?.(chunk.slice(0, 10));
    expect(proxy.requests.map((r) => r.split('?')[0])).toEqual(['/internal/force_flush', '/api/v1/export']);
    await sink.close();
    await proxy.close();
  });

  it('rejects with FERRY_ERR_SINK_UNAVAILABLE while VictoriaMetrics is down, and answers again once it is back', async () => {
    const own = await startVictoriaMetrics();
    try {
      const sink = createInfluxV2Sink({ url: own.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 2_000 });
      const base = (await serverNowMs(own.url)) - 60_000;
      const point: Point = { measurement: 'm', tags: { device: 'd' }, fields: { v: 1 }, timestampNs: BigInt(base) * MS };
      await sink.write([point]);
      expect(await sink.present?.([point])).toEqual([true]);
      // A graceful restart puts the sample on disk (a kill -9 loses the last seconds VictoriaMetrics acknowledged).
      await own.restart();
      await own.kill();
      expect(isFerryError(await failureOf(sink.present?.([point]) ?? Promise.resolve()), 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
      await own.restart();
      expect(await sink.present?.([point])).toEqual([true]);
      await sink.close();
    } finally {
      await own.stop();
    }
  });
});

describe('present() where a rewrite replaces the point', () => {
  let influxd: InfluxdHandle;
  beforeAll(async () => {
    influxd = await startInfluxd();
    await influxd.createDatabase('ferry');
  });
  afterAll(async () => {
    await influxd.stop();
  });

  it('influxdb1 sink against influxd answers false for every point, written or not', async () => {
    const sink = createInfluxV1Sink({ url: influxd.url, database: 'ferry' });
    const { written, asked } = recoveryCase(Date.now() - 3_600_000);
    await sink.write(written);
    expect(await sink.present?.(asked)).toEqual(asked.map(() => false));
    await sink.close();
  });

  it('influxd is identified by its answer to the probe', async () => {
    const response = await fetch(`${influxd.url}/api/v1/export?match[]=x`);
    const body = await response.text();
    expect(classifyProbe({ status: response.status, headers: response.headers, body })).toBe('influxdb');
  });

  it('the SQLite sink upserts and has no present()', () => {
    const sink = createSqliteSink({ path: ':memory:' });
    expect('present' in sink).toBe(false);
    void sink.close();
  });

  // InfluxDB 2 is not installed here: its documented answers outside its API are played by a
  // local HTTP server (the UI's index page, or a 404 with UI disabled).
  it.each([
    [200, 'text/html; charset=utf-8', '<!DOCTYPE html><html><body>InfluxDB</body></html>'],
    [404, 'application/json; charset=utf-8', '{"code":"not found","message":"path not found"}'],
  ])('influxdb2 sink answers false for every point when /api/v1/export answers %i %s', async (status, contentType, body) => {
    const server = createServer((_req, res) => {
      res.writeHead(status, { 'content-type': contentType });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const sink = createInfluxV2Sink({ url, token: 't', org: 'o', bucket: 'b' });
    const { asked } = recoveryCase(Date.now());
    expect(await sink.present?.(asked)).toEqual(asked.map(() => false));
    await sink.close();
    await closeServer(server);
  });
});

describe('present() when the database cannot answer', () => {
  it.each([
    ['influxdb2', (url: string) => createInfluxV2Sink({ url, token: 't', org: 'o', bucket: 'b', timeoutMs: 1_000 })],
    ['influxdb1', (url: string) => createInfluxV1Sink({ url, database: 'ferry', timeoutMs: 1_000 })],
  ])('%s sink rejects with FERRY_ERR_SINK_UNAVAILABLE when nothing listens', async (_name, make) => {
    const sink = make(`http://127.0.0.1:${await freePort()}`);
    const point: Point = { measurement: 'm', tags: {}, fields: { v: 1 }, timestampNs: 1n };
    const failure = await failureOf(sink.present?.([point]) ?? Promise.resolve());
    expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    expect((failure as Error).message).toMatch(/ECONNREFUSED/);
    await sink.close();
  });

  it('rejects with FERRY_ERR_SINK_UNAVAILABLE on a 5xx, and with FERRY_ERR_NOT_READY after close()', async () => {
    const server = createServer((_req, res) => {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('overloaded');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const sink = createInfluxV1Sink({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, database: 'ferry' });
    const point: Point = { measurement: 'm', tags: {}, fields: { v: 1 }, timestampNs: 1n };
    const failure = await failureOf(sink.present?.([point]) ?? Promise.resolve());
    expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    expect((failure as { details: unknown }).details).toMatchObject({ status: 503 });
    await sink.close();
    expect(isFerryError(await failureOf(sink.present?.([point]) ?? Promise.resolve()), 'FERRY_ERR_NOT_READY')).toBe(true);
    await closeServer(server);
  });
});

describe('how VictoriaMetrics keeps a point (victoria-series.ts)', () => {
  it('names each field <measurement>_<field> with the tags as labels, plus the labels the API adds unless a tag has the name', () => {
    const point: Point = { measurement: 'm', tags: { b: 'x', a: 'y', empty: '', db: 'own' }, fields: { f1: 1.5, f2: true, s: 'text' }, timestampNs: 1_700_000_000_123_999_999n };
    expect(expectationOf(point, { db: 'ferry', site: 'north' })).toEqual({
      kind: 'samples',
      labels: [
        ['a', 'y'],
        ['b', 'x'],
        ['db', 'own'],
        ['site', 'north'],
      ],
      seriesKey: JSON.stringify([
        ['a', 'y'],
        ['b', 'x'],
        ['db', 'own'],
        ['site', 'north'],
      ]),
      ms: 1_700_000_000_123,
      samples: [
        { metric: 'm_f1', value: 1.5 },
        { metric: 'm_f2', value: 1 },
        { metric: 'm_s', value: 0 },
      ],
    });
  });

  it('reads string fields as fastfloat.ParseBestEffort does', () => {
    const cases: Array<[string, number | undefined]> = [
      ['12.5', 12.5],
      ['-3', -3],
      ['1e5', 100_000],
      ['heating', 0],
      ['', 0],
      ['+5', 0],
      ['.5', 0],
      ['5.', 0],
      ['12abc', 0],
      ['inf', Infinity],
      ['-Infinity', -Infinity],
      ['NaN', undefined],
    ];
    for (const [text, value] of cases) expect([text, parseBestEffort(text)]).toEqual([text, value]);
    // The text as escaped in the line: a quote or a backslash makes it garbage.
    expect(storedValue('1\\')).toBe(0);
    expect(expectationOf({ measurement: 'm', tags: {}, fields: { s: 'nan' }, timestampNs: 1n }, {})).toEqual({ kind: 'nothing-stored' });
  });

  it('compares values with the precision VictoriaMetrics keeps', () => {
    expect(sameStoredValue(0.1 + 0.2, 0.3)).toBe(true);
    expect(sameStoredValue(5e-324, 0)).toBe(true);
    expect(sameStoredValue(-0, 0)).toBe(true);
    expect(sameStoredValue(Number.MAX_VALUE, 1.797693134862315e308)).toBe(true);
    expect(sameStoredValue(21.5, 21.5000001)).toBe(false);
    expect(sameStoredValue(1, 0)).toBe(false);
    expect(sameStoredValue(Infinity, Infinity)).toBe(true);
    expect(sameStoredValue(Infinity, 1e308)).toBe(false);
  });

  it('escapes label names, label values and metric names for MetricsQL', () => {
    expect(metricsqlIdent('device')).toBe('device');
    expect(metricsqlIdent('9 lives.x')).toBe('\\9\\ lives.x');
    expect(metricsqlIdent('ü🌡️')).toBe('\\ü\\🌡\\\uFE0F');
    expect(quoteRegex('a.b|c(d)\\')).toBe('a\\.b\\|c\\(d\\)\\\\');
    expect(selectorOf([['k', 'say "hi" C:\\']], ['m_a'])).toBe('{__name__="m_a",k="say \\"hi\\" C:\\\\"}');
    expect(selectorOf([], ['m_a', 'm.b'])).toBe('{__name__=~"m_a|m\\\\.b"}');
  });

  it('parses export lines, infinite values included, and refuses other shapes', () => {
    expect(parseExportLine('{"metric":{"__name__":"m_v","b":"2","a":"1"},"values":[1,-Inf,+Inf],"timestamps":[1,2,3]}')).toEqual({
      metric: 'm_v',
      seriesKey: JSON.stringify([
        ['a', '1'],
        ['b', '2'],
      ]),
      values: [1, -Infinity, Infinity],
      timestamps: [1, 2, 3],
    });
    expect(parseExportLine('{"metric":{"__name__":"m_v","l":"\\"values\\":[Inf]"},"values":[2],"timestamps":[5]}')?.values).toEqual([2]);
    expect(parseExportLine('<html>')).toBeUndefined();
    expect(parseExportLine('{"metric":{},"values":[1],"timestamps":[1]}')).toBeUndefined();
  });

  it('plans one export for a gateway chunk of 5,000 points from 1,000 devices, and splits by time only where a series needs it', () => {
    const base = 1_000_000_000;
    const chunk: Point[] = Array.from({ length: 5_000 }, (_, i) => ({
      measurement: 'telemetry',
      tags: { device: `device-${String(i % 1_000).padStart(4, '0')}`, gateway: 'gw-7' },
      fields: { temperature: 20, humidity: 40, door_open: true, state: 'ok' },
      timestampNs: BigInt(base + i * 100) * MS,
    }));
    const plan = planExports(chunk.map((p) => expectationOf(p, {})));
    expect(plan).toHaveLength(1);
    expect(plan[0]?.selectors).toHaveLength(1_000);
    expect(plan[0]?.points).toHaveLength(5_000);
    // A device whose clock is a day off gets its own request instead of widening everyone's.
    const stray: Point = { ...chunk[0]!, tags: { device: 'stray', gateway: 'gw-7' }, timestampNs: BigInt(base - 86_400_000) * MS };
    const withStray = planExports([...chunk, stray].map((p) => expectationOf(p, {})));
    expect(withStray).toHaveLength(2);
    expect(withStray[0]?.points).toEqual([5_000]);
    expect((withStray[1]?.endMs ?? 0) - (withStray[1]?.startMs ?? 0)).toBeLessThan(600_000);
    // A sparse series over days stays one request: it needs that whole span itself.
    const sparse: Point[] = Array.from({ length: 500 }, (_, i) => ({ ...chunk[0]!, timestampNs: BigInt(base + i * 900_000) * MS }));
    expect(planExports(sparse.map((p) => expectationOf(p, {})))).toHaveLength(1);
  });
});

/** A pass-through HTTP proxy in front of a real server, recording the requests it forwards. */
async function countingProxy(target: string): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const upstream = new URL(target);
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const forward = httpRequest({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, close: () => closeServer(server) };
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}
