// What `ferry gateway` loads as it starts (the built CLI, as the Pi unit runs it): the gateway's
// command alone, and @ferry/processing's operators only when pipelines are configured; with them
// configured, loaded on demand, the pipelines still run.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { waitFor } from '@ferry/testkit';
import { cliTestbed, startCli } from './cli-process.js';
import type { Running } from './cli-process.js';

const { running, tempDir } = cliTestbed('ferry-gateway-start-');

/** Starts `ferry gateway` on `config` (its uplink nowhere: it connects in the background) until it is ready. */
async function startGateway(config: Record<string, unknown>): Promise<{ gateway: Running; deviceUrl: string; httpUrl: string }> {
  const dir = tempDir();
  const file = join(dir, 'gateway.json');
  writeFileSync(
    file,
    JSON.stringify({
      gatewayId: 'gw-start',
      dataDir: join(dir, 'data'),
      devices: { listen: { host: '127.0.0.1', port: 0 } },
      uplink: { url: 'mqtt://127.0.0.1:1' },
      logLevel: 'error',
      ...config,
    }),
  );
  // NODE_DEBUG=esm: node names on stderr every ES module it loads.
  const gateway = startCli(['gateway', '-c', file], { NODE_DEBUG: 'esm' });
  running.push(gateway);
  const ready = JSON.parse(await gateway.waitForLine(/"state":"ready"/)) as { deviceUrl: string; httpUrl: string };
  return { gateway, deviceUrl: ready.deviceUrl, httpUrl: ready.httpUrl };
}

function loaded(stderr: string): string[] {
  return [...stderr.matchAll(/Translating \w+ file:\/\/(\S+)/g)].map((m) => m[1]!);
}

describe('ferry gateway', () => {
  it('loads the gateway command alone, and no processing operators when no pipeline is configured', async () => {
    const { gateway } = await startGateway({});
    gateway.child.kill('SIGTERM');
    const { code } = await gateway.exited;
    expect(code).toBe(0);
    const modules = loaded(gateway.stderr());
    expect(modules.some((m) => m.endsWith('/apps/ferry/dist/commands/gateway.js'))).toBe(true);
    expect(modules.some((m) => m.endsWith('/apps/gateway/dist/gateway.js'))).toBe(true);
    const unwanted = [/\/apps\/ferry\/dist\/(program|commands\/(?!gateway\.js))/, /\/apps\/(broker|ingestor|simulator)\//, /\/packages\/processing\/dist\/(pipeline|steps)\.js$/, /\/apps\/gateway\/dist\/process\.js$/];
    expect(modules.filter((m) => unwanted.some((u) => u.test(m)))).toEqual([]);
  });

  it('loads the edge pipelines on demand when they are configured, and runs them on what devices send', async () => {
    const { gateway, deviceUrl, httpUrl } = await startGateway({
      processing: { before: 'outbox', pipelines: [{ match: { metric: 'level' }, steps: [{ op: 'deadband', abs: 1 }] }] },
    });
    expect(loaded(gateway.stderr()).some((m) => m.endsWith('/apps/gateway/dist/process.js'))).toBe(true);
    const device = await mqtt.connectAsync(deviceUrl, { clientId: 'dev-start', reconnectPeriod: 0 });
    try {
      const now = Date.now();
      // Within the deadband of the first: the second and third are not stored.
      for (const [seq, level] of [[1, 10], [2, 10.5], [3, 10.2], [4, 20]] as const) {
        await device.publishAsync('devices/dev-start/telemetry', JSON.stringify({ ts: now + seq, seq, metrics: { level } }), { qos: 1 });
      }
    } finally {
      await device.endAsync();
    }
    const health = await waitFor(
      async () => {
        const body = (await (await fetch(`${httpUrl}/healthz`)).json()) as { processing?: { readingsIn: number; readingsOut: number } };
        return body.processing && body.processing.readingsIn === 4 ? body : undefined;
      },
      { timeoutMs: 20_000, what: 'four readings through the pipeline' },
    );
    expect(health.processing).toMatchObject({ readingsIn: 4, readingsOut: 2 });
    gateway.child.kill('SIGTERM');
    expect((await gateway.exited).code).toBe(0);
  });
});
