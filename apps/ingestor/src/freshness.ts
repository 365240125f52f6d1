// How current a gateway's figures are. Backlog, uplink state, drops and disk are as old as the
// status that carried them: once no status has come for longer than the gateway's status
// interval (and a grace), the API, the dashboard and `ferry status` say "stale, reported 38 s ago"
// instead of showing the last figures as current. Pure; the time is passed in.

/** The gateway's `statusIntervalMs` default (apps/gateway/src/config.ts), for statuses that do not carry theirs. */
export const DEFAULT_GATEWAY_STATUS_INTERVAL_MS = 10_000;
/** A late timer, a busy event loop or a slow broker may delay a status by this much before it counts as missed. */
export const MIN_STALE_GRACE_MS = 2_000;

export interface Freshness {
  /** When this ingestor received the status the figures come from (epoch ms); null: never. */
  readonly reportedAt: number | null;
  readonly ageMs: number | null;
  /** No status for longer than `staleAfterMs`: the figures are the last known, not the current ones. */
  readonly stale: boolean;
  /** The interval the gateway reports at: its own when its status gives it, else the gateway default. */
  readonly statusIntervalMs: number;
  readonly staleAfterMs: number;
}

/** The status interval a status (or a health record) names, if it names a usable one. */
export function statusIntervalOf(record: unknown): number | undefined {
  if (record === null || typeof record !== 'object') return undefined;
  const value = (record as Record<string, unknown>)['statusIntervalMs'];
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : undefined;
}

/** Interval plus a grace of half an interval, at least MIN_STALE_GRACE_MS. */
export function staleAfter(intervalMs: number): number {
  return intervalMs + Math.max(MIN_STALE_GRACE_MS, intervalMs / 2);
}

export function freshness(reportedAt: number | undefined, intervalMs: number | undefined, now: number): Freshness {
  const statusIntervalMs = intervalMs ?? DEFAULT_GATEWAY_STATUS_INTERVAL_MS;
  const staleAfterMs = staleAfter(statusIntervalMs);
  if (reportedAt === undefined) return { reportedAt: null, ageMs: null, stale: true, statusIntervalMs, staleAfterMs };
  const ageMs = Math.max(0, now - reportedAt);
  return { reportedAt, ageMs, stale: ageMs > staleAfterMs, statusIntervalMs, staleAfterMs };
}

/** A gateway's latest status (GatewayStatusEntry in statuses.ts) with how current it is. */
export function withFreshness<T extends { readonly status: object; readonly receivedAt: number }>(entry: T, now: number): T & Freshness {
  return { ...entry, ...freshness(entry.receivedAt, statusIntervalOf(entry.status), now) };
}

/** Every gateway's latest status, each with its freshness: GET /api/gateways and the stats' `gateways`. */
export function gatewaysWithFreshness<T extends { readonly status: object; readonly receivedAt: number }>(entries: Readonly<Record<string, T>>, now: number): Record<string, T & Freshness> {
  return Object.fromEntries(Object.entries(entries).map(([id, entry]) => [id, withFreshness(entry, now)]));
}
