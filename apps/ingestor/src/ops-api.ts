// The health API on the ops server: fleet summary, devices (filter, search, natural sort, paging),
// one device with its recent readings and health history, gateway health, alerts (grouped, with
// acknowledge and un-acknowledge, silences and history); and token authentication for every /api
// route (read role: GET only; admin: everything), which also names who acts (the token's name).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { z } from 'zod';
import { isFerryError } from '@ferry/protocol';
import type { OpsServer } from '@ferry/runtime';
import { defaultPointMapping } from '@ferry/sinks';
import type { Point, PointMapping, PointQuery } from '@ferry/sinks';
import type { Alert, DeviceHealth, HealthMonitor, Liveness, Silence } from '@ferry/health';
import type { RecentReading } from './recent.js';
import { freshness, statusIntervalOf } from './freshness.js';
import { grafanaLink } from './grafana.js';

/** The ingestor's own connections, as /healthz reports them. */
export interface IngestorLinks {
  readonly broker: boolean;
  readonly sink: boolean;
}

export interface ApiToken {
  readonly token: string;
  readonly role: 'admin' | 'read';
  /** Who acts with it: what an ack or a silence records as `by`. */
  readonly name?: string;
}

export interface HealthRoutesDeps {
  readonly monitor: HealthMonitor;
  readonly tokens: readonly ApiToken[];
  /**
   * A device's recent readings from memory (health.ts, recent.ts): what the device page shows,
   * for every sink. Oldest first, at most limit (the newest), ts in the last sinceMs.
   */
  readonly recent?: ((deviceId: string, sinceMs: number, limit: number) => readonly RecentReading[]) | undefined;
  /** Measurement names the readings are shown under, as the sink writes them. */
  readonly mapping?: Pick<PointMapping, 'measurement' | 'statusMeasurement'> | undefined;
  /**
   * Recent points of one device from the database, when the sink can be read (the embedded SQLite
   * sink): the fallback while memory holds nothing for the device, e.g. right after a restart.
   */
  readonly readings?: ((deviceId: string, sinceMs: number, limit: number) => readonly Point[]) | undefined;
  /**
   * The broker and database connections as they are now (what /healthz checks). The summary shows
   * these rather than the model's last tick, so neither is "up" before it has been reached.
   */
  readonly links?: (() => Promise<IngestorLinks>) | undefined;
  /** The time gateway reports are aged by (the monitor's clock). */
  readonly now?: (() => number) | undefined;
  /** http.grafanaUrl: a device's answer then carries its link to the device dashboard. */
  readonly grafanaUrl?: string | undefined;
}

const LIVENESS = ['unknown', 'online', 'suspect', 'offline', 'flapping', 'unreachable'] as const satisfies readonly Liveness[];
const SORTS = ['id', 'liveness', 'lastSeen', 'battery', 'rssi', 'completeness', 'gateway'] as const;

const devicesQuerySchema = z.object({
  state: z.enum(LIVENESS).optional(),
  gateway: z.string().min(1).optional(),
  q: z.string().max(200).optional(),
  sort: z.enum(SORTS).default('id'),
  order: z.enum(['asc', 'desc']).default('asc'),
  limit: z.coerce.number().int().positive().max(10_000).default(500),
  offset: z.coerce.number().int().nonnegative().default(0),
  /** `gateway`: devices of one gateway together (gateways in natural order), sorted within by `sort`. */
  group: z.enum(['gateway']).optional(),
});

const deviceQuerySchema = z.object({ sinceMs: z.coerce.number().int().positive().max(30 * 86_400_000).default(3_600_000), limit: z.coerce.number().int().positive().max(5000).default(500) });
const alertsQuerySchema = z.object({ state: z.enum(['pending', 'firing', 'resolved']).optional(), subject: z.string().optional(), limit: z.coerce.number().int().positive().max(5000).default(200) });
// `by` is no longer taken from the body (the token's name is who acts); still accepted so older clients are not refused.
const ackSchema = z.object({ by: z.string().max(100).optional(), comment: z.string().max(1000).optional() }).strict();
const historyQuerySchema = z.object({ limit: z.coerce.number().int().positive().max(1000).default(100), rule: z.string().min(1).optional(), subject: z.string().min(1).optional() });
const groupsQuerySchema = z.object({ perGroup: z.coerce.number().int().nonnegative().max(500).default(20) });
const silenceSchema = z
  .object({
    rule: z.string().min(1).optional(),
    subject: z.string().min(1).optional(),
    durationMs: z.number().int().positive().max(90 * 86_400_000),
    by: z.string().max(100).optional(),
    comment: z.string().max(1000).optional(),
  })
  .strict();
const idSchema = z.object({ id: z.coerce.number().int().positive() });

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);
/** Who acts on a loopback call when no tokens are configured. */
export const LOCAL_ACTOR = 'local';

// Who made each request, as addApiAuth found it (keyed by the request object, gone with it).
const actors = new WeakMap<object, { readonly name: string; readonly role: ApiToken['role'] }>();

/** The name an action is recorded under: the token's name, or `local` on the tokenless loopback API. */
export function actorOf(req: object): string {
  return actors.get(req)?.name ?? LOCAL_ACTOR;
}

/** Natural order: sim-2 before sim-10, case folded. */
const natural = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

/** The sort key of a device record; completeness is the one derived figure, computed only when sorted by. */
function sortKey(sort: (typeof SORTS)[number], d: DeviceHealth, completeness: (d: DeviceHealth) => number | undefined): string | number {
  switch (sort) {
    case 'id':
      return d.deviceId;
    case 'liveness':
      return LIVENESS.indexOf(d.liveness);
    case 'lastSeen':
      return Math.max(d.lastDataAt ?? 0, d.lastStatusAt ?? 0);
    case 'battery':
      return d.battery ?? -1;
    case 'rssi':
      return d.rssi ?? -1000;
    case 'completeness':
      return completeness(d) ?? -1;
    case 'gateway':
      return d.gatewayId ?? '';
  }
}

function presentPoint(p: Point): Record<string, unknown> {
  return { ts: Number(p.timestampNs / 1_000_000n), measurement: p.measurement, fields: p.fields };
}

/** The same shape as a database point, so the dashboard reads both alike; kind and flags on top. */
function presentRecent(r: RecentReading, mapping: Pick<PointMapping, 'measurement' | 'statusMeasurement'>): Record<string, unknown> {
  return { ts: r.ts, measurement: r.kind === 'status' ? mapping.statusMeasurement : mapping.measurement, kind: r.kind, fields: r.metrics, ...(r.flags ? { flags: r.flags } : {}) };
}

type ReadingsSource = 'memory' | 'database';

/** Memory first; the database (when the sink can be read) only when memory has nothing for the device. */
function deviceReadings(deps: HealthRoutesDeps, deviceId: string, sinceMs: number, limit: number): { readings: Record<string, unknown>[] | null; source: ReadingsSource | null } {
  const recent = deps.recent?.(deviceId, sinceMs, limit);
  if (recent && recent.length > 0) {
    const mapping = deps.mapping ?? defaultPointMapping;
    return { readings: recent.map((r) => presentRecent(r, mapping)), source: 'memory' };
  }
  if (deps.readings) return { readings: deps.readings(deviceId, sinceMs, limit).map(presentPoint), source: 'database' };
  return recent ? { readings: [], source: 'memory' } : { readings: null, source: null };
}

/** Token check for /api: a Bearer token (or ?token= for EventSource); with none configured, loopback callers only. */
export function addApiAuth(app: OpsServer['app'], tokens: readonly ApiToken[]): void {
  const byToken = new Map(tokens.map((t, i) => [t.token, { role: t.role, name: t.name ?? `token-${i + 1}` }]));
  app.addHook('onRequest', async (req, reply) => {
    if (!req.url.startsWith('/api/')) return;
    if (byToken.size === 0) {
      if (!LOOPBACK.has(req.socket.remoteAddress ?? '')) return reply.code(403).send({ error: 'no API tokens configured: the API answers loopback callers only' });
      actors.set(req, { name: LOCAL_ACTOR, role: 'admin' });
      return;
    }
    const header = req.headers.authorization;
    const fromQuery = (req.query as Record<string, unknown> | undefined)?.['token'];
    const token = header?.startsWith('Bearer ') ? header.slice(7) : typeof fromQuery === 'string' ? fromQuery : undefined;
    const holder = token === undefined ? undefined : byToken.get(token);
    if (holder === undefined) return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'a valid API token is required' });
    if (holder.role === 'read' && req.method !== 'GET' && req.method !== 'HEAD') return reply.code(403).send({ error: 'this token is read-only' });
    actors.set(req, holder);
  });
  // Who the caller is and what it may do: the dashboard shows the name and hides admin-only buttons.
  app.get('/api/whoami', async (req) => actors.get(req) ?? { name: LOCAL_ACTOR, role: 'admin' });
}

export function addHealthRoutes(app: OpsServer['app'], deps: HealthRoutesDeps): void {
  const { monitor } = deps;

  const now = deps.now ?? (() => Date.now());

  app.get('/api/summary', async () => {
    const summary = monitor.summary();
    if (!deps.links) return summary;
    const links = await deps.links();
    // Cut off from either, the ingestor holds its alerts (FleetHealth.held); say so from the first moment.
    return { ...summary, links, held: summary.held || !links.broker || !links.sink };
  });

  app.get('/api/devices', async (req, reply) => {
    const parsed = devicesQuerySchema.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: parsed.error.issues });
    const q = parsed.data;
    const needle = q.q?.toLowerCase();
    // Filtered and sorted on the records; only the page is turned into views (5,000 views a poll cost ~50x more).
    const matched: { d: DeviceHealth; key: string | number }[] = [];
    const completeness = (d: DeviceHealth): number | undefined => monitor.fleet.completenessOf(d);
    // Devices per gateway over the whole fleet, for a gateway filter (gateways without a status too).
    const perGateway = new Map<string, number>();
    for (const d of monitor.fleet.devices()) {
      if (d.gatewayId !== undefined) perGateway.set(d.gatewayId, (perGateway.get(d.gatewayId) ?? 0) + 1);
      if (q.state !== undefined && d.liveness !== q.state) continue;
      if (q.gateway !== undefined && d.gatewayId !== q.gateway) continue;
      if (needle && !d.deviceId.toLowerCase().includes(needle) && !(d.gatewayId ?? '').toLowerCase().includes(needle) && !(d.firmware ?? '').toLowerCase().includes(needle)) continue;
      matched.push({ d, key: sortKey(q.sort, d, completeness) });
    }
    const dir = q.order === 'asc' ? 1 : -1;
    const compare = (ka: string | number, kb: string | number): number => (typeof ka === 'string' && typeof kb === 'string' ? natural.compare(ka, kb) : ka < kb ? -1 : ka > kb ? 1 : 0);
    matched.sort((a, b) => {
      // Grouped, the gateways come in natural order whatever the direction; the sort applies within.
      const group = q.group === 'gateway' ? compare(a.d.gatewayId ?? '\uffff', b.d.gatewayId ?? '\uffff') : 0;
      // Ties in natural id order either way, so a page boundary never moves.
      return group || compare(a.key, b.key) * dir || natural.compare(a.d.deviceId, b.d.deviceId) * (q.sort === 'id' ? dir : 1);
    });
    // History stays on the device page: the list is what a table needs.
    const devices = matched
      .slice(q.offset, q.offset + q.limit)
      .map(({ d }) => monitor.deviceView(d))
      .map(({ history: _history, transitions: _transitions, ...rest }) => rest);
    const gateways = Object.fromEntries([...perGateway].sort((a, b) => natural.compare(a[0], b[0])));
    return { total: matched.length, offset: q.offset, limit: q.limit, devices, gateways };
  });

  app.get<{ Params: { id: string } }>('/api/devices/:id', async (req, reply) => {
    const d = monitor.fleet.device(req.params.id);
    if (!d) return reply.code(404).send({ error: 'unknown device' });
    const query = deviceQuerySchema.safeParse(req.query);
    if (!query.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: query.error.issues });
    const { readings, source } = deviceReadings(deps, d.deviceId, query.data.sinceMs, query.data.limit);
    return { device: monitor.deviceView(d), alerts: monitor.alerts.list({ subject: d.deviceId }).slice(0, 50), readings, readingsSource: source, grafana: grafanaLink(deps.grafanaUrl, 'device', d.deviceId) };
  });

  // Each gateway's figures with the age of the status they came from: `stale` once it is overdue.
  app.get('/api/gateways/health', async () => {
    const at = now();
    const gateways = [...monitor.fleet.gateways()].map((g) => {
      const view = monitor.gatewayView(g);
      return { ...view, ...freshness(view.lastStatusAt, statusIntervalOf(view), at) };
    });
    return { gateways: gateways.sort((a, b) => (a.gatewayId < b.gatewayId ? -1 : 1)) };
  });

  const present = (a: Alert): PresentedAlert => presentAlert(a, a.state === 'resolved' ? undefined : monitor.alerts.silenceOf(a));

  app.get('/api/alerts', async (req, reply) => {
    const parsed = alertsQuerySchema.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: parsed.error.issues });
    const { state, subject, limit } = parsed.data;
    return { alerts: monitor.alerts.list({ ...(state ? { state } : {}), ...(subject ? { subject } : {}) }).slice(0, limit).map(present), silences: monitor.alerts.activeSilences() };
  });

  // Active alerts by rule and gateway: a stopped 600-device gateway is one group of 600, not 600 cards.
  app.get('/api/alerts/groups', async (req, reply) => {
    const parsed = groupsQuerySchema.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: parsed.error.issues });
    const active = monitor.alerts.list().filter((a) => a.state !== 'resolved');
    return { total: active.length, groups: groupAlerts(active.map(present), parsed.data.perGroup), silences: monitor.alerts.activeSilences() };
  });

  // Resolved alerts, the last resolved first, with who acknowledged and who silenced them.
  app.get('/api/alerts/history', async (req, reply) => {
    const parsed = historyQuerySchema.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: parsed.error.issues });
    const { limit, rule, subject } = parsed.data;
    const alerts = monitor.alerts.history({ limit, ...(rule ? { rule } : {}), ...(subject ? { subject } : {}) });
    return { kept: monitor.alerts.historySize(), alerts: alerts.map(present) };
  });

  // Recorded under the caller's token name, with an optional comment.
  const alertAction = (action: 'acknowledge' | 'unacknowledge', params: unknown, rawBody: unknown, actor: string): { status: number; body: unknown } => {
    const id = idSchema.safeParse(params);
    const body = ackSchema.safeParse(rawBody ?? {});
    if (!id.success || !body.success) return { status: 400, body: { error: 'FERRY_ERR_CONFIG_INVALID' } };
    try {
      return { status: 200, body: present(monitor.alerts[action](id.data.id, actor, body.data.comment || undefined)) };
    } catch (err) {
      if (isFerryError(err)) return { status: 404, body: { error: err.message } };
      throw err;
    }
  };
  app.post('/api/alerts/:id/ack', async (req, reply) => {
    const answer = alertAction('acknowledge', req.params, req.body, actorOf(req));
    return reply.code(answer.status).send(answer.body);
  });
  app.post('/api/alerts/:id/unack', async (req, reply) => {
    const answer = alertAction('unacknowledge', req.params, req.body, actorOf(req));
    return reply.code(answer.status).send(answer.body);
  });

  app.get('/api/silences', async () => ({ silences: monitor.alerts.activeSilences() }));

  app.post('/api/silences', async (req, reply) => {
    const body = silenceSchema.safeParse(req.body ?? {});
    if (!body.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: body.error.issues });
    const { rule, subject, durationMs, comment } = body.data;
    if (rule === undefined && subject === undefined) return reply.code(400).send({ error: 'a silence names a rule, a subject or both' });
    const silence = monitor.alerts.silence({ matchers: { ...(rule ? { rule } : {}), ...(subject ? { subject } : {}) }, durationMs, by: actorOf(req), ...(comment ? { comment } : {}) });
    return reply.code(201).send(silence);
  });

  app.delete('/api/silences/:id', async (req, reply) => {
    const id = idSchema.safeParse(req.params);
    if (!id.success || !monitor.alerts.expireSilence(id.data.id)) return reply.code(404).send({ error: 'unknown silence' });
    return { expired: id.data.id };
  });
}

/** An alert as the API shows it: with the silence muting it now, and who acknowledged and silenced it. */
export type PresentedAlert = Alert & {
  readonly silencedBy: { readonly id: number; readonly by: string; readonly endsAt: number; readonly comment?: string } | null;
  /** Acknowledgements and their withdrawals, oldest first (from the alert's history). */
  readonly acks: readonly { readonly at: number; readonly event: 'acknowledged' | 'unacknowledged'; readonly detail: string }[];
  /** Who silenced it while it was active (from its history). */
  readonly silencedByHistory: readonly string[];
};

export function presentAlert(a: Alert, silence: Silence | undefined): PresentedAlert {
  const acks = a.history.flatMap((e) => (e.event === 'acknowledged' || e.event === 'unacknowledged' ? [{ at: e.at, event: e.event, detail: e.detail ?? '' }] : []));
  // The engine writes `... by <name>` into a silenced event.
  const silencers = [...new Set(a.history.flatMap((e) => (e.event === 'silenced' ? [/ by (.+)$/.exec(e.detail ?? '')?.[1] ?? '?'] : [])))];
  return {
    ...a,
    silencedBy: silence ? { id: silence.id, by: silence.by, endsAt: silence.endsAt, ...(silence.comment !== undefined ? { comment: silence.comment } : {}) } : null,
    acks,
    silencedByHistory: silencers,
  };
}

const SEVERITY_RANK: Record<string, number> = { critical: 0, warning: 1, info: 2 };

export interface AlertGroup {
  readonly rule: string;
  readonly gatewayId: string | null;
  readonly severity: string;
  readonly count: number;
  readonly firing: number;
  readonly pending: number;
  readonly acknowledged: number;
  readonly silenced: number;
  /** The first alerts of the group (newest first), perGroup at most. */
  readonly alerts: readonly PresentedAlert[];
}

/** Groups alerts by rule and gateway (a gateway's own alerts by the gateway): the most severe and largest first. Pure. */
export function groupAlerts(alerts: readonly PresentedAlert[], perGroup: number): AlertGroup[] {
  const groups = new Map<string, { rule: string; gatewayId: string | null; severity: string; members: PresentedAlert[] }>();
  for (const a of alerts) {
    const gatewayId = a.labels['gatewayId'] ?? (a.subject.kind === 'gateway' ? a.subject.id : null);
    const key = `${a.rule}\u0000${gatewayId ?? ''}`;
    const g = groups.get(key) ?? groups.set(key, { rule: a.rule, gatewayId, severity: a.severity, members: [] }).get(key)!;
    if ((SEVERITY_RANK[a.severity] ?? 9) < (SEVERITY_RANK[g.severity] ?? 9)) g.severity = a.severity;
    g.members.push(a);
  }
  return [...groups.values()]
    .map((g) => ({
      rule: g.rule,
      gatewayId: g.gatewayId,
      severity: g.severity,
      count: g.members.length,
      firing: g.members.filter((a) => a.state === 'firing').length,
      pending: g.members.filter((a) => a.state === 'pending').length,
      acknowledged: g.members.filter((a) => a.acknowledged).length,
      silenced: g.members.filter((a) => a.silencedBy).length,
      alerts: g.members.slice(0, perGroup),
    }))
    .sort((a, b) => (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9) || b.count - a.count || natural.compare(`${a.rule} ${a.gatewayId ?? ''}`, `${b.rule} ${b.gatewayId ?? ''}`));
}

/** Reads a device's recent points from a sink that can be queried (SqliteSink.query). */
export function sinkReadings(sink: unknown, deviceTag: string, now: () => number): HealthRoutesDeps['readings'] {
  const query = (sink as { query?: unknown }).query;
  if (typeof query !== 'function') return undefined;
  return (deviceId, sinceMs, limit) => {
    const q: PointQuery = { tags: { [deviceTag]: deviceId }, from: BigInt(now() - sinceMs) * 1_000_000n, limit };
    return (query as (q: PointQuery) => Point[]).call(sink, q);
  };
}

const DASHBOARD_FILES: Record<string, string> = { 'index.html': 'text/html; charset=utf-8', 'app.js': 'text/javascript; charset=utf-8', 'style.css': 'text/css; charset=utf-8' };
/** The charting library, served from the ingestor's own node_modules (a pinned dependency): no CDN, nothing fetched at run time. */
const VENDOR_FILES: Record<string, { module: string; type: string }> = {
  'uplot.js': { module: 'uplot/dist/uPlot.iife.min.js', type: 'text/javascript; charset=utf-8' },
  'uplot.css': { module: 'uplot/dist/uPlot.min.css', type: 'text/css; charset=utf-8' },
};

/** The dashboard: static files read once at start, no build step; the data comes from /api. */
export function addDashboardRoutes(app: OpsServer['app']): void {
  // Beside src/ and dist/ alike, so it resolves the same from sources and from the build.
  const dir = new URL('../dashboard/', import.meta.url);
  const files = new Map(Object.entries(DASHBOARD_FILES).map(([name, type]) => [name, { type, body: readFileSync(new URL(name, dir)) }]));
  const require = createRequire(import.meta.url);
  for (const [name, { module, type }] of Object.entries(VENDOR_FILES)) files.set(`vendor/${name}`, { type, body: readFileSync(require.resolve(module)) });
  const send = (name: string) => async (_req: unknown, reply: { header(k: string, v: string): { header(k: string, v: string): { send(b: Buffer): unknown } } }) => {
    const file = files.get(name);
    if (!file) throw new Error(`dashboard file ${name} missing`);
    return reply.header('content-type', file.type).header('cache-control', 'no-cache').send(file.body);
  };
  app.get('/', send('index.html'));
  app.get('/dashboard/app.js', send('app.js'));
  app.get('/dashboard/style.css', send('style.css'));
  for (const name of Object.keys(VENDOR_FILES)) app.get(`/dashboard/vendor/${name}`, send(`vendor/${name}`));
}
