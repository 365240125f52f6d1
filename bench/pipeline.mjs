#!/usr/bin/env node
// Whole-pipeline benchmark (issue #19, part 3): readings/s end to end, devices to VictoriaMetrics,
// through Ferry and through the Node-RED flow users build instead, on the same machine, with the
// same publisher and the same count:
//   ferry:   MQTT.js devices -> `ferry gateway` (embedded listener, SQLite outbox) -> `ferry broker`
//            -> `ferry ingestor` (influxdb2 sink, @influxdata/influxdb-client) -> VictoriaMetrics;
//   nodered: MQTT.js devices -> Mosquitto -> Node-RED 4.1 (mqtt in -> json -> function -> join
//            1,000 messages or 1 s -> node-red-contrib-influxdb 0.7 `influxdb batch`) -> VictoriaMetrics.
// Every server is a real child process on loopback with its own temp dir, and every round gets a
// fresh VictoriaMetrics and fresh data dirs; the sides alternate (ferry, nodered, ferry, ...).
// The rate is the readings VictoriaMetrics counts (one query, the same for both sides) over the
// time from the first publish until the count reaches --readings. Not a test: nothing asserted.
// Progress goes to stderr; the last stdout line is one JSON object.
//
//   node bench/run.mjs pipeline [--readings 100000] [--rounds 3] [--in-flight 1000] [--clients 20]
//                               [--devices 1000] [--nodered-influx 2.0|1.x] [--sides ferry,nodered] [--keep]
//
// BENCH_CPU_PROF=<dir> writes a CPU profile of each Node child (gateway, broker, ingestor, node-red).
//
// Needs the built workspace (`npx tsc -b`). Node-RED and node-red-contrib-influxdb are installed
// from npm into bench/.nodered/ (git-ignored) when missing, never into the workspace.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { freePort, startMosquitto, startVictoriaMetrics } from '@ferry/testkit';
import { cpuMsOf, pause, tail, waitUntil } from './lib/processes.mjs';

const FERRY_MAIN = fileURLToPath(new URL('../apps/ferry/dist/main.js', import.meta.url));
const NODERED_DIR = fileURLToPath(new URL('./.nodered/', import.meta.url));
const NODERED_PACKAGES = { 'node-red': '4.1', 'node-red-contrib-influxdb': '0.7' };
const SIDES = ['ferry', 'nodered'];
/** Ferry's default measurement; the Node-RED function writes the same, so one query counts both. */
const MEASUREMENT = 'telemetry';
/** The device the warm-up readings come from; the count leaves it out. */
const PROBE_DEVICE = 'bench-probe';
const PROBE_READINGS = 10;
/** No new reading in VictoriaMetrics for this long ends a round as incomplete. */
const STALL_MS = 60_000;

const log = (line) => process.stderr.write(`[bench pipeline] ${line}\n`);
const round2 = (x) => Math.round(x * 100) / 100;
const loadText = () => loadavg().map((l) => l.toFixed(2)).join(' ');

function parseArgs(argv) {
  const opts = { readings: 100_000, rounds: 3, inFlight: 1000, clients: 20, devices: 1000, noderedInflux: '2.0', sides: SIDES, keep: false };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const next = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${flag} needs a positive integer`);
      return v;
    };
    if (flag === '--readings') opts.readings = next();
    else if (flag === '--rounds') opts.rounds = next();
    else if (flag === '--in-flight') opts.inFlight = next();
    else if (flag === '--clients') opts.clients = next();
    else if (flag === '--devices') opts.devices = next();
    else if (flag === '--nodered-influx') {
      opts.noderedInflux = argv[++i];
      if (opts.noderedInflux !== '2.0' && opts.noderedInflux !== '1.x') throw new Error('--nodered-influx takes 2.0 (the v2 write API) or 1.x (/write)');
    } else if (flag === '--sides') {
      opts.sides = (argv[++i] ?? '').split(',');
      if (opts.sides.length === 0 || opts.sides.some((s) => !SIDES.includes(s))) throw new Error(`--sides takes some of ${SIDES.join(',')}`);
    } else if (flag === '--keep') opts.keep = true;
    else throw new Error(`unknown flag ${flag}`);
  }
  if (opts.inFlight < opts.clients) throw new Error('--in-flight must be at least --clients');
  return opts;
}

// ---------------------------------------------------------------- children
// Every child dies with the bench: SIGKILL on exit, and setpriv's parent-death signal when the
// bench itself is killed outright (as @ferry/testkit does for its servers).
const children = new Set();
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
/** The run's temp dir, removed at exit (unless --keep) however the bench ends. */
const workDir = { path: undefined, keep: false };
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  if (workDir.path !== undefined && !workDir.keep) rmSync(workDir.path, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    log(`${signal}: stopping`);
    process.exit(130);
  });
}

function spawnChild(name, args, { logFile, env = process.env, cwd } = {}) {
  const fd = openSync(logFile, 'a');
  try {
    const [command, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', process.execPath, ...args]] : [process.execPath, args];
    const child = spawn(command, argv, { stdio: ['ignore', fd, fd], env, cwd });
    children.add(child);
    const exited = new Promise((resolve) => child.once('exit', resolve)).then(() => children.delete(child));
    return {
      name,
      child,
      pid: child.pid,
      logFile,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(t);
      },
    };
  } finally {
    closeSync(fd);
  }
}

/** BENCH_GATEWAY_NODE_FLAGS="..." starts the gateway with these node flags (default: none, a plain `node`). */
function ferryNodeFlags(kind) {
  return kind === 'gateway' ? (process.env.BENCH_GATEWAY_NODE_FLAGS ?? '').split(' ').filter(Boolean) : [];
}

/** BENCH_CPU_PROF=<dir> writes a CPU profile of every Node child (Ferry's three, Node-RED) into <dir>/<name>. */
function cpuProfileFlags(name) {
  const dir = process.env.BENCH_CPU_PROF;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${join(dir, name)}`] : [];
}

/**
 * CPU time (ms) the whole machine has spent busy so far, from the first line of /proc/stat (user,
 * nice, system, irq, softirq, steal; in clock ticks of 10 ms): less the bench's own processes, what
 * the rest of a shared machine took during a round.
 */
function machineBusyMs() {
  const [, user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  return (user + nice + system + irq + softirq + steal) * 10;
}

// ---------------------------------------------------------------- the count
/**
 * Readings VictoriaMetrics holds for the selector with device times from `fromMs` to `toMs`, made
 * searchable first (force_flush). Both sides write measurement `telemetry` with the field `temp`
 * and the tag `device`, which VictoriaMetrics stores as samples of `telemetry_temp{device=...}`:
 * one sample a reading. Only samples at the devices' own times count, so a reading stamped with
 * its arrival time instead (minutes later) would not.
 */
async function countReadings(vm, selector, fromMs, toMs) {
  await vm.flush();
  const atMs = toMs + 1000;
  const windowSec = Math.ceil((atMs - fromMs) / 1000) + 1;
  const params = new URLSearchParams({
    query: `sum(count_over_time(${MEASUREMENT}_temp{${selector}}[${windowSec}s]))`,
    time: String(atMs / 1000),
  });
  const res = await fetch(`${vm.url}/api/v1/query?${params.toString()}`);
  const body = await res.text();
  if (!res.ok) throw new Error(`VictoriaMetrics query answered ${res.status}: ${body.slice(0, 300)}`);
  const value = JSON.parse(body).data?.result?.[0]?.value?.[1];
  return value === undefined ? 0 : Number(value);
}

// ---------------------------------------------------------------- the publisher
/** Device payload in the gateway's native format (docs/protocol.md): `{"ts","seq","metrics"}`. */
function readingPayload(i, opts, baseTs) {
  return JSON.stringify({
    ts: baseTs + i,
    seq: Math.floor(i / opts.devices),
    metrics: { temp: 20 + (i % 100) / 10, hum: 40 + (i % 37), batt: round2(3.3 - (i % 50) / 100) },
  });
}

const topicOf = (device) => `devices/${device}/telemetry`;

/**
 * The warm-up: a few readings from PROBE_DEVICE, until VictoriaMetrics has them all. Every
 * connection on the path (uplink, subscriptions, the database client) is then up.
 */
async function warmUp(url, vm) {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `bench-probe-${process.pid}`, clean: true, reconnectPeriod: 0 });
  const since = Date.now() - 1000;
  try {
    for (let n = 0; n < PROBE_READINGS; n += 1) {
      await client.publishAsync(topicOf(PROBE_DEVICE), JSON.stringify({ ts: Date.now(), seq: n, metrics: { temp: 21, hum: 40, batt: 3.3 } }), { qos: 1 });
    }
  } finally {
    await client.endAsync();
  }
  await waitUntil(async () => (await countReadings(vm, `device="${PROBE_DEVICE}"`, since, Date.now())) >= PROBE_READINGS, 'the warm-up readings in VictoriaMetrics', 60_000, 100);
}

/**
 * `--readings` QoS 1 publishes from `--devices` device ids over `--clients` MQTT.js connections,
 * `--in-flight` unacknowledged in all (split evenly), payloads built before the clock starts.
 * Reading i is device i mod devices, so each device's readings go in order over one connection.
 * Resolves with the time of the first publish and of the last PUBACK (performance.now()).
 */
async function publishReadings(url, opts, baseTs) {
  const perClient = Array.from({ length: opts.clients }, () => []);
  for (let i = 0; i < opts.readings; i += 1) {
    perClient[i % opts.clients].push([topicOf(`dev-${i % opts.devices}`), readingPayload(i, opts, baseTs)]);
  }
  const window = Math.floor(opts.inFlight / opts.clients);
  const conns = await Promise.all(
    perClient.map((_, c) => mqtt.connectAsync(url, { protocolVersion: 4, clientId: `bench-dev-${c}-${process.pid}`, clean: true, reconnectPeriod: 0 })),
  );
  let acked = 0;
  let lastAckAt = performance.now();
  const watchdog = setInterval(() => {
    if (performance.now() - lastAckAt > STALL_MS) conns.forEach((c) => c.end(true));
  }, 1000);
  const firstPublishAt = performance.now();
  try {
    await Promise.all(
      conns.map(
        (client, c) =>
          new Promise((resolve, reject) => {
            const messages = perClient[c];
            let next = 0;
            let done = 0;
            let inFlight = 0;
            if (messages.length === 0) {
              resolve();
              return;
            }
            client.once('close', () => {
              if (done < messages.length) reject(new Error(`publisher ${c} closed with ${messages.length - done} readings unacknowledged (no PUBACK for ${STALL_MS / 1000} s?)`));
            });
            const pump = () => {
              while (inFlight < window && next < messages.length) {
                const [topic, payload] = messages[next++];
                inFlight += 1;
                client.publish(topic, payload, { qos: 1 }, (err) => {
                  inFlight -= 1;
                  if (err) {
                    reject(err);
                    return;
                  }
                  done += 1;
                  acked += 1;
                  lastAckAt = performance.now();
                  if (done === messages.length) resolve();
                  else pump();
                });
              }
            };
            pump();
          }),
      ),
    );
  } finally {
    clearInterval(watchdog);
    await Promise.all(conns.map((c) => c.endAsync().catch(() => undefined)));
  }
  return { firstPublishAt, lastAckAt, acked };
}

// ---------------------------------------------------------------- Ferry
async function startFerry(kind, config, dir, httpPort) {
  const file = join(dir, `${kind}.json`);
  writeFileSync(file, JSON.stringify(config));
  const proc = spawnChild(kind, [...cpuProfileFlags(kind), ...ferryNodeFlags(kind), FERRY_MAIN, kind, '-c', file], { logFile: join(dir, `${kind}.log`) });
  await waitUntil(async () => {
    if (proc.child.exitCode !== null) throw new Error(`${kind} exited:\n${tail(proc.logFile)}`);
    const res = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
    await res.arrayBuffer();
    return res.ok;
  }, `${kind} /healthz`).catch((err) => {
    throw new Error(`${err.message}\n${tail(proc.logFile)}`);
  });
  return proc;
}

function metric(text, name) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    sum += Number(rest.slice(rest.lastIndexOf(' ') + 1)) || 0;
  }
  return sum;
}

/**
 * The three Ferry services with the shapes of the shipped configs (docker/config/*.yaml: the broker
 * with a dataDir, so SQLite persistence; the ingestor's influxdb2 sink; every other field at its
 * default, so the gateway's outbox commits with `synchronous: full`), less TLS and passwords
 * (loopback, as Mosquitto on the other side), under a plain `node`.
 */
async function startFerrySide(dir, vm) {
  const [brokerPort, brokerHttp, ingestorHttp, devicePort, gatewayHttp] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const brokerUrl = `mqtt://127.0.0.1:${brokerPort}`;
  const procs = [];
  try {
    procs.push(
      await startFerry(
        'broker',
        { listen: { host: '127.0.0.1', port: brokerPort }, http: { host: '127.0.0.1', port: brokerHttp }, dataDir: join(dir, 'broker'), logLevel: 'info' },
        dir,
        brokerHttp,
      ),
    );
    procs.push(
      await startFerry(
        'ingestor',
        {
          ingestorId: 'bench',
          dataDir: join(dir, 'ingestor'),
          broker: { url: brokerUrl },
          sink: { type: 'influxdb2', url: vm.url, token: 'bench', org: 'ferry', bucket: 'ferry' },
          http: { host: '127.0.0.1', port: ingestorHttp },
          logLevel: 'info',
        },
        dir,
        ingestorHttp,
      ),
    );
    procs.push(
      await startFerry(
        'gateway',
        {
          gatewayId: 'gw-bench',
          dataDir: join(dir, 'gateway'),
          devices: { listen: { host: '127.0.0.1', port: devicePort } },
          uplink: { url: brokerUrl },
          http: { host: '127.0.0.1', port: gatewayHttp },
          logLevel: 'info',
          // BENCH_GATEWAY_BATCH='{"lingerMs":100}': the gateway's `batch` settings, to measure their effect.
          ...(process.env.BENCH_GATEWAY_BATCH ? { batch: JSON.parse(process.env.BENCH_GATEWAY_BATCH) } : {}),
        },
        dir,
        gatewayHttp,
      ),
    );
    await waitUntil(
      async () => metric(await (await fetch(`http://127.0.0.1:${gatewayHttp}/metrics`)).text(), 'ferry_gateway_uplink_connected') === 1,
      "the gateway's uplink",
    );
  } catch (err) {
    for (const p of procs.reverse()) await p.stop();
    throw err;
  }
  const [broker, ingestor, gateway] = procs;
  return {
    url: `mqtt://127.0.0.1:${devicePort}`,
    pids: { gateway: gateway.pid, broker: broker.pid, ingestor: ingestor.pid },
    /** Batches the ingestor accepted and their readings, from its /metrics. */
    async batches() {
      const text = await (await fetch(`http://127.0.0.1:${ingestorHttp}/metrics`)).text();
      return { count: metric(text, 'ferry_ingestor_batch_readings_count'), readings: metric(text, 'ferry_ingestor_batch_readings_sum') };
    },
    async stop() {
      // Devices' side first, as a site would go down.
      await gateway.stop();
      await ingestor.stop();
      await broker.stop();
    },
  };
}

// ---------------------------------------------------------------- Node-RED
function installedVersion(pkg) {
  try {
    return JSON.parse(readFileSync(join(NODERED_DIR, 'node_modules', pkg, 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
}

/** Node-RED and the InfluxDB nodes in bench/.nodered/, installed from npm when missing. */
function ensureNodeRed() {
  const fits = () => Object.entries(NODERED_PACKAGES).every(([pkg, want]) => installedVersion(pkg)?.startsWith(`${want}.`));
  if (fits()) return;
  const specs = Object.entries(NODERED_PACKAGES).map(([pkg, want]) => `${pkg}@${want}`);
  log(`installing ${specs.join(' ')} into ${NODERED_DIR} (npm)`);
  mkdirSync(NODERED_DIR, { recursive: true });
  // npm's output goes to stderr: stdout's last line is the result.
  const r = spawnSync('npm', ['install', '--prefix', NODERED_DIR, '--no-audit', '--no-fund', ...specs], { stdio: ['ignore', 2, 2] });
  if (r.status !== 0 || !fits()) throw new Error(`npm install of ${specs.join(' ')} failed (exit ${r.status ?? r.signal})`);
}

/** The script a Node-RED user writes in the function node: the point the batch node takes. */
const FUNCTION_BODY = `const p = msg.payload;
msg.payload = {
    measurement: '${MEASUREMENT}',
    fields: p.metrics,
    tags: { device: msg.topic.split('/')[1] },
    timestamp: p.ts,
};
return msg;`;

function noderedFlow(mqttPort, vm, influx) {
  const vmPort = new URL(vm.url).port;
  return [
    { id: 'bench-tab', type: 'tab', label: 'devices to VictoriaMetrics', disabled: false, info: '' },
    {
      id: 'bench-broker',
      type: 'mqtt-broker',
      name: 'mosquitto',
      broker: '127.0.0.1',
      port: String(mqttPort),
      clientid: `nodered-bench-${process.pid}`,
      autoConnect: true,
      usetls: false,
      protocolVersion: '4',
      keepalive: '60',
      cleansession: true,
      autoUnsubscribe: true,
      birthTopic: '',
      closeTopic: '',
      willTopic: '',
    },
    {
      id: 'bench-influxdb',
      type: 'influxdb',
      name: 'victoria-metrics',
      influxdbVersion: influx,
      // 1.x: node-influx POSTs /write; 2.0: @influxdata/influxdb-client POSTs /api/v2/write.
      hostname: '127.0.0.1',
      port: vmPort,
      protocol: 'http',
      database: 'ferry',
      usetls: false,
      tls: '',
      url: vm.url,
      timeout: '10',
      rejectUnauthorized: false,
    },
    // QoS 1 as the devices publish; the payload as a string, for the json node to parse.
    { id: 'bench-in', type: 'mqtt in', z: 'bench-tab', name: 'devices', topic: 'devices/+/telemetry', qos: '1', datatype: 'utf8', broker: 'bench-broker', nl: false, rap: true, rh: 0, inputs: 0, x: 100, y: 100, wires: [['bench-json']] },
    { id: 'bench-json', type: 'json', z: 'bench-tab', name: '', property: 'payload', action: 'obj', pretty: false, x: 250, y: 100, wires: [['bench-fn']] },
    { id: 'bench-fn', type: 'function', z: 'bench-tab', name: 'to point', func: FUNCTION_BODY, outputs: 1, timeout: 0, noerr: 0, initialize: '', finalize: '', libs: [], x: 400, y: 100, wires: [['bench-join']] },
    {
      id: 'bench-join',
      type: 'join',
      z: 'bench-tab',
      name: '1,000 or 1 s',
      mode: 'custom',
      build: 'array',
      property: 'payload',
      propertyType: 'msg',
      key: 'topic',
      joiner: '\\n',
      joinerType: 'str',
      useparts: false,
      accumulate: false,
      timeout: '1',
      count: '1000',
      reduceRight: false,
      reduceExp: '',
      reduceInit: '',
      reduceInitType: '',
      reduceFixup: '',
      x: 550,
      y: 100,
      wires: [['bench-batch']],
    },
    {
      id: 'bench-batch',
      type: 'influxdb batch',
      z: 'bench-tab',
      name: 'VictoriaMetrics',
      influxdb: 'bench-influxdb',
      precision: 'ms',
      retentionPolicy: '',
      database: 'ferry',
      precisionV18FluxV20: 'ms',
      retentionPolicyV18Flux: '',
      org: 'ferry',
      bucket: 'ferry',
      x: 700,
      y: 100,
      wires: [],
    },
  ];
}

/**
 * Node-RED headless (no editor, no HTTP server at all: httpAdminRoot and httpNodeRoot false) with
 * a generated settings file and flow in a temp userDir, and Mosquitto for the devices to publish to.
 */
async function startNodeRedSide(dir, vm, opts) {
  const mosquitto = await startMosquitto();
  let nodered;
  try {
    const userDir = join(dir, 'nodered');
    mkdirSync(userDir, { recursive: true });
    writeFileSync(join(userDir, 'flows.json'), JSON.stringify(noderedFlow(mosquitto.port, vm, opts.noderedInflux), null, 2));
    // credentialSecret false: credentials in plain text, which a flow file cannot carry itself.
    writeFileSync(join(userDir, 'flows_cred.json'), JSON.stringify({ 'bench-influxdb': { token: 'bench', username: '', password: '' } }));
    const settings = {
      uiHost: '127.0.0.1',
      uiPort: await freePort(),
      httpAdminRoot: false,
      httpNodeRoot: false,
      userDir,
      flowFile: 'flows.json',
      credentialSecret: false,
      functionExternalModules: false,
      externalModules: { autoInstall: false, palette: { allowInstall: false } },
      diagnostics: { enabled: false, ui: false },
      runtimeState: { enabled: false, ui: false },
      telemetry: { enabled: false, updateNotification: false },
      logging: { console: { level: 'info', metrics: false, audit: false } },
    };
    const settingsFile = join(userDir, 'settings.js');
    writeFileSync(settingsFile, `module.exports = ${JSON.stringify(settings, null, 2)};\n`);
    nodered = spawnChild('node-red', [...cpuProfileFlags('node-red'), join(NODERED_DIR, 'node_modules', 'node-red', 'red.js'), '--settings', settingsFile, '--userDir', userDir], {
      logFile: join(dir, 'node-red.log'),
      cwd: userDir,
      env: { ...process.env, NODE_ENV: 'production' },
    });
    await waitUntil(
      () => {
        if (nodered.child.exitCode !== null) throw new Error(`node-red exited:\n${tail(nodered.logFile)}`);
        const text = readFileSync(nodered.logFile, 'utf8');
        if (text.includes('[error]')) throw new Error(`node-red exited: it logged an error:\n${tail(nodered.logFile)}`);
        return text.includes('Started flows') && text.includes('Connected to broker');
      },
      'Node-RED to start its flow and connect to Mosquitto',
    ).catch((err) => {
      throw new Error(`${err.message}\n${tail(nodered.logFile)}`);
    });
  } catch (err) {
    await nodered?.stop();
    await mosquitto.stop();
    throw err;
  }
  return {
    url: mosquitto.url,
    pids: { nodered: nodered.pid, mosquitto: mosquitto.pid },
    logFile: nodered.logFile,
    async stop() {
      await nodered.stop();
      await mosquitto.stop();
    },
  };
}

/** Node-RED's errors and warnings, less the two its start-up always logs with these settings. */
function noderedTrouble(text) {
  return text.split('\n').filter((line) => /\[(error|warn)\]/.test(line) && !/Projects disabled|Using unencrypted credentials/.test(line));
}

// ---------------------------------------------------------------- a round
async function runRound(side, index, opts, baseDir) {
  const dir = join(baseDir, `${index + 1}-${side}`);
  mkdirSync(dir, { recursive: true });
  const vm = await startVictoriaMetrics();
  let stack;
  try {
    stack = side === 'ferry' ? await startFerrySide(dir, vm) : await startNodeRedSide(dir, vm, opts);
    await warmUp(stack.url, vm);
    const pids = { ...stack.pids, victoriaMetrics: vm.pid };
    const cpuBefore = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMsOf(pid)]));
    const batchesBefore = await stack.batches?.();
    const benchCpuBefore = process.cpuUsage();
    const busyBefore = machineBusyMs();
    const cpuStartedAt = performance.now();
    // Device times one ms apart (every reading its own sample of its series), ten minutes before
    // the readings are sent, so a reading stamped on arrival would fall outside the count.
    const baseTs = Date.now() - opts.readings - 600_000;
    const selector = `device!="${PROBE_DEVICE}"`;
    log(`round ${index + 1} (${side}): publishing ${opts.readings} readings; load average ${loadText()}`);
    const pub = await publishReadings(stack.url, opts, baseTs);
    const ackSeconds = (pub.lastAckAt - pub.firstPublishAt) / 1000;
    log(`round ${index + 1} (${side}): all PUBACKed after ${ackSeconds.toFixed(2)} s; counting in VictoriaMetrics`);
    let count = 0;
    let countAt = performance.now();
    let lastLog = countAt;
    for (;;) {
      const n = await countReadings(vm, selector, baseTs, baseTs + opts.readings - 1);
      const now = performance.now();
      if (n !== count) {
        count = n;
        countAt = now;
      }
      if (count >= opts.readings) break;
      if (now - countAt > STALL_MS) {
        log(`round ${index + 1} (${side}): stuck at ${count} of ${opts.readings} for ${STALL_MS / 1000} s; giving up`);
        break;
      }
      if (now - lastLog > 2000) {
        log(`round ${index + 1} (${side}): ${count} in VictoriaMetrics after ${((now - pub.firstPublishAt) / 1000).toFixed(1)} s`);
        lastLog = now;
      }
      await pause(50);
    }
    const seconds = (countAt - pub.firstPublishAt) / 1000;
    const cpuMs = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMsOf(pid) - cpuBefore[k]]));
    const benchCpu = process.cpuUsage(benchCpuBefore);
    const benchCpuMs = (benchCpu.user + benchCpu.system) / 1000;
    const serversCpuMs = Object.values(cpuMs).reduce((a, b) => a + b, 0);
    const roundMs = performance.now() - cpuStartedAt;
    const othersCores = Math.max(0, machineBusyMs() - busyBefore - serversCpuMs - benchCpuMs) / roundMs;
    const per10k = (ms) => Math.round((ms / Math.max(count, 1)) * 10_000);
    const batchesAfter = await stack.batches?.();
    const batches = batchesBefore && batchesAfter ? batchesAfter.count - batchesBefore.count : undefined;
    const result = {
      round: index + 1,
      side,
      perSec: Math.round(count / seconds),
      seconds: round2(seconds),
      counted: count,
      complete: count >= opts.readings,
      publishAckedPerSec: Math.round(pub.acked / ackSeconds),
      cpuMsPer10k: Object.fromEntries(Object.entries(cpuMs).map(([k, v]) => [k, per10k(v)])),
      serversCpuMsPer10k: per10k(serversCpuMs),
      ...(batches === undefined ? {} : { ingestorBatches: batches, readingsPerBatch: Math.round((batchesAfter.readings - batchesBefore.readings) / Math.max(batches, 1)) }),
      publisherCpuMsPer10k: per10k(benchCpuMs),
      // Cores' worth of CPU that processes outside this bench took while the round ran.
      otherProcessesCores: round2(othersCores),
      loadAverage: loadavg().map(round2),
    };
    log(
      `round ${index + 1} (${side}): ${count} readings in ${seconds.toFixed(2)} s = ${result.perSec}/s end to end ` +
        `(PUBACKs ${result.publishAckedPerSec}/s); CPU ms per 10,000 ${JSON.stringify(result.cpuMsPer10k)}; ` +
        `other processes ${result.otherProcessesCores} cores; load average ${loadText()}`,
    );
    if (side === 'nodered') {
      const trouble = noderedTrouble(readFileSync(stack.logFile, 'utf8'));
      if (trouble.length > 0) log(`Node-RED logged:\n${trouble.slice(0, 20).join('\n')}`);
    }
    return result;
  } finally {
    await stack?.stop();
    await vm.stop();
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return undefined;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : Math.round((sorted[mid - 1] + sorted[mid]) / 2);
}

function versionOf(command, args, pattern) {
  try {
    const r = spawnSync(command, args, { encoding: 'utf8' });
    return pattern.exec(`${r.stdout}${r.stderr}`)?.[1];
  } catch {
    return undefined;
  }
}

/** Which Ferry was measured: the commit, whether the tree had changes, and when dist was last built. */
function ferryBuild() {
  const git = (args) => spawnSync('git', args, { cwd: fileURLToPath(new URL('..', import.meta.url)), encoding: 'utf8' }).stdout?.trim();
  let newest = 0;
  for (const app of ['gateway', 'broker', 'ingestor', 'ferry']) {
    const dist = fileURLToPath(new URL(`../apps/${app}/dist/`, import.meta.url));
    if (!existsSync(dist)) continue;
    for (const f of readdirSync(dist)) if (f.endsWith('.js')) newest = Math.max(newest, statSync(join(dist, f)).mtimeMs);
  }
  return { commit: git(['rev-parse', '--short', 'HEAD']), uncommittedChanges: (git(['status', '--porcelain', '--untracked-files=no']) ?? '') !== '', distBuiltAt: newest > 0 ? new Date(newest).toISOString() : undefined };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!existsSync(FERRY_MAIN)) throw new Error(`${FERRY_MAIN} is missing: run \`npx tsc -b\` (or \`npm run build\`) first`);
  if (opts.sides.includes('nodered')) ensureNodeRed();
  const baseDir = await mkdtemp(join(tmpdir(), 'ferry-bench-pipeline-'));
  Object.assign(workDir, { path: baseDir, keep: opts.keep });
  const build = ferryBuild();
  const loadStart = loadavg().map(round2);
  const startedAt = new Date().toISOString();
  log(`work dir ${baseDir}; ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}; load average ${loadText()}`);
  log(`${opts.readings} readings a round, ${opts.devices} devices, ${opts.clients} connections x ${Math.floor(opts.inFlight / opts.clients)} in flight; ${opts.rounds} rounds of ${opts.sides.join(', ')}`);
  const rounds = [];
  const loadAfterRounds = [];
  try {
    for (let r = 0; r < opts.rounds; r += 1) {
      for (const side of opts.sides) {
        rounds.push(await runRound(side, rounds.length, opts, baseDir));
        loadAfterRounds.push(round2(loadavg()[0]));
      }
    }
  } finally {
    if (opts.keep) log(`kept ${baseDir}`);
    else await rm(baseDir, { recursive: true, force: true });
  }
  const of = (side) => rounds.filter((r) => r.side === side);
  const ferryPerSec = median(of('ferry').map((r) => r.perSec));
  const noderedPerSec = median(of('nodered').map((r) => r.perSec));
  const ratio = ferryPerSec !== undefined && noderedPerSec !== undefined ? round2(ferryPerSec / noderedPerSec) : undefined;
  // At the target rate (twice Node-RED's), the publisher and VictoriaMetrics take what they take per
  // reading (as measured in Ferry's rounds); what the cores leave per 10,000 readings is all that
  // Ferry's three servers may spend. Beside it, what they spent.
  const ferryServersCpuMsPer10k = median(of('ferry').map((r) => r.cpuMsPer10k.gateway + r.cpuMsPer10k.broker + r.cpuMsPer10k.ingestor));
  const fixedCpuMsPer10k = median(of('ferry').map((r) => r.publisherCpuMsPer10k + r.cpuMsPer10k.victoriaMetrics));
  const ferryCpuBudgetMsPer10kAtTarget =
    noderedPerSec !== undefined && fixedCpuMsPer10k !== undefined ? Math.round((cpus().length * 1000 * 10_000) / (2 * noderedPerSec) - fixedCpuMsPer10k) : undefined;
  const result = {
    bench: 'pipeline',
    date: startedAt,
    finishedAt: new Date().toISOString(),
    machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown' },
    // Other work in the same tree may rebuild dist while the bench runs: then the rounds may differ.
    ferryBuild: { ...build, distRebuiltDuringRun: ferryBuild().distBuiltAt !== build.distBuiltAt },
    versions: {
      node: process.version,
      nodeRed: installedVersion('node-red'),
      nodeRedContribInfluxdb: installedVersion('node-red-contrib-influxdb'),
      mosquitto: versionOf('mosquitto', ['-h'], /mosquitto version (\S+)/),
      // Debian's build prints no -version: the package's.
      victoriaMetrics: versionOf('victoria-metrics', ['-version'], /(v\d+\.\d+\.\d+)/) ?? versionOf('dpkg-query', ['-W', '-f=${Version}', 'victoria-metrics'], /^(\S+)/),
    },
    sizes: { readings: opts.readings, devices: opts.devices, clients: opts.clients, inFlight: Math.floor(opts.inFlight / opts.clients) * opts.clients, rounds: opts.rounds },
    noderedInflux: opts.noderedInflux,
    ferryPerSec,
    noderedPerSec,
    ratio,
    ferryServersCpuMsPer10k,
    ferryCpuBudgetMsPer10kAtTarget,
    ferryRoundsPerSec: of('ferry').map((r) => r.perSec),
    noderedRoundsPerSec: of('nodered').map((r) => r.perSec),
    allComplete: rounds.every((r) => r.complete),
    rounds,
    targets: { ratioAtLeast2: ratio !== undefined ? ratio >= 2 : undefined },
    // 1-minute load average after each round, and all three at the start and end: above the core
    // count, a figure is not Ferry's (or Node-RED's) alone.
    loadAverage: { start: loadStart, afterRounds: loadAfterRounds, end: loadavg().map(round2) },
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
