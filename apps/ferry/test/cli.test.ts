import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { createSqliteSink } from '@ferry/sinks';
import { startInfluxd, waitFor } from '@ferry/testkit';
import type { InfluxdHandle } from '@ferry/testkit';
import { cliTestbed, runCli, startCli } from './cli-process.js';

const { running, tempDir } = cliTestbed('ferry-cli-test-');

function lastJson(lines: readonly string[]): Record<string, unknown> {
  return JSON.parse(lines.at(-1) ?? 'null') as Record<string, unknown>;
}

describe('ferry CLI', () => {
  it('prints help for every command and exits 0', async () => {
    const commands = [[], ['broker'], ['gateway'], ['ingestor'], ['simulate'], ['demo'], ['status'], ['deadletter'], ['deadletter', 'list'], ['deadletter', 'show'], ['deadletter', 'replay'], ['deadletter', 'purge']];
    const results = await Promise.all(commands.map((c) => runCli([...c, '--help'])));
    results.forEach((result, i) => {
      const name = ['ferry', ...commands[i]!].join(' ');
      expect(result.code, name).toBe(0);
      expect(result.stdout, name).toContain(`Usage: ${name}`);
    });
    expect(results[2]!.stdout).toContain('--uplink <url>');
    expect(results[3]!.stdout).toContain('--influx-bucket <bucket>');
    expect(results[5]!.stdout).toContain('--duration <time>');
  });

  it('exits 2 naming the field when a flag value is invalid', async () => {
    const dir = tempDir();
    const result = await runCli(['gateway', '--gateway-id', 'gw-1', '--data-dir', dir, '--uplink', 'not-a-url']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('FERRY_ERR_CONFIG_INVALID');
    expect(result.stderr).toContain('uplink.url');
    expect(result.stdout).toBe('');
  });

  it('exits 2 naming the field when an environment variable is invalid', async () => {
    const result = await runCli(['broker'], { FERRY_BROKER__LISTEN__PORT: '70000' });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/FERRY_ERR_CONFIG_INVALID.*listen\.port/);
  });

  it('exits 2 naming the field when the config file is invalid', async () => {
    const file = join(tempDir(), 'simulator.yaml');
    writeFileSync(file, 'url: mqtt://127.0.0.1:1883\ndevices: 0\n');
    const result = await runCli(['simulate', '--config', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/FERRY_ERR_CONFIG_INVALID.*devices/);
  });

  it('exits 2 when an ingestor misses a required field or a flag is unknown', async () => {
    const missing = await runCli(['ingestor', '--data-dir', tempDir()]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/FERRY_ERR_CONFIG_INVALID.*broker/);
    const unknown = await runCli(['broker', '--no-such-flag']);
    expect(unknown.code).toBe(2);
    const demo = await runCli(['demo', '--devices', '0']);
    expect(demo.code).toBe(2);
    expect(demo.stderr).toMatch(/FERRY_ERR_CONFIG_INVALID.*devices/);
    const status = await runCli(['status']);
    expect(status.code).toBe(2);
    expect(status.stderr).toContain('--ingestor');
  });

  it('runs the broker until SIGTERM, then closes and exits 0', async () => {
    const broker = startCli(['broker', '--port', '0', '--http-port', '0', '--log-level', 'warn']);
    running.push(broker);
    const ready = JSON.parse(await broker.waitForLine(/"state":"ready"/)) as { url: string; httpUrl: string };
    const client = await mqtt.connectAsync(ready.url, { protocolVersion: 4, reconnectPeriod: 0 });
    await client.publishAsync('cli/test', 'hello', { qos: 1 });
    await client.endAsync();
    expect((await fetch(`${ready.httpUrl}/healthz`)).status).toBe(200);
    broker.child.kill('SIGTERM');
    const result = await broker.exited;
    expect(result.code).toBe(0);
  });

  it('runs broker, ingestor, gateway and simulate as separate processes configured by flags', async () => {
    const dir = tempDir();
    const broker = startCli(['broker', '--port', '0', '--log-level', 'warn']);
    running.push(broker);
    const brokerUrl = (JSON.parse(await broker.waitForLine(/"state":"ready"/)) as { url: string }).url;
    const ingestor = startCli(['ingestor', '--broker', brokerUrl, '--data-dir', join(dir, 'ingestor'), '--http-port', '0', '--log-level', 'warn']);
    running.push(ingestor);
    // The gateway takes its uplink from the environment and the rest from flags.
    const gateway = startCli(['gateway', '--gateway-id', 'gw-cli', '--data-dir', join(dir, 'gateway'), '--listen-port', '0', '--log-level', 'warn'], {
      FERRY_GATEWAY__UPLINK__URL: brokerUrl,
    });
    running.push(gateway);
    const opsUrl = (JSON.parse(await ingestor.waitForLine(/"state":"ready"/)) as { httpUrl: string }).httpUrl;
    const deviceUrl = (JSON.parse(await gateway.waitForLine(/"state":"ready"/)) as { deviceUrl: string }).deviceUrl;

    const simulated = await runCli(['simulate', '--url', deviceUrl, '--devices', '4', '--interval-ms', '20', '--readings-per-device', '5', '--log-level', 'warn']);
    expect(simulated.code, simulated.stderr).toBe(0);
    const sent = lastJson(simulated.lines) as { published: number; acknowledged: number; statuses: number };
    expect(sent).toMatchObject({ published: 20, acknowledged: 20, failed: 0 });

    interface Report {
      stats: { written: number; gateways: Record<string, unknown> };
    }
    const deadline = Date.now() + 30_000;
    let report: Report;
    for (;;) {
      const status = await runCli(['status', '--ingestor', opsUrl, '--json']);
      report = JSON.parse(status.stdout) as Report;
      if (report.stats.written >= sent.published + sent.statuses) break;
      if (Date.now() > deadline) throw new Error(`not all readings written: ${status.stdout}`);
    }
    expect(report.stats.written).toBe(sent.published + sent.statuses);
    expect(Object.keys(report.stats.gateways)).toEqual(['gw-cli']);

    for (const service of [gateway, ingestor, broker]) {
      service.child.kill('SIGTERM');
      const result = await service.exited;
      expect(result.code, result.stderr).toBe(0);
    }
  });

  it('writes a reading whose device time is 40 days old, published to a running gateway (the outbox bounds how long it holds a reading, not its age)', async () => {
    const dir = tempDir();
    const broker = startCli(['broker', '--port', '0', '--log-level', 'warn']);
    running.push(broker);
    const brokerUrl = (JSON.parse(await broker.waitForLine(/"state":"ready"/)) as { url: string }).url;
    const ingestor = startCli(['ingestor', '--broker', brokerUrl, '--data-dir', join(dir, 'ingestor'), '--http-port', '0', '--log-level', 'warn']);
    running.push(ingestor);
    const gateway = startCli(['gateway', '--gateway-id', 'gw-backfill', '--uplink', brokerUrl, '--data-dir', join(dir, 'gateway'), '--listen-port', '0', '--log-level', 'warn']);
    running.push(gateway);
    const opsUrl = (JSON.parse(await ingestor.waitForLine(/"state":"ready"/)) as { httpUrl: string }).httpUrl;
    const deviceUrl = (JSON.parse(await gateway.waitForLine(/"state":"ready"/)) as { deviceUrl: string }).deviceUrl;

    // Inside the ingestor's one-year skew window, beyond the outbox's 30-day age bound.
    const ts = Date.now() - 40 * 86_400_000;
    const device = await mqtt.connectAsync(deviceUrl, { protocolVersion: 4, reconnectPeriod: 0 });
    await device.publishAsync('devices/backfill-1/telemetry', JSON.stringify({ ts, seq: 1, metrics: { level: 4.25 } }), { qos: 1 });
    await device.endAsync();

    // The ops API's device view covers the last 30 days at most: the written count says it arrived.
    await waitFor(
      async () => {
        const status = await runCli(['status', '--ingestor', opsUrl, '--json']);
        return (JSON.parse(status.stdout) as { stats: { written: number } }).stats.written >= 1;
      },
      { timeoutMs: 30_000, what: 'the backfilled reading written' },
    );
    for (const service of [gateway, ingestor]) {
      service.child.kill('SIGTERM');
      expect((await service.exited).code).toBe(0);
    }
    // And in the database itself.
    const sink = createSqliteSink({ path: join(dir, 'ingestor', 'points.db') });
    try {
      const points = sink.query({ measurement: 'telemetry' }).filter((p) => p.tags.device === 'backfill-1');
      expect(points.map((p) => ({ ts: Number(p.timestampNs / 1_000_000n), fields: p.fields }))).toEqual([{ ts, fields: { level: 4.25 } }]);
    } finally {
      await sink.close();
    }
  });

  it('runs the demo for a duration and proves every published reading was written', async () => {
    const dir = tempDir();
    const result = await runCli(['demo', '--devices', '3', '--interval-ms', '100', '--duration', '3s', '--data-dir', dir]);
    expect(result.code, result.stderr).toBe(0);
    const summary = lastJson(result.lines);
    expect(summary).toMatchObject({ outboxDepth: 0, deadLetters: 0, ok: true });
    expect(summary.published).toBeGreaterThan(0);
    expect(summary.written).toBe(summary.published);
    expect(summary.acked).toBe(summary.published);
    expect(result.lines.some((l) => /^\[\s*\d+s\]\s+in\s+\d+\/s\s+written \d+\s+acked \d+\s+outbox \d+\s+devices 3\/3 online\s+dead letters 0/.test(l))).toBe(true);
    expect(result.lines.some((l) => l.startsWith('ops: http://127.0.0.1:'))).toBe(true);
  });

  it('serves status and dead letters while the demo runs, and stops cleanly on SIGINT', async () => {
    const dir = tempDir();
    const demo = startCli(['demo', '--devices', '2', '--interval-ms', '200', '--data-dir', dir]);
    running.push(demo);
    const header = await demo.waitForLine(/^ferry demo:/);
    const opsUrl = (await demo.waitForLine(/^ops: /)).split(/\s+/)[1]!;
    const deviceUrl = /gateway demo-gw \((mqtt:\/\/[^)]+)\)/.exec(header)![1]!;
    await demo.waitForLine(/written [1-9]/);

    // A device sends something that is not JSON: the gateway dead-letters it.
    const device = await mqtt.connectAsync(deviceUrl, { protocolVersion: 4, reconnectPeriod: 0 });
    await device.publishAsync('devices/broken-1/telemetry', '{"metrics": {"t": 1', { qos: 1 });
    await device.endAsync();

    const status = await runCli(['status', '--ingestor', opsUrl, '--json']);
    expect(status.code, status.stderr).toBe(0);
    const report = JSON.parse(status.stdout) as { health: { ok: boolean }; stats: { written: number } };
    expect(report.health.ok).toBe(true);
    expect(report.stats.written).toBeGreaterThan(0);
    const text = await runCli(['status', '--ingestor', opsUrl]);
    expect(text.stdout).toContain('ingestor demo: ok');

    // The gateway reports what it refused: the ingestor lists it with the gateway named (it once said "no dead letters match").
    const viaApi = await waitFor(
      async () => {
        const answer = await runCli(['deadletter', 'list', '--ingestor', opsUrl, '--json']);
        expect(answer.code, answer.stderr).toBe(0);
        return (JSON.parse(answer.stdout) as { entries: unknown[] }).entries.length > 0 ? answer : undefined;
      },
      { timeoutMs: 30_000, what: 'the gateway letter at the ingestor' },
    );
    expect(JSON.parse(viaApi.stdout)).toMatchObject({
      entries: [{ code: 'FERRY_ERR_PAYLOAD_JSON', origin: 'gateway', source: { gatewayId: 'demo-gw', deviceId: 'broken-1', gatewayLetterId: 1 } }],
    });
    const missing = await runCli(['deadletter', 'replay', '999999', '--ingestor', opsUrl]);
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout)).toMatchObject({ id: 999999, status: 404 });

    const gatewayDir = join(dir, 'gateway');
    const listed = await runCli(['deadletter', 'list', '--data-dir', gatewayDir, '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const entries = (JSON.parse(listed.stdout) as { entries: { id: number; code: string; source: { deviceId?: string } }[] }).entries;
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ code: 'FERRY_ERR_PAYLOAD_JSON', source: { deviceId: 'broken-1' } });
    const shown = await runCli(['deadletter', 'show', String(entries[0]!.id), '--data-dir', gatewayDir]);
    expect(JSON.parse(shown.stdout)).toMatchObject({ payload: '{"metrics": {"t": 1', payloadEncoding: 'utf8' });
    const refused = await runCli(['deadletter', 'purge', '--data-dir', gatewayDir]);
    expect(refused.code).toBe(2);
    const purged = await runCli(['deadletter', 'purge', '--data-dir', gatewayDir, '--code', 'FERRY_ERR_PAYLOAD_JSON']);
    expect(JSON.parse(purged.stdout)).toEqual({ purged: 1 });

    demo.child.kill('SIGINT');
    const result = await demo.exited;
    expect(result.code, result.stderr).toBe(0);
    const summary = lastJson(result.lines);
    expect(summary.ok).toBe(true);
    expect(summary.written).toBe(summary.published);
  });
});

describe('ferry demo with InfluxDB', () => {
  let influxd: InfluxdHandle;

  beforeAll(async () => {
    influxd = await startInfluxd();
    await influxd.createDatabase('ferry_demo');
  });

  afterAll(async () => {
    await influxd.stop();
  });

  it('writes every reading to InfluxDB 1.x when INFLUX_URL and INFLUX_DB are set', async () => {
    const result = await runCli(['demo', '--devices', '2', '--interval-ms', '100', '--duration', '2s'], {
      INFLUX_URL: influxd.url,
      INFLUX_DB: 'ferry_demo',
    });
    expect(result.code, result.stderr).toBe(0);
    expect(result.lines[0]).toContain(`influxdb1 ${influxd.url}`);
    const summary = lastJson(result.lines);
    expect(summary.ok).toBe(true);
    expect(summary.written).toBe(summary.published);

    const [telemetry] = await influxd.query('ferry_demo', 'SELECT count(temperature) FROM telemetry');
    expect(telemetry?.values[0]?.[1]).toBe(summary.telemetry);
    const [statuses] = await influxd.query('ferry_demo', 'SELECT count(state) FROM device_status');
    expect(statuses?.values[0]?.[1]).toBe(summary.statuses);
  });
});
