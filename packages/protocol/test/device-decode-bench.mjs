// Micro-benchmark of decodeDevicePayload on the native readings the gateway and pipeline benches
// send (issue #19). Not a test: prints one JSON line. Compare builds alternately in one window:
//   node packages/protocol/test/device-decode-bench.mjs [path/to/protocol/dist/index.js] [--rounds 5]
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const args = process.argv.slice(2);
const roundsAt = args.indexOf('--rounds');
const rounds = roundsAt >= 0 ? Number(args[roundsAt + 1]) : 5;
const target = args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--rounds') ?? new URL('../dist/index.js', import.meta.url).pathname;
const { decodeDevicePayload, defaultLimits } = await import(pathToFileURL(resolve(target)).href);

const N = 10_000;
const now = Date.now();
const base = now - 600_000;
const shapes = {
  // bench/pipeline.mjs
  pipeline: (i) => ({ ts: base + i, seq: Math.floor(i / 1000), metrics: { temp: 20 + (i % 100) / 10, hum: 40 + (i % 37), batt: Math.round((3.3 - (i % 50) / 100) * 100) / 100 } }),
  // bench/gateway.mjs
  gateway: (i) => ({ ts: base + i, seq: i, metrics: { temperature: 20 + (i % 100) / 10, humidity: 40 + (i % 37), battery: 3.1, rssi: -60 - (i % 20) } }),
  // flat, Zigbee2MQTT-like, with an ISO time
  flat: (i) => ({ temperature: 19 + (i % 10) / 10, humidity: 48, contact: i % 2 === 0, ts: new Date(base + i).toISOString(), seq: i }),
};

const result = { target, node: process.version, readings: N, rounds };
for (const [name, make] of Object.entries(shapes)) {
  const payloads = Array.from({ length: N }, (_, i) => Buffer.from(JSON.stringify(make(i))));
  const run = () => {
    let ok = 0;
    for (let i = 0; i < N; i++) {
      const r = decodeDevicePayload({ payload: payloads[i], kind: 'telemetry', deviceId: `dev-${i % 1000}`, receivedAt: now, limits: defaultLimits });
      if (r.ok) ok++;
    }
    if (ok !== N) throw new Error(`${name}: ${N - ok} rejected`);
  };
  for (let w = 0; w < 20; w++) run();
  const samples = [];
  for (let r = 0; r < rounds; r++) {
    const heap0 = process.memoryUsage().heapUsed;
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < 10; k++) run();
    const wallNs = Number(process.hrtime.bigint() - t0);
    const cpu = process.cpuUsage(cpu0);
    samples.push({ nsPerDecode: Math.round(wallNs / (10 * N)), cpuMsPer10k: Math.round(((cpu.user + cpu.system) / 1000 / 10) * 10) / 10, heapDeltaMB: Math.round((process.memoryUsage().heapUsed - heap0) / 1048576) });
  }
  const sorted = samples.map((s) => s.nsPerDecode).sort((a, b) => a - b);
  result[name] = { medianNsPerDecode: sorted[Math.floor(sorted.length / 2)], samples };
}
result.loadAverage = (await import('node:os')).loadavg().map((l) => Math.round(l * 100) / 100);
console.log(JSON.stringify(result));
