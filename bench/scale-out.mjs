#!/usr/bin/env node
// Scale-out benchmark (issue #20, items 5 and 6): test/faults/scale-out.test.ts cases A and B at
// benchmark size, with the figures a sizing table needs. Per case, every process is a real child
// on loopback with its own temp dir:
//   mosquitto: MQTT.js devices -> `--gateways` `ferry gateway`s -> Mosquitto 2 -> `--ingestors`
//              `ferry ingestor`s on an MQTT 5 shared subscription (broker.sharedGroup) with their
//              state in Redis (state.redisUrl) -> VictoriaMetrics (influxdb2 sink);
//   ferry:     the same through two `ferry broker`s clustered through their own Redis, ingestors and
//              gateways spread over both (every ingestor gets every batch: leases by rendezvous);
//   single:    the baseline the issue compares with: one `ferry ingestor` without Redis (its SQLite
//              stores) behind Mosquitto, the same kill schedule.
// While the devices publish, one ingestor is kill -9ed every `--kill-every-ms` (rotating, each
// restarted at once on the same ports and data dir) until every outbox is empty. Then, from
// VictoriaMetrics' raw export (/api/v1/export): readings lost and duplicate samples; from the
// ingestors' GET /api/fleet/counts: the readings written across all ingestors.
// Rates: readings over the time from the first publish until every outbox is empty (end to end,
// kills included); CPU seconds of each process from /proc/<pid>/stat over that time (a killed
// ingestor's CPU is read just before the kill, a restarted one counts its start-up); Redis
// operations from INFO commandstats (every command run, those inside Lua scripts included, and the
// script calls among them). Not a test: nothing asserted.
// Progress goes to stderr; the last stdout line is one JSON object.
//
//   node bench/run.mjs scale-out [--readings 100000] [--cases mosquitto,ferry] [--ingestors 3]
//       [--gateways 3] [--devices 10] [--window 20] [--kill-every-ms 3000] [--no-kills]
//       [--lease-ms 2000] [--heartbeat-ms 300] [--ack-timeout-ms 3000] [--keep]
//
// Needs the built workspace (`npx tsc -b`).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { stablePort, startMosquitto, startRedis, startVictoriaMetrics } from '@ferry/testkit';
import { cpuMsOf, pause, tail, waitUntil } from './lib/processes.mjs';

const FERRY_MAIN = fileURLToPath(new URL('../apps/ferry/dist/main.js', import.meta.url));
const CASES = ['mosquitto', 'ferry', 'single'];

const log = (line) => process.stderr.write(`[bench scale-out] ${line}\n`);
const round1 = (x) => Math.round(x * 10) / 10;
const round2 = (x) => Math.round(x * 100) / 100;
const round4 = (x) => Math.round(x * 10_000) / 10_000;

function parseArgs(argv) {
  const opts = {
    readings: 100_000,
    cases: ['mosquitto', 'ferry'],
    ingestors: 3,
    gateways: 3,
    devices: 10,
    window: 20,
    killEveryMs: 3_000,
    kills: true,
    // The test's timings (the shipped defaults are leaseMs 5000, heartbeatMs 1000, ackTimeoutMs 15000).
    leaseMs: 2_000,
    heartbeatMs: 300,
    ackTimeoutMs: 3_000,
    keep: false,
  };
  const ints = { '--readings': 'readings', '--ingestors': 'ingestors', '--gateways': 'gateways', '--devices': 'devices', '--window': 'window', '--kill-every-ms': 'killEveryMs', '--lease-ms': 'leaseMs', '--heartbeat-ms': 'heartbeatMs', '--ack-timeout-ms': 'ackTimeoutMs' };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag in ints) {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${flag} needs a positive integer`);
      opts[ints[flag]] = v;
    } else if (flag === '--cases') {
      opts.cases = (argv[++i] ?? '').split(',');
      if (opts.cases.length === 0 || opts.cases.some((c) => !CASES.includes(c))) throw new Error(`--cases takes some of ${CASES.join(',')}`);
    } else if (flag === '--no-kills') opts.kills = false;
    else if (flag === '--keep') opts.keep = true;
    else throw new Error(`unknown flag ${flag}`);
  }
  return opts;
}

// ---------------------------------------------------------------- children
// Every child dies with the bench: SIGKILL on exit, and setpriv's parent-death signal when the
// bench itself is killed outright (as @ferry/testkit does for its servers).
const children = new Set();
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    log(`${signal}: stopping`);
    process.exit(130);
  });
}

/**
 * A `ferry <kind>` child on fixed ports that can be killed and started again, counting the CPU time
 * of all its lives from the moment measure() is called.
 */
function ferryChild(name, kind, config, dir, httpPort) {
  const configFile = join(dir, `${name}.json`);
  const logFile = join(dir, `${name}.log`);
  writeFileSync(configFile, JSON.stringify(config));
  let child;
  let exited = Promise.resolve();
  let measuring = false;
  /** CPU ms of lives ended since measure(). */
  let cpuMsEnded = 0;
  /** The running life's CPU ms at measure() (0 for a life started after). */
  let cpuMsBase = 0;
  const handle = {
    name,
    kind,
    httpUrl: `http://127.0.0.1:${httpPort}`,
    logFile,
    starts: 0,
    async start() {
      if (child) return;
      handle.starts += 1;
      const fd = openSync(logFile, 'a');
      let c;
      try {
        const args = [FERRY_MAIN, kind, '-c', configFile];
        const [command, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', process.execPath, ...args]] : [process.execPath, args];
        c = spawn(command, argv, { stdio: ['ignore', fd, fd], env: process.env });
      } finally {
        closeSync(fd);
      }
      child = c;
      children.add(c);
      exited = new Promise((resolve) => c.once('exit', resolve)).then(() => {
        children.delete(c);
        if (child === c) child = undefined;
      });
      // Ready once the CLI says so on stdout, once per start: /healthz answers 200 as soon as the
      // broker connection is up, before an ingestor's subscriptions are acknowledged.
      const starts = handle.starts;
      await waitUntil(
        async () => {
          if (child !== c) throw new Error(`${name} exited while starting:\n${tail(logFile)}`);
          return readFileSync(logFile, 'utf8').split('"state":"ready"').length - 1 >= starts;
        },
        `${name} to report ready`,
        120_000,
        100,
      ).catch((err) => {
        throw new Error(`${err.message}\n${tail(logFile)}`);
      });
    },
    /** kill -9, after reading its CPU time (the last moment before the signal is not counted). */
    async kill() {
      const c = child;
      if (!c) return;
      const cpu = cpuMsOf(c.pid);
      c.kill('SIGKILL');
      await exited;
      if (measuring && cpu !== undefined) cpuMsEnded += cpu - cpuMsBase;
      cpuMsBase = 0;
    },
    async stop() {
      const c = child;
      if (!c) return;
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    },
    /** From now on, count CPU time: what the running life used so far is left out. */
    measure() {
      measuring = true;
      cpuMsEnded = 0;
      cpuMsBase = child ? (cpuMsOf(child.pid) ?? 0) : 0;
    },
    /** CPU ms since measure(), over every life. */
    cpuMs() {
      return cpuMsEnded + (child ? (cpuMsOf(child.pid) ?? cpuMsBase) - cpuMsBase : 0);
    },
  };
  return handle;
}

/** A testkit server's CPU, as the same kind of counter (it is never killed here). */
function serverCpu(name, server) {
  let at = 0;
  return {
    name,
    measure() {
      at = cpuMsOf(server.pid) ?? 0;
    },
    cpuMs() {
      return (cpuMsOf(server.pid) ?? at) - at;
    },
  };
}

// ---------------------------------------------------------------- Redis, read directly

/** One command on a fresh connection (RESP2) whose reply is a bulk string (INFO): resolves with its text. */
function redisCommand(url, args) {
  const { hostname, port } = new URL(url);
  const request = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`redis ${args[0]} unanswered`));
    }, 10_000);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      // Only the replies used here: a bulk string (INFO).
      const lineEnd = buf.indexOf('\r\n');
      if (lineEnd < 0) return;
      if (buf[0] === 0x2d) {
        clearTimeout(timer);
        socket.destroy();
        reject(new Error(buf.toString('utf8', 1, lineEnd)));
        return;
      }
      const len = Number(buf.toString('utf8', 1, lineEnd));
      if (buf.length < lineEnd + 2 + len + 2) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(buf.toString('utf8', lineEnd + 2, lineEnd + 2 + len));
    });
    socket.write(request);
  });
}

/** Every command Redis ran so far, by name (commandstats: those inside Lua scripts included). */
async function redisOps(url) {
  const commandstats = await redisCommand(url, ['INFO', 'commandstats']);
  const byCommand = {};
  for (const m of commandstats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) byCommand[m[1]] = Number(m[2]);
  return byCommand;
}

/**
 * Redis work per reading between two redisOps(): every command run (what costs Redis CPU), and the
 * script calls among them (EVALSHA/EVAL: round trips that run many commands each).
 */
function opsDelta(before, after, readings) {
  const byCommand = {};
  let run = 0;
  for (const [name, calls] of Object.entries(after)) {
    // INFO is the bench's own.
    if (name === 'info') continue;
    const d = calls - (before[name] ?? 0);
    if (d <= 0) continue;
    byCommand[name] = d;
    run += d;
  }
  const scripts = (byCommand.evalsha ?? 0) + (byCommand.eval ?? 0);
  return {
    commands: run,
    commandsPerReading: round4(run / readings),
    scriptCalls: scripts,
    scriptCallsPerReading: round4(scripts / readings),
    byCommand: Object.fromEntries(Object.entries(byCommand).sort(([, a], [, b]) => b - a)),
  };
}

// ---------------------------------------------------------------- devices

const topicOf = (device) => `devices/${device}/telemetry`;

/** Device payload as test/faults/devices.ts writes it: reading n of a device at baseTs + n ms. */
function payloadOf(n, baseTs) {
  return JSON.stringify({ ts: baseTs + n, seq: n, metrics: { n, v: n / 1000 } });
}

/**
 * Every device publishes its readings (QoS 1, `window` in flight) to its gateway's listener over one
 * connection. The gateways are never killed, so a PUBACK is never lost and nothing is republished.
 */
async function publishAll(gateways, opts, perDevice, baseTs) {
  let acked = 0;
  await Promise.all(
    gateways.flatMap((g) =>
      g.devices.map(async (device) => {
        const client = await mqtt.connectAsync(g.deviceUrl, { protocolVersion: 4, clientId: `${device}-${process.pid}`, clean: true, reconnectPeriod: 0 });
        try {
          await new Promise((resolve, reject) => {
            let next = 0;
            let done = 0;
            let inFlight = 0;
            client.once('close', () => {
              if (done < perDevice) reject(new Error(`device ${device} lost its connection with ${perDevice - done} readings unacknowledged`));
            });
            const pump = () => {
              while (inFlight < opts.window && next < perDevice) {
                const n = next++;
                inFlight += 1;
                client.publish(topicOf(device), payloadOf(n, baseTs), { qos: 1 }, (err) => {
                  inFlight -= 1;
                  if (err) {
                    reject(err);
                    return;
                  }
                  done += 1;
                  acked += 1;
                  if (done === perDevice) resolve();
                  else pump();
                });
              }
            };
            pump();
          });
        } finally {
          await client.endAsync().catch(() => undefined);
        }
      }),
    ),
  );
  return acked;
}

// ---------------------------------------------------------------- one case

async function gatewayDepth(g) {
  const res = await fetch(`${g.process.httpUrl}/healthz`);
  const health = await res.json();
  return health.outbox.depth;
}

/** Raw samples of telemetry_n per device and n. */
async function exportCopies(vm, range) {
  await vm.flush();
  const copies = new Map();
  for (const series of await vm.exportSeries('{__name__="telemetry_n"}', range)) {
    for (const value of series.values) {
      const key = `${series.metric.device}:${value}`;
      copies.set(key, (copies.get(key) ?? 0) + 1);
    }
  }
  return copies;
}

/** Readings written across every ingestor (GET /api/fleet/counts), asked of the first that answers. */
async function fleetWrittenFrom(ingestors) {
  const errors = [];
  for (const p of ingestors) {
    try {
      const res = await fetch(`${p.httpUrl}/api/fleet/counts`);
      if (res.ok) return (await res.json()).total?.written;
      errors.push(`${p.name}: HTTP ${res.status}`);
    } catch (err) {
      errors.push(`${p.name}: ${err.message}`);
    }
  }
  return `not answered (${errors.join('; ')})`;
}

async function runCase(kind, opts, baseDir) {
  const dir = join(baseDir, kind);
  await mkdir(dir, { recursive: true });
  const servers = [];
  const ferry = [];
  const cpuCounters = [];
  const single = kind === 'single';
  const ingestorCount = single ? 1 : opts.ingestors;
  try {
    const [redis, vm] = await Promise.all([startRedis({ persistent: true }), startVictoriaMetrics()]);
    servers.push(redis, vm);
    let brokerUrls;
    let brokerRedis;
    if (kind === 'ferry') {
      brokerRedis = await startRedis();
      servers.push(brokerRedis);
      brokerUrls = [];
      for (let b = 0; b < 2; b++) {
        const [port, http] = [await stablePort(), await stablePort()];
        brokerUrls.push(`mqtt://127.0.0.1:${port}`);
        ferry.push(ferryChild(`broker-${b}`, 'broker', { listen: { host: '127.0.0.1', port }, http: { host: '127.0.0.1', port: http }, cluster: { redisUrl: brokerRedis.url }, logLevel: 'info' }, dir, http));
      }
      await Promise.all(ferry.map((b) => b.start()));
    } else {
      const mosquitto = await startMosquitto();
      servers.push(mosquitto);
      cpuCounters.push(serverCpu('mosquitto', mosquitto));
      brokerUrls = [mosquitto.url];
    }
    const brokerFor = (i) => brokerUrls[i % brokerUrls.length];
    const ingestors = [];
    for (let i = 0; i < ingestorCount; i++) {
      const http = await stablePort();
      ingestors.push(
        ferryChild(
          `ingestor-${i}`,
          'ingestor',
          {
            ingestorId: `ingestor-${i}`,
            dataDir: join(dir, `ingestor-${i}`),
            broker: { url: brokerFor(i), ...(kind === 'mosquitto' ? { sharedGroup: 'ferry-ingestors' } : {}) },
            sink: { type: 'influxdb2', url: vm.url, token: 'bench', org: 'ferry', bucket: 'ferry' },
            http: { host: '127.0.0.1', port: http },
            write: { retry: { initialMs: 100, maxMs: 1000 } },
            ...(single ? {} : { state: { redisUrl: redis.url, leaseMs: opts.leaseMs, heartbeatMs: opts.heartbeatMs } }),
            logLevel: 'info',
          },
          dir,
          http,
        ),
      );
    }
    ferry.push(...ingestors);
    await Promise.all(ingestors.map((p) => p.start()));
    if (!single) {
      await waitUntil(
        async () => {
          for (const p of ingestors) {
            const stats = await (await fetch(`${p.httpUrl}/api/stats`)).json();
            if ((stats.cluster?.members?.length ?? 0) !== ingestorCount) return false;
          }
          return true;
        },
        'the ingestors to see each other in Redis',
      );
    }
    const gateways = [];
    for (let g = 0; g < opts.gateways; g++) {
      const [devicePort, http] = [await stablePort(), await stablePort()];
      const id = `gw-bench-${g}`;
      const proc = ferryChild(
        `gateway-${g}`,
        'gateway',
        {
          gatewayId: id,
          dataDir: join(dir, `gateway-${g}`),
          devices: { listen: { host: '127.0.0.1', port: devicePort } },
          uplink: { url: brokerFor(g + 1), ackTimeoutMs: opts.ackTimeoutMs, reconnectMinMs: 100, reconnectMaxMs: 1_000 },
          http: { host: '127.0.0.1', port: http },
          logLevel: 'info',
        },
        dir,
        http,
      );
      gateways.push({ id, process: proc, deviceUrl: `mqtt://127.0.0.1:${devicePort}`, devices: Array.from({ length: opts.devices }, (_, d) => `${id}-d${d}`) });
      ferry.push(proc);
    }
    await Promise.all(gateways.map((g) => g.process.start()));
    const brokers = ferry.filter((p) => p.kind === 'broker');
    cpuCounters.push(...ferry, serverCpu('redis-state', redis), ...(brokerRedis ? [serverCpu('redis-brokers', brokerRedis)] : []), serverCpu('victoria-metrics', vm));

    const deviceCount = opts.gateways * opts.devices;
    const perDevice = Math.ceil(opts.readings / deviceCount);
    const readings = perDevice * deviceCount;
    const baseTs = Date.now() - 10 * 60_000 - perDevice;
    log(`${kind}: ${ingestorCount} ingestor(s), ${brokers.length || 1} broker(s), ${opts.gateways} gateways x ${opts.devices} devices x ${perDevice} readings = ${readings}; load ${loadavg().map(round2).join(' ')}`);

    for (const c of cpuCounters) c.measure();
    const redisBefore = await redisOps(redis.url);
    const brokerRedisBefore = brokerRedis ? await redisOps(brokerRedis.url) : undefined;
    const t0 = performance.now();
    let published = false;
    let publishedAt;
    const publishing = publishAll(gateways, opts, perDevice, baseTs).then((n) => {
      published = true;
      publishedAt = performance.now();
      log(`${kind}: ${n} readings PUBACKed by the gateways in ${round1((publishedAt - t0) / 1000)} s`);
      return n;
    });
    publishing.catch(() => undefined);
    const depth = async () => (await Promise.all(gateways.map(gatewayDepth))).reduce((a, b) => a + b, 0);

    // kill -9 every killEveryMs, rotating, restarts in the background, until every outbox is empty.
    const kills = [];
    const restarting = new Map();
    let lastProgress = performance.now();
    for (let turn = 0; ; turn++) {
      await pause(opts.kills ? opts.killEveryMs : 500);
      if (published && (await depth()) === 0) break;
      if (performance.now() - lastProgress > 10_000) {
        lastProgress = performance.now();
        log(`${kind}: ${round1((performance.now() - t0) / 1000)} s, outboxes ${await depth()}, kills ${kills.length}`);
      }
      if (performance.now() - t0 > 1_800_000) throw new Error(`${kind}: not drained after 30 minutes`);
      if (!opts.kills) continue;
      const victim = ingestors[turn % ingestors.length];
      await restarting.get(victim);
      const at = performance.now();
      await victim.kill();
      kills.push({ name: victim.name, atSec: round1((at - t0) / 1000) });
      restarting.set(victim, victim.start());
    }
    const drainedAt = performance.now();
    await Promise.all(restarting.values());
    const acked = await publishing;
    const seconds = (drainedAt - t0) / 1000;
    const cpu = Object.fromEntries(cpuCounters.map((c) => [c.name, round2(c.cpuMs() / 1000)]));
    const redisAfter = await redisOps(redis.url);
    const brokerRedisAfter = brokerRedis ? await redisOps(brokerRedis.url) : undefined;
    log(`${kind}: every outbox empty after ${round1(seconds)} s (${kills.length} kills); reading VictoriaMetrics`);

    const copies = await exportCopies(vm, { start: baseTs - 1_000, end: baseTs + perDevice + 1_000 });
    let lost = 0;
    let duplicateReadings = 0;
    let extraSamples = 0;
    for (const g of gateways) {
      for (const device of g.devices) {
        for (let n = 0; n < perDevice; n++) {
          const c = copies.get(`${device}:${n}`) ?? 0;
          if (c === 0) lost += 1;
          if (c > 1) {
            duplicateReadings += 1;
            extraSamples += c - 1;
          }
        }
      }
    }
    // Any ingestor's ops API answers for the whole fleet.
    const fleetWritten = single ? undefined : await fleetWrittenFrom(ingestors);
    const ingestorCpu = ingestors.reduce((s, p) => s + p.cpuMs(), 0) / 1000;
    const brokerCpu = kind === 'ferry' ? brokers.reduce((s, p) => s + p.cpuMs(), 0) / 1000 : cpuCounters.find((c) => c.name === 'mosquitto').cpuMs() / 1000;
    const result = {
      case: kind,
      readings,
      acked,
      kills: kills.length,
      lost,
      duplicateReadings,
      duplicateSamples: extraSamples,
      fleetWritten,
      seconds: round1(seconds),
      publishSeconds: round1((publishedAt - t0) / 1000),
      readingsPerSec: Math.round(readings / seconds),
      cpuSeconds: cpu,
      ingestorCpuSeconds: round2(ingestorCpu),
      brokerCpuSeconds: round2(brokerCpu),
      readingsPerIngestorCoreSecond: Math.round(readings / ingestorCpu),
      readingsPerBrokerCoreSecond: Math.round(readings / brokerCpu),
      redisState: single ? undefined : opsDelta(redisBefore, redisAfter, readings),
      redisBrokers: brokerRedisBefore ? opsDelta(brokerRedisBefore, brokerRedisAfter, readings) : undefined,
      killTimes: kills,
      ingestorStarts: Object.fromEntries(ingestors.map((p) => [p.name, p.starts])),
      loadAverageEnd: loadavg().map(round2),
    };
    log(`${kind}: lost ${lost}, duplicate samples ${extraSamples}, ${result.readingsPerSec} readings/s, ingestors ${result.ingestorCpuSeconds} CPU s`);
    return result;
  } finally {
    for (const kindToStop of ['gateway', 'ingestor', 'broker']) await Promise.allSettled(ferry.filter((p) => p.kind === kindToStop).map((p) => p.stop()));
    await Promise.allSettled(servers.map((s) => s.stop()));
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!existsSync(FERRY_MAIN)) throw new Error(`${FERRY_MAIN} is missing: run \`npx tsc -b\` (or \`npm run build\`) first`);
  const baseDir = await mkdtemp(join(tmpdir(), 'ferry-bench-scale-out-'));
  const startedAt = new Date().toISOString();
  const loadStart = loadavg().map(round2);
  log(`work dir ${baseDir}; ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}; load average ${loadStart.join(' ')}`);
  const cases = [];
  try {
    for (const kind of opts.cases) cases.push(await runCase(kind, opts, baseDir));
  } finally {
    if (opts.keep) log(`kept ${baseDir}`);
    else await rm(baseDir, { recursive: true, force: true });
  }
  const result = {
    bench: 'scale-out',
    date: startedAt,
    finishedAt: new Date().toISOString(),
    machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
    settings: { readings: opts.readings, ingestors: opts.ingestors, gateways: opts.gateways, devicesPerGateway: opts.devices, window: opts.window, killEveryMs: opts.kills ? opts.killEveryMs : null, leaseMs: opts.leaseMs, heartbeatMs: opts.heartbeatMs, ackTimeoutMs: opts.ackTimeoutMs },
    cases,
    // Above the core count, a CPU figure includes waiting for a core and a rate is a lower bound.
    loadAverage: { start: loadStart, end: loadavg().map(round2) },
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
