// `ferry status`: the ingestor's view of the pipeline: its health, counters and gateway statuses.
import { Command } from 'commander';
import { callIngestor, ingestorUrl, INGESTOR_URL_ENV } from '../ops-client.js';
import { formatFleet } from './fleet-status.js';
import type { FleetReport } from './fleet-status.js';
import { describeError, EXIT_FAILED, EXIT_OK, exitCodeFor, writeErr, writeOut } from '../service.js';

interface StatusFlags {
  ingestor?: string;
  json?: boolean;
}

interface Health {
  ok?: boolean;
  ingestorId?: string;
  mqtt?: { connected?: boolean; url?: string };
  sink?: { up?: boolean; description?: string };
}

interface GatewayView {
  status?: {
    state?: string;
    ts?: number;
    outbox?: { depth?: number; bytes?: number; oldestTs?: number | null };
    deadLetters?: number;
    dropped?: Record<string, number>;
    compacted?: { readings?: number; summaries?: number };
    disk?: DiskView;
  };
  receivedAt?: number;
}

/** A gateway's disk as its status gives it (GatewayDisk in @ferry/protocol). */
export interface DiskView {
  totalBytes: number;
  freeBytes: number;
  outboxBytes: number;
  full: boolean;
}

function mib(bytes: number): string {
  return `${(bytes / 1_048_576).toFixed(1)} MiB`;
}

/** `12.5% free (0.5 MiB of 4.0 MiB), outbox 1.9 MiB (47%)`, FULL when commits fail on it. Pure. */
export function formatDisk(disk: DiskView): string {
  const share = (part: number): string => (disk.totalBytes > 0 ? `${((part / disk.totalBytes) * 100).toFixed(1)}%` : '?');
  return `disk ${share(disk.freeBytes)} free (${mib(disk.freeBytes)} of ${mib(disk.totalBytes)}), outbox ${mib(disk.outboxBytes)} (${share(disk.outboxBytes)})${disk.full ? ', FULL: readings refused' : ''}`;
}

interface Stats {
  received?: number;
  written?: number;
  duplicates?: number;
  rejected?: number;
  inFlight?: number;
  acksSent?: number;
  deadLettersHeld?: number;
  gateways?: Record<string, GatewayView>;
}

function ago(ts: number | undefined, now: number): string {
  if (ts === undefined) return 'never';
  const s = Math.max(0, Math.round((now - ts) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

/** The human-readable report. Pure. */
export function formatStatus(health: Health, stats: Stats, now: number): string[] {
  const lines = [
    `ingestor ${health.ingestorId ?? '?'}: ${health.ok ? 'ok' : 'NOT OK'}`,
    `  mqtt ${health.mqtt?.connected ? 'connected' : 'DISCONNECTED'} ${health.mqtt?.url ?? ''}`.trimEnd(),
    `  sink ${health.sink?.up ? 'up' : 'DOWN'} ${health.sink?.description ?? ''}`.trimEnd(),
    `  readings received ${stats.received ?? 0}, written ${stats.written ?? 0}, duplicates ${stats.duplicates ?? 0}, rejected ${stats.rejected ?? 0}, in flight ${stats.inFlight ?? 0}`,
    `  acks sent ${stats.acksSent ?? 0}, dead letters held ${stats.deadLettersHeld ?? 0}`,
  ];
  const gateways = Object.entries(stats.gateways ?? {});
  lines.push(gateways.length === 0 ? 'no gateway has reported a status' : `gateways (${gateways.length}):`);
  for (const [id, view] of gateways) {
    const s = view.status ?? {};
    const outbox = s.outbox;
    const dropped = Object.values(s.dropped ?? {}).reduce((a, b) => a + b, 0);
    lines.push(
      [
        `  ${id}: ${s.state ?? 'unknown'}`,
        `outbox ${outbox?.depth ?? '?'} readings (${outbox?.bytes ?? '?'} bytes, oldest ${outbox?.oldestTs ? ago(outbox.oldestTs, now) : '-'})`,
        `dead letters ${s.deadLetters ?? 0}`,
        ...(s.disk ? [formatDisk(s.disk)] : []),
        ...(dropped > 0 ? [`DROPPED ${dropped}`] : []),
        ...(s.compacted?.readings ? [`compacted ${s.compacted.readings} readings into ${s.compacted.summaries ?? '?'} summaries`] : []),
        `reported ${ago(view.receivedAt, now)}`,
      ].join(', '),
    );
  }
  return lines;
}

/** The health API's view, or undefined when the ingestor runs without it (health.enabled false). */
async function fetchFleet(base: string): Promise<FleetReport | undefined> {
  const summary = await callIngestor(base, 'GET', '/api/summary');
  if (summary.status !== 200) return undefined;
  const [devices, gateways, alerts] = await Promise.all([
    callIngestor(base, 'GET', '/api/devices?sort=liveness&order=desc&limit=200'),
    callIngestor(base, 'GET', '/api/gateways/health'),
    callIngestor(base, 'GET', '/api/alerts?state=firing'),
  ]);
  return {
    summary: summary.body as FleetReport['summary'],
    devices: (devices.body as { devices?: FleetReport['devices'] } | null)?.devices ?? [],
    gateways: (gateways.body as { gateways?: FleetReport['gateways'] } | null)?.gateways ?? [],
    alerts: (alerts.body as { alerts?: FleetReport['alerts'] } | null)?.alerts ?? [],
  };
}

export async function runStatus(flags: StatusFlags): Promise<number> {
  try {
    const base = ingestorUrl(flags.ingestor);
    // /healthz answers 503 with its report when something is down; that report is what we want.
    const [health, stats] = await Promise.all([callIngestor(base, 'GET', '/healthz'), callIngestor(base, 'GET', '/api/stats')]);
    if (stats.status !== 200) throw new Error(`GET ${base}/api/stats answered ${stats.status}: ${JSON.stringify(stats.body)}`);
    const fleet = await fetchFleet(base);
    if (flags.json) writeOut(JSON.stringify({ health: health.body, stats: stats.body, ...(fleet ? { fleet } : {}) }));
    else {
      for (const line of formatStatus(health.body as Health, stats.body as Stats, Date.now())) writeOut(line);
      if (fleet) for (const line of formatFleet(fleet, Date.now())) writeOut(line);
    }
    return (health.body as Health | null)?.ok ? EXIT_OK : EXIT_FAILED;
  } catch (err) {
    writeErr(describeError(err));
    return exitCodeFor(err);
  }
}

export function statusCommand(): Command {
  return new Command('status')
    .description("show the ingestor's view: health, reading counters, gateway statuses, and the fleet's device/gateway health and firing alerts")
    .option('--ingestor <url>', `ingestor ops URL, e.g. http://127.0.0.1:9400 (or set ${INGESTOR_URL_ENV})`)
    .option('--json', 'print one JSON object instead of text')
    .addHelpText('after', '\nExits 0 when the ingestor reports itself healthy, 1 otherwise, 2 on bad usage.')
    .action(async (flags: StatusFlags) => {
      process.exitCode = await runStatus(flags);
    });
}
