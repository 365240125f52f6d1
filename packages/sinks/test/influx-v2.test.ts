import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isFerryError } from '@ferry/protocol';
import { startVictoriaMetrics, type VictoriaHandle } from '@ferry/testkit';
import type { Point, Sink } from '../src/index.js';
import { checkPoint, createInfluxV2Sink, createSink } from '../src/index.js';
import { sinkContract, type StoredPoint } from './contract.js';

/**
 * Reads every sample back from VictoriaMetrics and regroups them into points. VictoriaMetrics
 * names a sample `<measurement>_<field>`, so the harness remembers which pair each name came
 * from. It keeps a repeated write as a second raw sample with the same timestamp and value
 * (see the test below); a reader of VictoriaMetrics sees one value per timestamp, and so does
 * this read-back: identical samples count once, distinct values at one timestamp stay distinct.
 */
async function readVictoria(vm: VictoriaHandle, names: ReadonlyMap<string, { measurement: string; field: string }>): Promise<StoredPoint[]> {
  await vm.flush();
  const points = new Map<string, StoredPoint>();
  for (const series of await vm.exportSeries('{__name__!=""}')) {
    const { __name__: name = '', ...tags } = series.metric;
    const origin = names.get(name);
    if (!origin) throw new Error(`unexpected series ${name}`);
    const seen = new Map<number, number[]>();
    series.timestamps.forEach((ms, i) => {
      const value = series.values[i] ?? Number.NaN;
      const atThisTime = seen.get(ms) ?? [];
      if (atThisTime.some((v) => Object.is(v, value))) return;
      atThisTime.push(value);
      seen.set(ms, atThisTime);
      const key = JSON.stringify([origin.measurement, Object.entries(tags).sort(), ms, atThisTime.length]);
      let point = points.get(key);
      if (!point) {
        point = { measurement: origin.measurement, tags, fields: {}, timestampNs: BigInt(ms) * 1_000_000n };
        points.set(key, point);
      }
      // defineProperty: a field named `__proto__` must stay a field.
      Object.defineProperty(point.fields, origin.field, { value, enumerable: true, writable: true, configurable: true });
    });
  }
  return [...points.values()];
}

/** Wraps a sink to remember the measurement and field behind each VictoriaMetrics metric name. */
function recording(sink: Sink, names: Map<string, { measurement: string; field: string }>): Sink {
  const present = sink.present?.bind(sink);
  return {
    description: sink.description,
    write: (points) => {
      for (const p of points) {
        for (const field of Object.keys(p.fields)) {
          const name = `${p.measurement}_${field}`;
          const known = names.get(name);
          if (known && (known.measurement !== p.measurement || known.field !== field)) throw new Error(`ambiguous metric name ${name}`);
          names.set(name, { measurement: p.measurement, field });
        }
      }
      return sink.write(points);
    },
    ping: () => sink.ping(),
    close: () => sink.close(),
    ...(present ? { present } : {}),
  };
}

sinkContract(
  'influxdb2 (VictoriaMetrics)',
  async () => {
    const vm = await startVictoriaMetrics();
    const real = createInfluxV2Sink({ url: vm.url, token: 'not-checked', org: 'ferry', bucket: 'ferry', timeoutMs: 2_000 });
    const names = new Map<string, { measurement: string; field: string }>();
    return {
      sink: recording(real, names),
      readBack: () => readVictoria(vm, names),
      stopDatabase: () => vm.kill(),
      cleanup: async () => {
        await real.close();
        await vm.stop();
      },
    };
  },
  // VictoriaMetrics keeps numbers only, at millisecond resolution.
  { stringFields: false, booleanFields: false, timestampResolution: 'ms' },
);

describe('influxdb2 sink against VictoriaMetrics', () => {
  let vm: VictoriaHandle | undefined;
  afterEach(async () => {
    await vm?.stop();
    vm = undefined;
  });
  const point: Point = { measurement: 'telemetry', tags: { device: 'dev-1' }, fields: { temperature: 21.5 }, timestampNs: 1_700_000_000_123_456_789n };

  it('stores a repeated write as a second raw sample with the same timestamp (VictoriaMetrics does not overwrite)', async () => {
    vm = await startVictoriaMetrics();
    const sink = createSink({ type: 'influxdb2', url: vm.url, token: 't', org: 'o', bucket: 'b' });
    await sink.write([point]);
    await sink.write([point]);
    await vm.flush();
    const [series] = await vm.exportSeries('{__name__="telemetry_temperature"}');
    expect(series?.metric).toEqual({ __name__: 'telemetry_temperature', device: 'dev-1' });
    // Raw storage keeps both; only -dedup.minScrapeInterval would collapse them (and would
    // also collapse two readings of one device in the same millisecond).
    expect(series?.timestamps).toEqual([1_700_000_000_123, 1_700_000_000_123]);
    expect(series?.values).toEqual([21.5, 21.5]);
    await sink.close();
  });

  it('round-trips generated hostile names through VictoriaMetrics as InfluxDB reads them', async () => {
    vm = await startVictoriaMetrics();
    const server = vm;
    const sink = createInfluxV2Sink({ url: server.url, token: 't', org: 'o', bucket: 'b' });
    const nameChar = fc.constantFrom(' ', ',', '=', '"', "'", '\\', '#', 'a', 'Z', '0', 'é', '日', '🚀', '🌡️');
    const name = fc.oneof(fc.string({ unit: nameChar, minLength: 1, maxLength: 8 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 8 }));
    let run = 0;
    await fc.assert(
      fc.asyncProperty(name, fc.dictionary(name, name, { maxKeys: 3 }), name, fc.integer({ min: -1_000_000, max: 1_000_000 }), async (measurementName, tags, field, value) => {
        fc.pre(!('__name__' in tags));
        run += 1;
        const point: Point = { measurement: `${measurementName}|${run}`, tags, fields: { [field]: value }, timestampNs: 1_700_000_000_000_000_000n + BigInt(run) * 1_000_000n };
        fc.pre(checkPoint(point) === undefined);
        expect(await sink.write([point])).toEqual({ written: 1, rejected: [] });
        await server.flush();
        const mine = (await server.exportSeries('{__name__!=""}')).filter((s) => s.metric.__name__ === `${point.measurement}_${field}`);
        expect(mine).toHaveLength(1);
        const { __name__: _name, ...labels } = mine[0]?.metric ?? {};
        expect(labels).toEqual(tags);
        expect(mine[0]?.values).toEqual([value]);
      }),
      { numRuns: 40 },
    );
    await sink.close();
  });

  it('writes again once the database is back after a crash', async () => {
    vm = await startVictoriaMetrics();
    const sink = createInfluxV2Sink({ url: vm.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 2_000 });
    await vm.kill();
    await expect(sink.write([point])).rejects.toMatchObject({ code: 'FERRY_ERR_SINK_UNAVAILABLE' });
    await vm.restart();
    expect(await sink.ping()).toBe(true);
    expect(await sink.write([point])).toEqual({ written: 1, rejected: [] });
    await vm.flush();
    expect(await vm.exportSeries('{__name__="telemetry_temperature"}')).toHaveLength(1);
    await sink.close();
  });
});

// VictoriaMetrics never refuses a point (it answers 204 and drops or zeroes what it cannot
// parse) and has no credentials, so InfluxDB 2's answers are played by a small HTTP server.
interface Answer {
  status: number;
  body?: string;
  headers?: Record<string, string>;
}
interface FakeInflux {
  url: string;
  requests: Array<{ url: string; headers: IncomingMessage['headers']; body: string }>;
  close(): Promise<void>;
}

async function fakeInflux(answer: (body: string) => Answer | 'hang'): Promise<FakeInflux> {
  const requests: FakeInflux['requests'] = [];
  const hanging: ServerResponse[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ url: req.url ?? '', headers: req.headers, body });
      const a = answer(body);
      if (a === 'hang') {
        hanging.push(res);
        return;
      }
      res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
      res.end(a.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: async () => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('influxdb2 sink answers (InfluxDB 2 played by a local HTTP server)', () => {
  const fakes: FakeInflux[] = [];
  afterEach(async () => {
    for (const f of fakes.splice(0)) await f.close();
  });
  async function serve(answer: (body: string) => Answer | 'hang'): Promise<FakeInflux> {
    const fake = await fakeInflux(answer);
    fakes.push(fake);
    return fake;
  }
  const p = (i: number, fields: Point['fields'] = { v: i }): Point => ({ measurement: 'm', tags: { d: `d${i}` }, fields, timestampNs: BigInt(i) });

  it('sends one uncompressed request with precision ns and the token, and resolves only on the answer', async () => {
    const fake = await serve(() => ({ status: 204 }));
    const sink = createInfluxV2Sink({ url: `${fake.url}/`, token: 'secret-token', org: 'my org', bucket: 'b/1' });
    expect(await sink.write([p(1), p(2)])).toEqual({ written: 2, rejected: [] });
    expect(fake.requests).toHaveLength(1);
    const [request] = fake.requests;
    expect(request?.url).toBe('/api/v2/write?org=my%20org&bucket=b%2F1&precision=ns');
    expect(request?.headers.authorization).toBe('Token secret-token');
    expect(request?.headers['content-encoding']).toBeUndefined();
    expect(request?.body).toBe('m,d=d1 v=1 1\nm,d=d2 v=2 2');
    expect(sink.description).toBe(`influxdb2 ${fake.url} org=my org bucket=b/1`);
    await sink.close();
  });

  it('splits a refused batch (InfluxDB 2 refuses it whole) and returns the refused point with the message', async () => {
    const fake = await serve((body) =>
      body.includes('v="text"') ? { status: 400, body: JSON.stringify({ code: 'invalid', message: 'field type conflict on v' }) } : { status: 204 },
    );
    const sink = createInfluxV2Sink({ url: fake.url, token: 't', org: 'o', bucket: 'b' });
    const result = await sink.write([p(0), p(1), p(2, { v: 'text' }), p(3), p(4)]);
    expect(result).toEqual({ written: 4, rejected: [{ index: 2, reason: 'field type conflict on v' }] });
    const writtenLines = fake.requests.filter((r) => !r.body.includes('text')).flatMap((r) => r.body.split('\n'));
    expect(writtenLines.sort()).toEqual(['m,d=d0 v=0 0', 'm,d=d1 v=1 1', 'm,d=d3 v=3 3', 'm,d=d4 v=4 4']);
    await sink.close();
  });

  it('merges points refused before sending with points the database refused, by index', async () => {
    const fake = await serve((body) => (body.includes('d=d3') ? { status: 422, body: '{"message":"outside retention"}' } : { status: 204 }));
    const sink = createInfluxV2Sink({ url: fake.url, token: 't', org: 'o', bucket: 'b' });
    const result = await sink.write([p(0), p(1, {}), p(2), p(3)]);
    expect(result.written).toBe(2);
    expect(result.rejected).toEqual([
      { index: 1, reason: 'point has no fields' },
      { index: 3, reason: 'outside retention' },
    ]);
    await sink.close();
  });

  it.each([
    [401, /credentials refused/],
    [403, /credentials refused/],
    [404, /not found/],
  ])('reports HTTP %i as the database being unavailable, dead-lettering nothing', async (status, message) => {
    const fake = await serve(() => ({ status, body: '{"code":"unauthorized","message":"no"}' }));
    const sink = createInfluxV2Sink({ url: fake.url, token: 't', org: 'o', bucket: 'b' });
    const failure: unknown = await sink.write([p(1), p(2)]).catch((err: unknown) => err);
    expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    expect((failure as Error).message).toMatch(message);
    expect((failure as { details: unknown }).details).toMatchObject({ status });
    // No bisection: misconfiguration is not the data's fault.
    expect(fake.requests).toHaveLength(1);
    await sink.close();
  });

  it('reports 503 and 429 as unavailable with the delay Retry-After asks for, and leaves the retry to the caller', async () => {
    for (const status of [503, 429]) {
      const fake = await serve(() => ({ status, body: '{"message":"busy"}', headers: { 'retry-after': '3' } }));
      const sink = createInfluxV2Sink({ url: fake.url, token: 't', org: 'o', bucket: 'b' });
      const failure: unknown = await sink.write([p(1)]).catch((err: unknown) => err);
      expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
      expect((failure as { details: unknown }).details).toMatchObject({ status, retryAfterMs: 3000 });
      expect(fake.requests).toHaveLength(1);
      await sink.close();
    }
  });

  it('takes only 204 (or 201) as written: a 200 or 202 from something else at that address is unavailable, not a write', async () => {
    for (const status of [200, 202]) {
      const fake = await serve(() => ({ status, body: '<html>login</html>' }));
      const sink = createInfluxV2Sink({ url: fake.url, token: 't', org: 'o', bucket: 'b' });
      const failure: unknown = await sink.write([p(1)]).catch((err: unknown) => err);
      expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE'), `status ${status}`).toBe(true);
      expect((failure as { details: unknown }).details).toMatchObject({ status });
      await sink.close();
    }
  });

  it('reports a database that does not answer in time as unavailable', async () => {
    const fake = await serve(() => 'hang');
    const sink = createInfluxV2Sink({ url: fake.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 200 });
    const failure: unknown = await sink.write([p(1)]).catch((err: unknown) => err);
    expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    expect((failure as Error).message).toMatch(/no answer within 200 ms/);
    await sink.close();
  });

  it('reports a refused connection as unavailable and ping() false', async () => {
    const fake = await serve(() => ({ status: 204 }));
    const url = fake.url;
    await fake.close();
    fakes.length = 0;
    const sink = createInfluxV2Sink({ url, token: 't', org: 'o', bucket: 'b' });
    expect(await sink.ping()).toBe(false);
    const failure: unknown = await sink.write([p(1)]).catch((err: unknown) => err);
    expect(isFerryError(failure, 'FERRY_ERR_SINK_UNAVAILABLE')).toBe(true);
    expect((failure as Error).message).toMatch(/ECONNREFUSED/);
  });

  it('refuses a config with a bad URL or a missing token, naming the field', () => {
    let thrown: unknown;
    try {
      createSink({ type: 'influxdb2', url: 'not a url', token: '', org: 'o', bucket: 'b' });
    } catch (err) {
      thrown = err;
    }
    expect(isFerryError(thrown, 'FERRY_ERR_CONFIG_INVALID')).toBe(true);
    expect((thrown as { details: { fields: string[] } }).details.fields.sort()).toEqual(['token', 'url']);
  });
});
