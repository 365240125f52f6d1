// `ferry status`: the ingestor's view of the pipeline: its health, counters and gateway statuses;
// with --watch, the same report redrawn every interval until Ctrl-C, like `watch` or `top`.
import { Command } from 'commander';
import { FerryError } from '@ferry/protocol';
import { parseDuration } from '../duration.js';
import { callIngestor, ingestorUrl, INGESTOR_URL_ENV } from '../ops-client.js';
import { formatFleet, formatReported } from './fleet-status.js';
import type { FleetReport } from './fleet-status.js';
import { describeError, EXIT_FAILED, EXIT_OK, exitCodeFor, writeErr, writeOut } from '../service.js';

interface StatusFlags {
  ingestor?: string;
  json?: boolean;
  watch?: boolean;
  interval?: string;
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
  /** How current the figures are (the ingestor's freshness.ts); absent from older ingestors. */
  ageMs?: number | null;
  stale?: boolean;
  statusIntervalMs?: number;
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
  /** With shared state (state.redisUrl): this ingestor's part of the deployment. */
  cluster?: { memberId?: string; mode?: string; members?: string[]; gatewaysHeld?: number; waiting?: number; acksWithheld?: number };
}

/** `  cluster: member ing-1#ab12 of 3 (leases), holds 12 gateways, 0 batches waiting`. Pure. */
export function formatCluster(cluster: NonNullable<Stats['cluster']>): string {
  const withheld = cluster.acksWithheld ? `, ACKS WITHHELD ${cluster.acksWithheld} (records not in Redis)` : '';
  return `  cluster: member ${cluster.memberId ?? '?'} of ${cluster.members?.length ?? '?'} (${cluster.mode ?? '?'}), holds ${cluster.gatewaysHeld ?? 0} gateways, ${cluster.waiting ?? 0} batches waiting${withheld}`;
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
    ...(stats.cluster ? [formatCluster(stats.cluster)] : []),
  ];
  const gateways = Object.entries(stats.gateways ?? {});
  lines.push(gateways.length === 0 ? 'no gateway has reported a status' : `gateways (${gateways.length}):`);
  for (const [id, view] of gateways) {
    const s = view.status ?? {};
    const outbox = s.outbox;
    const dropped = Object.values(s.dropped ?? {}).reduce((a, b) => a + b, 0);
    // Stale, the age comes first: every figure after it is the last known, not the current one.
    lines.push(
      [
        `  ${id}: ${s.state ?? 'unknown'}${view.stale ? ` (${formatReported(view, now)}; last known figures)` : ''}`,
        `outbox ${outbox?.depth ?? '?'} readings (${outbox?.bytes ?? '?'} bytes, oldest ${outbox?.oldestTs ? ago(outbox.oldestTs, now) : '-'})`,
        `dead letters ${s.deadLetters ?? 0}`,
        ...(s.disk ? [formatDisk(s.disk)] : []),
        ...(dropped > 0 ? [`DROPPED ${dropped}`] : []),
        ...(s.compacted?.readings ? [`compacted ${s.compacted.readings} readings into ${s.compacted.summaries ?? '?'} summaries`] : []),
        ...(view.stale ? [] : [formatReported(view, now)]),
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

/** One report: its lines (or the JSON line) and whether the ingestor said it is healthy. */
async function statusFrame(base: string, json: boolean): Promise<{ lines: string[]; ok: boolean }> {
  // /healthz answers 503 with its report when something is down; that report is what we want.
  const [health, stats] = await Promise.all([callIngestor(base, 'GET', '/healthz'), callIngestor(base, 'GET', '/api/stats')]);
  if (stats.status !== 200) throw new Error(`GET ${base}/api/stats answered ${stats.status}: ${JSON.stringify(stats.body)}`);
  const fleet = await fetchFleet(base);
  const ok = (health.body as Health | null)?.ok === true;
  if (json) return { lines: [JSON.stringify({ health: health.body, stats: stats.body, ...(fleet ? { fleet } : {}) })], ok };
  const now = Date.now();
  return { lines: [...formatStatus(health.body as Health, stats.body as Stats, now), ...(fleet ? formatFleet(fleet, now) : [])], ok };
}

export async function runStatus(flags: StatusFlags): Promise<number> {
  try {
    const base = ingestorUrl(flags.ingestor);
    if (flags.watch) return await watchStatus(base, flags);
    const frame = await statusFrame(base, flags.json === true);
    for (const line of frame.lines) writeOut(line);
    return frame.ok ? EXIT_OK : EXIT_FAILED;
  } catch (err) {
    writeErr(describeError(err));
    return exitCodeFor(err);
  }
}

/** Clear the screen and put the cursor home: a terminal redraws in place. */
const CLEAR = '\u001b[H\u001b[2J';
const MIN_INTERVAL_MS = 200;

/**
 * Redraws the report every interval until SIGINT or SIGTERM, then exits 0. On a terminal each
 * frame replaces the last; piped, each frame is printed whole after a `--- time ---` line. An
 * ingestor that stops answering is a frame saying so, not the end: the next frame tries again.
 */
async function watchStatus(base: string, flags: StatusFlags): Promise<number> {
  const intervalMs = parseDuration(flags.interval ?? '2s', 'interval');
  if (intervalMs < MIN_INTERVAL_MS) throw new FerryError('FERRY_ERR_CONFIG_INVALID', `interval: at least ${MIN_INTERVAL_MS} ms`, { fields: ['interval'] });
  const tty = process.stdout.isTTY === true;
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => {
    stop = resolve;
  });
  const onSignal = (): void => stop();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let running = true;
  void stopped.then(() => {
    running = false;
  });
  try {
    while (running) {
      const at = new Date();
      let lines: string[];
      try {
        lines = (await statusFrame(base, flags.json === true)).lines;
      } catch (err) {
        lines = [`ingestor ${base} not answering: ${describeError(err)}`];
      }
      if (!running) break;
      const header = `ferry status every ${intervalMs / 1000}s, ${at.toLocaleTimeString()} (Ctrl-C to stop)`;
      if (tty) process.stdout.write(`${CLEAR}${header}\n\n${lines.join('\n')}\n`);
      else if (flags.json) writeOut(lines.join('\n'));
      else writeOut(`--- ${at.toISOString()} ---\n${lines.join('\n')}`);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([stopped, new Promise<void>((resolve) => (timer = setTimeout(resolve, intervalMs)))]);
      clearTimeout(timer);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return EXIT_OK;
}

export function statusCommand(): Command {
  return new Command('status')
    .description("show the ingestor's view: health, reading counters, gateway statuses, and the fleet's device/gateway health and firing alerts")
    .option('--ingestor <url>', `ingestor ops URL, e.g. http://127.0.0.1:9400 (or set ${INGESTOR_URL_ENV})`)
    .option('--json', 'print one JSON object instead of text')
    .option('--watch', 'redraw the report every interval until Ctrl-C (a terminal redraws in place; piped, frames follow each other)')
    .option('--interval <duration>', 'with --watch: time between frames, e.g. 500ms, 2s, 1m', '2s')
    .addHelpText('after', '\nExits 0 when the ingestor reports itself healthy, 1 otherwise, 2 on bad usage. With --watch, exits 0 on Ctrl-C.')
    .action(async (flags: StatusFlags) => {
      process.exitCode = await runStatus(flags);
    });
}
