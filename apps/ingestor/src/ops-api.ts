// The health API on the ops server: fleet summary, devices (filter, search, sort), one device with
// its recent readings and health history, gateway health, alerts with acknowledge and silences;
// and token authentication for every /api route (read role: GET only; admin: everything).
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { isFerryError } from '@ferry/protocol';
import type { OpsServer } from '@ferry/runtime';
import { defaultPointMapping } from '@ferry/sinks';
import type { Point, PointMapping, PointQuery } from '@ferry/sinks';
import type { DeviceView, HealthMonitor, Liveness } from '@ferry/health';
import type { RecentReading } from './recent.js';

export interface ApiToken {
  readonly token: string;
  readonly role: 'admin' | 'read';
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
});

const deviceQuerySchema = z.object({ sinceMs: z.coerce.number().int().positive().max(30 * 86_400_000).default(3_600_000), limit: z.coerce.number().int().positive().max(5000).default(500) });
const alertsQuerySchema = z.object({ state: z.enum(['pending', 'firing', 'resolved']).optional(), subject: z.string().optional(), limit: z.coerce.number().int().positive().max(5000).default(200) });
const ackSchema = z.object({ by: z.string().min(1).max(100).default('operator'), comment: z.string().max(1000).optional() }).strict();
const silenceSchema = z
  .object({
    rule: z.string().min(1).optional(),
    subject: z.string().min(1).optional(),
    durationMs: z.number().int().positive().max(90 * 86_400_000),
    by: z.string().min(1).max(100).default('operator'),
    comment: z.string().max(1000).optional(),
  })
  .strict();
const idSchema = z.object({ id: z.coerce.number().int().positive() });

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);

function sortKey(sort: (typeof SORTS)[number], d: DeviceView): string | number {
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
      return d.completeness ?? -1;
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
  const byToken = new Map(tokens.map((t) => [t.token, t.role]));
  app.addHook('onRequest', async (req, reply) => {
    if (!req.url.startsWith('/api/')) return;
    if (byToken.size === 0) {
      if (!LOOPBACK.has(req.socket.remoteAddress ?? '')) return reply.code(403).send({ error: 'no API tokens configured: the API answers loopback callers only' });
      return;
    }
    const header = req.headers.authorization;
    const fromQuery = (req.query as Record<string, unknown> | undefined)?.['token'];
    const token = header?.startsWith('Bearer ') ? header.slice(7) : typeof fromQuery === 'string' ? fromQuery : undefined;
    const role = token === undefined ? undefined : byToken.get(token);
    if (role === undefined) return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'a valid API token is required' });
    if (role === 'read' && req.method !== 'GET' && req.method !== 'HEAD') return reply.code(403).send({ error: 'this token is read-only' });
  });
}

export function addHealthRoutes(app: OpsServer['app'], deps: HealthRoutesDeps): void {
  const { monitor } = deps;

  app.get('/api/summary', async () => monitor.summary());

  app.get('/api/devices', async (req, reply) => {
    const parsed = devicesQuerySchema.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: parsed.error.issues });
    const q = parsed.data;
    const needle = q.q?.toLowerCase();
    const views: DeviceView[] = [];
    for (const d of monitor.fleet.devices()) {
      if (q.state !== undefined && d.liveness !== q.state) continue;
      if (q.gateway !== undefined && d.gatewayId !== q.gateway) continue;
      if (needle && !d.deviceId.toLowerCase().includes(needle) && !(d.gatewayId ?? '').toLowerCase().includes(needle) && !(d.firmware ?? '').toLowerCase().includes(needle)) continue;
      views.push(monitor.deviceView(d));
    }
    const dir = q.order === 'asc' ? 1 : -1;
    views.sort((a, b) => {
      const ka = sortKey(q.sort, a);
      const kb = sortKey(q.sort, b);
      return (ka < kb ? -1 : ka > kb ? 1 : a.deviceId < b.deviceId ? -1 : 1) * dir;
    });
    // History stays on the device page: the list is what a table needs.
    const devices = views.slice(q.offset, q.offset + q.limit).map(({ history: _history, transitions: _transitions, ...rest }) => rest);
    return { total: views.length, devices };
  });

  app.get<{ Params: { id: string } }>('/api/devices/:id', async (req, reply) => {
    const d = monitor.fleet.device(req.params.id);
    if (!d) return reply.code(404).send({ error: 'unknown device' });
    const query = deviceQuerySchema.safeParse(req.query);
    if (!query.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: query.error.issues });
    const { readings, source } = deviceReadings(deps, d.deviceId, query.data.sinceMs, query.data.limit);
    return { device: monitor.deviceView(d), alerts: monitor.alerts.list({ subject: d.deviceId }).slice(0, 50), readings, readingsSource: source };
  });

  app.get('/api/gateways/health', async () => ({ gateways: [...monitor.fleet.gateways()].map((g) => monitor.gatewayView(g)).sort((a, b) => (a.gatewayId < b.gatewayId ? -1 : 1)) }));

  app.get('/api/alerts', async (req, reply) => {
    const parsed = alertsQuerySchema.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: parsed.error.issues });
    const { state, subject, limit } = parsed.data;
    return { alerts: monitor.alerts.list({ ...(state ? { state } : {}), ...(subject ? { subject } : {}) }).slice(0, limit), silences: monitor.alerts.activeSilences() };
  });

  app.post('/api/alerts/:id/ack', async (req, reply) => {
    const id = idSchema.safeParse(req.params);
    const body = ackSchema.safeParse(req.body ?? {});
    if (!id.success || !body.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID' });
    try {
      return monitor.alerts.acknowledge(id.data.id, body.data.by, body.data.comment);
    } catch (err) {
      if (isFerryError(err)) return reply.code(404).send({ error: err.message });
      throw err;
    }
  });

  app.get('/api/silences', async () => ({ silences: monitor.alerts.activeSilences() }));

  app.post('/api/silences', async (req, reply) => {
    const body = silenceSchema.safeParse(req.body ?? {});
    if (!body.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: body.error.issues });
    const { rule, subject, durationMs, by, comment } = body.data;
    if (rule === undefined && subject === undefined) return reply.code(400).send({ error: 'a silence names a rule, a subject or both' });
    const silence = monitor.alerts.silence({ matchers: { ...(rule ? { rule } : {}), ...(subject ? { subject } : {}) }, durationMs, by, ...(comment !== undefined ? { comment } : {}) });
    return reply.code(201).send(silence);
  });

  app.delete('/api/silences/:id', async (req, reply) => {
    const id = idSchema.safeParse(req.params);
    if (!id.success || !monitor.alerts.expireSilence(id.data.id)) return reply.code(404).send({ error: 'unknown silence' });
    return { expired: id.data.id };
  });
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

/** The dashboard: static files read once at start, no build step; the data comes from /api. */
export function addDashboardRoutes(app: OpsServer['app']): void {
  // Beside src/ and dist/ alike, so it resolves the same from sources and from the build.
  const dir = new URL('../dashboard/', import.meta.url);
  const files = new Map(Object.entries(DASHBOARD_FILES).map(([name, type]) => [name, { type, body: readFileSync(new URL(name, dir)) }]));
  const send = (name: string) => async (_req: unknown, reply: { header(k: string, v: string): { send(b: Buffer): unknown } }) => {
    const file = files.get(name);
    if (!file) throw new Error(`dashboard file ${name} missing`);
    return reply.header('content-type', file.type).send(file.body);
  };
  app.get('/', send('index.html'));
  app.get('/dashboard/app.js', send('app.js'));
  app.get('/dashboard/style.css', send('style.css'));
}
