// `ferry status` never shows a silent gateway's figures as current: broker, ingestor and gateway as
// separate processes; once the gateway is killed its statuses stop, and the report says the row is
// stale with the age of its last report.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { waitFor } from '@ferry/testkit';
import { cliTestbed, runCli, startCli } from './cli-process.js';

const { running, tempDir } = cliTestbed('ferry-status-stale-');

interface GatewayEntry {
  ageMs: number | null;
  stale: boolean;
  reportedAt: number | null;
}
interface Report {
  stats: { gateways: Record<string, GatewayEntry> };
  fleet?: { gateways: ({ gatewayId: string } & GatewayEntry)[] };
}

describe('ferry status and a gateway that stops reporting', () => {
  it('shows the gateway current while it reports, then stale with the age of its last report', async () => {
    const dir = tempDir();
    const broker = startCli(['broker', '--port', '0', '--log-level', 'warn']);
    running.push(broker);
    const brokerUrl = (JSON.parse(await broker.waitForLine(/"state":"ready"/)) as { url: string }).url;
    const ingestor = startCli(['ingestor', '--broker', brokerUrl, '--data-dir', join(dir, 'ingestor'), '--http-port', '0', '--log-level', 'warn']);
    running.push(ingestor);
    const gateway = startCli(['gateway', '--gateway-id', 'gw-stale', '--uplink', brokerUrl, '--data-dir', join(dir, 'gateway'), '--listen-port', '0', '--log-level', 'warn'], {
      FERRY_GATEWAY__STATUS_INTERVAL_MS: '500',
    });
    running.push(gateway);
    const opsUrl = (JSON.parse(await ingestor.waitForLine(/"state":"ready"/)) as { httpUrl: string }).httpUrl;
    await gateway.waitForLine(/"state":"ready"/);

    const status = async (): Promise<Report> => {
      const result = await runCli(['status', '--ingestor', opsUrl, '--json']);
      return JSON.parse(result.stdout) as Report;
    };
    const current = await waitFor(
      async () => {
        const r = await status();
        const g = r.stats.gateways['gw-stale'];
        return g && !g.stale ? r : undefined;
      },
      { timeoutMs: 30_000, what: 'gw-stale reported and current' },
    );
    expect(current.fleet?.gateways.find((g) => g.gatewayId === 'gw-stale')?.stale).toBe(false);
    const text = await runCli(['status', '--ingestor', opsUrl]);
    expect(text.stdout).toMatch(/ {2}gw-stale: online, .*, reported \d+ s ago$/m);

    // The gateway dies: no status comes any more (the broker's Last Will is the last one).
    gateway.child.kill('SIGKILL');
    await gateway.exited;
    const stale = await waitFor(
      async () => {
        const r = await status();
        return r.stats.gateways['gw-stale']?.stale && r.fleet?.gateways.find((g) => g.gatewayId === 'gw-stale')?.stale ? r : undefined;
      },
      { timeoutMs: 40_000, intervalMs: 250, what: 'gw-stale shown stale' },
    );
    const entry = stale.stats.gateways['gw-stale'];
    expect(entry?.ageMs).toBeGreaterThan(500);
    expect(entry?.reportedAt).toBeLessThanOrEqual(Date.now() - (entry?.ageMs ?? 0) + 1000);

    const report = await runCli(['status', '--ingestor', opsUrl]);
    // The stats line leads with the age; the fleet table's LAST REPORT column says the same.
    expect(report.stdout).toMatch(/ {2}gw-stale: \w+ \(STALE: reported \d+ s ago; last known figures\), outbox /);
    expect(report.stdout).toMatch(/gw-stale\s+\w+\s+STALE: reported \d+ s ago/);
  });
});
