// The fleet part of `ferry status`: summary, devices not online, gateways and firing alerts, from
// the ingestor's health API. Pure formatting; the fetching is in status.ts.

export interface FleetReport {
  summary: { devices: Record<string, number>; gateways: Record<string, number>; alerts: { firing: number; pending: number; acknowledged: number }; held: boolean };
  devices: { deviceId: string; liveness: string; gatewayId?: string; lastDataAt?: number; lastStatusAt?: number; battery?: number; rssi?: number; completeness: number | null }[];
  gateways: {
    gatewayId: string;
    state: string;
    devices: number;
    outboxDepth?: number;
    oldestUnsentAgeMs: number | null;
    dropped: number;
    version?: string;
    disk?: { totalBytes: number; freeBytes: number; full: boolean };
    /** How current the figures are (the ingestor's freshness.ts); absent from older ingestors. */
    ageMs?: number | null;
    stale?: boolean;
  }[];
  alerts: { id: number; rule: string; severity: string; summary: string; firingAt?: number; acknowledged?: { by: string } }[];
}

function ago(ts: number | undefined, now: number): string {
  if (ts === undefined) return 'never';
  const s = Math.max(0, Math.round((now - ts) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

/** `38 s`, `5 min`, `2 h`. Pure. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
}

/**
 * When a gateway last reported, as the ingestor measured it: `reported 3 s ago`, or
 * `STALE: reported 38 s ago` once its next status is overdue, so old figures never pass for current.
 */
export function formatReported(view: { ageMs?: number | null; stale?: boolean; receivedAt?: number }, now: number): string {
  const ageMs = view.ageMs ?? (view.receivedAt === undefined ? undefined : Math.max(0, now - view.receivedAt));
  const when = ageMs === undefined ? 'never reported' : `reported ${formatAge(ageMs)} ago`;
  return view.stale ? `STALE: ${when}` : when;
}

/** Left-aligned columns, two spaces apart. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}

export function formatFleet(report: FleetReport, now: number): string[] {
  const { summary: s } = report;
  const d = s.devices;
  const lines = [
    `fleet: ${d['total'] ?? 0} devices: ${d['online'] ?? 0} online, ${d['suspect'] ?? 0} suspect, ${d['offline'] ?? 0} offline, ${d['flapping'] ?? 0} flapping, ${d['unreachable'] ?? 0} unreachable, ${d['unknown'] ?? 0} unknown`,
    `  gateways ${s.gateways['online'] ?? 0}/${s.gateways['total'] ?? 0} online; alerts ${s.alerts.firing} firing, ${s.alerts.pending} pending, ${s.alerts.acknowledged} acknowledged${s.held ? ' (alerts held: ingestor cut off or in its restart grace)' : ''}`,
  ];
  const troubled = report.devices.filter((x) => x.liveness !== 'online');
  if (troubled.length > 0) {
    lines.push('devices not online:');
    lines.push(
      ...table(
        ['DEVICE', 'STATE', 'GATEWAY', 'LAST SEEN', 'BATTERY', 'RSSI', 'COMPLETE'],
        troubled.map((x) => [x.deviceId, x.liveness, x.gatewayId ?? '-', ago(Math.max(x.lastDataAt ?? 0, x.lastStatusAt ?? 0) || undefined, now), x.battery === undefined ? '-' : String(x.battery), x.rssi === undefined ? '-' : String(x.rssi), x.completeness === null ? '-' : `${Math.round(x.completeness * 100)}%`]),
      ).map((l) => `  ${l}`),
    );
  }
  if (report.gateways.length > 0) {
    lines.push('gateway health:');
    lines.push(
      ...table(
        ['GATEWAY', 'STATE', 'LAST REPORT', 'DEVICES', 'BACKLOG', 'OLDEST UNSENT', 'DROPPED', 'DISK FREE', 'VERSION'],
        report.gateways.map((g) => [
          g.gatewayId,
          g.state,
          g.ageMs === undefined ? '-' : formatReported(g, now),
          String(g.devices),
          String(g.outboxDepth ?? '-'),
          g.oldestUnsentAgeMs === null ? '-' : `${Math.round(g.oldestUnsentAgeMs / 1000)}s`,
          String(g.dropped),
          diskFree(g.disk),
          g.version ?? '-',
        ]),
      ).map((l) => `  ${l}`),
    );
  }
  if (report.alerts.length > 0) {
    lines.push('alerts firing:');
    lines.push(
      ...table(
        ['ID', 'RULE', 'SEVERITY', 'SINCE', 'ACK', 'SUMMARY'],
        report.alerts.map((a) => [String(a.id), a.rule, a.severity, ago(a.firingAt, now), a.acknowledged?.by ?? '-', a.summary]),
      ).map((l) => `  ${l}`),
    );
  }
  return lines;
}

/** `8.0%`, `FULL` when commits fail on it, `-` when the gateway does not report its disk. Pure. */
function diskFree(disk: { totalBytes: number; freeBytes: number; full: boolean } | undefined): string {
  if (!disk) return '-';
  if (disk.full) return 'FULL';
  return disk.totalBytes > 0 ? `${((disk.freeBytes / disk.totalBytes) * 100).toFixed(1)}%` : '-';
}
