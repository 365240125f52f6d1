import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError, type FerryError } from '@ferry/protocol';
import {
  findBinary,
  freePort,
  startInfluxd,
  startMosquitto,
  startRedis,
  startVictoriaMetrics,
  waitFor,
  type InfluxdHandle,
  type ServerHandle,
  type VictoriaHandle,
} from '../src/index.js';

/** Runs a command to completion and resolves with its stdout; rejects on a non-zero exit. */
function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} exited ${code}: ${err}`))));
  });
}

/**
 * Relays one QoS 1 message through the broker between two client processes. The
 * subscriber first registers a persistent session and leaves (-E), so the broker must
 * queue the message for it; reading it back then needs no wait for a SUBACK.
 */
async function relayThroughBroker(broker: ServerHandle, topic: string, payload: string): Promise<string> {
  const where = ['-h', broker.host, '-p', String(broker.port)];
  const subscriber = [...where, '-i', `relay-${topic.replace(/\W/g, '-')}`, '-c', '-q', '1', '-t', topic];
  await run(findBinary('mosquitto_sub'), [...subscriber, '-E']);
  await run(findBinary('mosquitto_pub'), [...where, '-t', topic, '-q', '1', '-m', payload]);
  const out = await run(findBinary('mosquitto_sub'), [...subscriber, '-C', '1', '-W', '20']);
  return out.trim();
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('startMosquitto', () => {
  let broker: ServerHandle;
  beforeAll(async () => {
    broker = await startMosquitto();
  });
  afterAll(async () => {
    await broker.stop();
  });

  it('serves MQTT on a loopback port with its own data dir', () => {
    expect(broker.name).toBe('mosquitto');
    expect(broker.url).toBe(`mqtt://127.0.0.1:${broker.port}`);
    expect(existsSync(broker.dataDir)).toBe(true);
    expect(broker.pid).toBeTypeOf('number');
  });

  it('relays a QoS 1 message from a publisher to a subscriber', async () => {
    expect(await relayThroughBroker(broker, 'ferry/test/relay', 'hello-ferry')).toBe('hello-ferry');
  });

  it('comes back on the same port after kill() and restart()', async () => {
    const { port } = broker;
    const oldPid = broker.pid!;
    await broker.kill();
    expect(broker.pid).toBeUndefined();
    expect(isAlive(oldPid)).toBe(false);
    expect(existsSync(broker.dataDir)).toBe(true);

    await broker.restart();
    expect(broker.port).toBe(port);
    expect(broker.pid).not.toBe(oldPid);
    expect(await relayThroughBroker(broker, 'ferry/test/after-restart', 'again')).toBe('again');
  });

  it('restarts gracefully when restart() is called while it runs', async () => {
    const oldPid = broker.pid!;
    await broker.restart();
    expect(isAlive(oldPid)).toBe(false);
    expect(broker.pid).toBeTypeOf('number');
    expect(await relayThroughBroker(broker, 'ferry/test/graceful', 'ok')).toBe('ok');
  });

  it('refuses to restart with a clear error while another process holds its port', async () => {
    await broker.kill();
    const squatter: Server = createServer();
    await new Promise<void>((resolve) => squatter.listen(broker.port, '127.0.0.1', resolve));
    try {
      const err: unknown = await broker.restart().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isFerryError(err, 'FERRY_ERR_SERVER_START')).toBe(true);
      expect((err as Error).message).toMatch(/in use/);
    } finally {
      await new Promise<void>((resolve) => squatter.close(() => resolve()));
    }
    await broker.restart();
    expect(await relayThroughBroker(broker, 'ferry/test/after-squatter', 'free')).toBe('free');
  });
});

describe('server start failures', () => {
  it('reports the server log when the server cannot start', async () => {
    const err: unknown = await startMosquitto({ extraConfig: 'no_such_mosquitto_option 1' }).then(
      async (b) => {
        await b.stop();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(isFerryError(err, 'FERRY_ERR_SERVER_START')).toBe(true);
    expect((err as Error).message).toMatch(/exited with code \d+/);
    expect((err as Error).message).toContain('no_such_mosquitto_option');
    expect(existsSync((err as FerryError).details['dataDir'] as string)).toBe(false);
  });

  it('fails instead of skipping when a server binary is missing', () => {
    let err: unknown;
    try {
      findBinary('ferry-no-such-server');
    } catch (e) {
      err = e;
    }
    expect(isFerryError(err, 'FERRY_ERR_SERVER_MISSING')).toBe(true);
    expect((err as Error).message).toContain('node scripts/setup.mjs --servers');
  });
});

describe('stop()', () => {
  it('ends the process and removes the data dir', async () => {
    const redis = await startRedis();
    const pid = redis.pid!;
    await redis.stop();
    expect(isAlive(pid)).toBe(false);
    expect(existsSync(redis.dataDir)).toBe(false);
    expect(redis.pid).toBeUndefined();
    await redis.stop(); // a second stop is harmless
  });
});

describe('startInfluxd', () => {
  let influx: InfluxdHandle;
  beforeAll(async () => {
    influx = await startInfluxd();
  });
  afterAll(async () => {
    await influx.stop();
  });

  it('stores written points and returns them to a query', async () => {
    await influx.createDatabase('ferry_test');
    const res = await fetch(`${influx.url}/write?db=ferry_test&precision=ms`, {
      method: 'POST',
      body: 'temperature,device=d1 value=21.5 1700000000000\ntemperature,device=d1 value=22.25 1700000001000\n',
    });
    expect(res.status).toBe(204);

    const series = await influx.query('ferry_test', 'SELECT value FROM temperature', { epoch: 'ms' });
    expect(series).toHaveLength(1);
    expect(series[0]!.name).toBe('temperature');
    expect(series[0]!.columns).toEqual(['time', 'value']);
    expect(series[0]!.values).toEqual([
      [1700000000000, 21.5],
      [1700000001000, 22.25],
    ]);
  });

  it('returns no series for an empty result and throws on a bad query', async () => {
    await influx.createDatabase('empty_db');
    expect(await influx.query('empty_db', 'SELECT * FROM nothing_here')).toEqual([]);
    await expect(influx.query('empty_db', 'SELEKT nonsense')).rejects.toThrow(/error parsing query/);
  });
});

describe('startVictoriaMetrics', () => {
  let vm: VictoriaHandle;
  beforeAll(async () => {
    vm = await startVictoriaMetrics();
  });
  afterAll(async () => {
    await vm.stop();
  });

  it('makes line protocol written to /api/v2/write exportable right after a flush', async () => {
    const now = Date.now();
    const old = Date.UTC(2001, 0, 1);
    const res = await fetch(`${vm.url}/api/v2/write?precision=ms`, {
      method: 'POST',
      body: `humidity,device=d7 value=40 ${old}\nhumidity,device=d7 value=41 ${now}\n`,
    });
    expect(res.status).toBe(204);
    await vm.flush();

    const series = await vm.exportSeries('{__name__="humidity_value"}');
    expect(series).toEqual([{ metric: { __name__: 'humidity_value', device: 'd7' }, values: [40, 41], timestamps: [old, now] }]);
    expect(await vm.exportSeries('{__name__="humidity_value"}', { start: now - 1000 })).toEqual([
      { metric: { __name__: 'humidity_value', device: 'd7' }, values: [41], timestamps: [now] },
    ]);
  });
});

describe('startRedis', () => {
  let redis: ServerHandle;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.stop();
  });

  it('answers PING with +PONG over a raw TCP socket', async () => {
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: redis.host, port: redis.port }, () => socket.write('PING\r\n'));
      socket.once('data', (chunk: Buffer) => {
        socket.end();
        resolve(chunk.toString());
      });
      socket.once('error', reject);
    });
    expect(reply).toBe('+PONG\r\n');
  });
});

describe('waitFor', () => {
  it('resolves with the first truthy probe value', async () => {
    let calls = 0;
    const value = await waitFor(() => (++calls >= 3 ? { calls } : undefined), { intervalMs: 1 });
    expect(value).toEqual({ calls: 3 });
  });

  it('times out with a message naming what it waited for and the last probe error', async () => {
    await expect(waitFor(() => false, { timeoutMs: 100, intervalMs: 10, what: 'the moon to rise' })).rejects.toThrow(
      /timed out after 100 ms .*waiting for the moon to rise/,
    );
    await expect(
      waitFor(
        () => {
          throw new Error('connection refused by the moon');
        },
        { timeoutMs: 50, intervalMs: 10, what: 'the moon' },
      ),
    ).rejects.toThrow(/waiting for the moon; last probe error: connection refused by the moon/);
  });
});

describe('freePort', () => {
  it('returns a port that can be bound on 127.0.0.1', async () => {
    const port = await freePort();
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
});
