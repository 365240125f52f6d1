// What a gateway process holds, checked on the built gateway in a process of its own (as `ferry
// gateway` runs, not inside the test runner): none of the code it does not use (Fastify and its
// schema compilers, MQTT.js's WebSocket, SOCKS and TLS transports, the YAML parser for a JSON
// config, prom-client's Pushgateway and cluster aggregator), and, under a plain `node`, a young
// generation of at most 4 MiB semi-spaces however much it allocates (footprint.ts).
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, tempDir } from './harness.js';
import type { TestBroker } from './harness.js';

const run = promisify(execFile);
const REPO_ROOT = join(import.meta.dirname, '..', '..', '..');
const CHILD = join(import.meta.dirname, 'fixtures', 'footprint-child.mjs');

interface ChildReport {
  uplinkConnected: boolean;
  metrics: boolean;
  loaded: string[];
  builtins: string[];
  startMiB: number;
  newSpaceMiB: number;
  newSpaceSeenMiB: number[];
}

let uplink: TestBroker;
const dir = tempDir();

beforeAll(async () => {
  // The child runs the compiled gateway: build it (incremental, quick when up to date).
  await run(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', 'apps/gateway'], { cwd: REPO_ROOT });
  uplink = await startTestBroker();
}, 180_000);

afterAll(async () => {
  await uplink?.close();
  dir.remove();
});

async function gatewayProcess(nodeFlags: string[], name: string): Promise<ChildReport> {
  const env = { ...process.env };
  delete env['NODE_OPTIONS'];
  const { stdout } = await run(process.execPath, [...nodeFlags, CHILD, join(dir.path, name), uplink.url], { env, timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as ChildReport;
}

describe('a gateway process', () => {
  it('loads no ops framework, no MQTT transport it does not use, no YAML parser for a JSON config', async () => {
    const report = await gatewayProcess([], 'modules');
    expect(report.uplinkConnected).toBe(true);
    expect(report.metrics).toBe(true);
    const unwanted = [/\/fastify\//, /\/ajv\//, /\/ws\//, /\/socks\//, /\/ip-address\//, /\/yaml\//, /mqtt\/build\/lib\/connect\//, /prom-client\/lib\/(cluster|pushgateway)\.js$/];
    expect(report.loaded.filter((path) => unwanted.some((u) => u.test(path)))).toEqual([]);
    expect(report.builtins.filter((m) => ['tls', 'https', 'http2'].includes(m))).toEqual([]);
  });

  it("bounds the young generation at 4 MiB semi-spaces under a plain node, and leaves node's own heap flags alone", async () => {
    const plain = await gatewayProcess([], 'plain');
    // Node's default lets it grow to 16 MiB semi-spaces (32 MiB) under this churn.
    // The sizes it went through, for a failure to show: given back (the modules grew it while they loaded), then grown to the bound.
    const seen = `young generation sizes (MiB): ${plain.newSpaceSeenMiB.join(', ')}`;
    expect(plain.newSpaceMiB, seen).toBeGreaterThan(2);
    expect(plain.newSpaceMiB, seen).toBeLessThanOrEqual(8);
    const own = await gatewayProcess(['--max-semi-space-size=16'], 'own');
    expect(own.newSpaceMiB).toBeGreaterThan(8);
  });
});
