// The ops HTTP endpoint every process serves: /healthz and /metrics, plus whatever routes
// a component adds (the ingestor's ops API). Beyond loopback it needs a bearer token, as the
// MQTT listeners need logins: /metrics and the detailed /healthz answer only with it, and a
// caller without it gets /healthz's verdict alone (a liveness probe needs no secret).
// Two servers keep that rule: createOpsServer (Fastify, for components with an API of their own)
// and createBasicOpsServer (node:http, a few JSON GET routes: the gateway, where Fastify with its
// schema compilers would be a tenth of a Pi gateway's memory). Fastify is loaded only by the first.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { FerryError } from '@ferry/protocol';
import { isLoopbackHost } from './credentials.js';

const MIN_TOKEN_LENGTH = 16;

/** The `http` block of every service's config: where its ops endpoint listens (port 0: any free port). */
export const opsHttpSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(0).max(65_535).default(0),
    /** Bearer token for /metrics and the detailed /healthz (`Authorization: Bearer <token>`). */
    token: z.string().min(MIN_TOKEN_LENGTH, `an ops token is at least ${MIN_TOKEN_LENGTH} characters`).optional(),
    /** A file whose first line is the token (a Docker secret, a file only root and the service read). */
    tokenFile: z.string().min(1).optional(),
    /** Serve /metrics and /healthz to anyone beyond loopback, on purpose. */
    allowAnonymous: z.boolean().default(false),
  })
  .strict();

export type OpsHttpConfig = z.infer<typeof opsHttpSchema>;

/**
 * The rule every service's config applies to its `http` block: a host others can reach needs a
 * token (or `otherTokens`, the ingestor's API tokens) unless `allowAnonymous` says it is open on
 * purpose. Returns the message for the config error, or undefined when the block is fine.
 */
export function opsHttpAuthIssue(http: OpsHttpConfig, otherTokens = 0): { path: string[]; message: string } | undefined {
  if (http.token !== undefined && http.tokenFile !== undefined) return { path: ['tokenFile'], message: 'set either token or tokenFile, not both' };
  if (http.token !== undefined || http.tokenFile !== undefined || otherTokens > 0 || http.allowAnonymous || isLoopbackHost(http.host)) return undefined;
  return {
    path: ['host'],
    message: `${http.host} is reachable beyond this host, so /metrics and /healthz need a bearer token: set http.tokenFile (or http.token), or http.allowAnonymous: true to serve them openly on purpose`,
  };
}

/** Adds opsHttpAuthIssue's finding, if any, to a service config's refinement under `http`. */
export function refineOpsHttp(ctx: z.RefinementCtx, http: OpsHttpConfig | false, otherTokens = 0): void {
  const issue = http === false ? undefined : opsHttpAuthIssue(http, otherTokens);
  if (issue) ctx.addIssue({ code: 'custom', path: ['http', ...issue.path], message: issue.message });
}

/**
 * The tokens the ops endpoint accepts: `http.token`, the first line of `http.tokenFile` (read
 * now, at start) and `extra`. An unreadable or short token file is a config error naming it.
 */
export function opsTokens(http: OpsHttpConfig, extra: readonly string[] = []): string[] {
  const tokens = [...extra];
  if (http.token !== undefined) tokens.push(http.token);
  if (http.tokenFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(http.tokenFile, 'utf8');
    } catch (err) {
      throw new FerryError('FERRY_ERR_CONFIG_INVALID', `http.tokenFile: cannot read ${http.tokenFile}: ${(err as Error).message}`, { field: 'http.tokenFile' });
    }
    const token = (text.split(/\r?\n/)[0] ?? '').trim();
    if (token.length < MIN_TOKEN_LENGTH) {
      throw new FerryError('FERRY_ERR_CONFIG_INVALID', `http.tokenFile: ${http.tokenFile} must hold a token of at least ${MIN_TOKEN_LENGTH} characters on its first line`, { field: 'http.tokenFile' });
    }
    tokens.push(token);
  }
  return tokens;
}

const digest = (token: string): Buffer => createHash('sha256').update(token).digest();

/** Whether a request carries one of `tokens` as a bearer token; compared in constant time. */
function bearerMatches(header: string | undefined, tokens: readonly Buffer[]): boolean {
  if (header === undefined || !header.startsWith('Bearer ')) return false;
  const offered = digest(header.slice(7).trim());
  let found = false;
  for (const t of tokens) found = timingSafeEqual(t, offered) || found;
  return found;
}

export interface HealthReport {
  readonly ok: boolean;
  readonly [detail: string]: unknown;
}

export interface OpsServerOptions {
  readonly host?: string;
  readonly port: number;
  readonly registry: Registry;
  readonly health: () => HealthReport | Promise<HealthReport>;
  /** Bearer tokens (opsTokens()); with any, /metrics and /healthz's details need one of them. */
  readonly tokens?: readonly string[];
  /** More routes that need a token as /metrics does (a component's own ops routes, e.g. the gateway's /gaps). */
  readonly protectedPaths?: readonly string[];
}

export interface OpsServer {
  readonly app: FastifyInstance;
  /** Whether a request's Authorization header opens what /metrics opens (always, without tokens). */
  authorized(authorization: string | undefined): boolean;
  /** Starts listening; resolves with the bound URL. */
  listen(): Promise<string>;
  readonly url: string | undefined;
  close(): Promise<void>;
}

/** Whether a request's Authorization header carries one of `tokens` (any header, without tokens). */
function authorizer(tokens: readonly string[] | undefined): (header: string | undefined) => boolean {
  const digests = (tokens ?? []).map(digest);
  return (header) => digests.length === 0 || bearerMatches(header, digests);
}

/** Whether a request path needs the token: /metrics and the component's protected paths, and what lies under them. */
function guardedPath(options: OpsServerOptions): (path: string) => boolean {
  const guarded = ['/metrics', ...(options.protectedPaths ?? [])];
  return (path) => guarded.some((p) => path === p || path.startsWith(`${p}/`));
}

const UNAUTHORIZED = { error: 'a valid ops token is required (http.token)' };

/** Fastify is CommonJS and sizeable: required when a component asks for this server, not when @ferry/runtime is imported. */
function loadFastify(): typeof import('fastify').default {
  return (createRequire(import.meta.url)('fastify') as typeof import('fastify')).default;
}

export function createOpsServer(options: OpsServerOptions): OpsServer {
  const app = loadFastify()({ logger: false });
  let url: string | undefined;
  const authorized = authorizer(options.tokens);
  const isGuarded = guardedPath(options);
  app.get('/healthz', async (req, reply) => {
    const report = await options.health();
    return reply.code(report.ok ? 200 : 503).send(authorized(req.headers.authorization) ? report : { ok: report.ok });
  });
  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?')[0] ?? '';
    if (!isGuarded(path) || authorized(req.headers.authorization)) return;
    return reply.code(401).header('www-authenticate', 'Bearer').send(UNAUTHORIZED);
  });
  app.get('/metrics', async (_req, reply) => {
    return reply.header('content-type', options.registry.contentType).send(await options.registry.metrics());
  });
  return {
    app,
    authorized,
    get url() {
      return url;
    },
    async listen() {
      url = await app.listen({ host: options.host ?? '127.0.0.1', port: options.port });
      return url;
    },
    async close() {
      await app.close();
    },
  };
}

export interface BasicOpsServer {
  /** Adds a GET route (HEAD answered too) whose result is sent as JSON; before listen(). */
  get(path: string, handler: () => unknown): void;
  /** Whether a request's Authorization header opens what /metrics opens (always, without tokens). */
  authorized(authorization: string | undefined): boolean;
  /** Starts listening; resolves with the bound URL. */
  listen(): Promise<string>;
  readonly url: string | undefined;
  close(): Promise<void>;
}

type Answer = { readonly status: number; readonly body: string; readonly type: string; readonly headers?: Record<string, string> };

const JSON_TYPE = 'application/json; charset=utf-8';
const json = (status: number, value: unknown): Answer => ({ status, body: JSON.stringify(value), type: JSON_TYPE });

/**
 * The ops endpoint on node:http alone: /healthz, /metrics and the component's JSON GET routes,
 * with createOpsServer's token rule and its answers (status codes, bodies, Fastify's 404 and 500
 * shapes), for a process that needs nothing more.
 */
export function createBasicOpsServer(options: OpsServerOptions): BasicOpsServer {
  const authorized = authorizer(options.tokens);
  const isGuarded = guardedPath(options);
  const routes = new Map<string, (authorization: string | undefined) => Promise<Answer>>();
  routes.set('/healthz', async (authorization) => {
    const report = await options.health();
    return json(report.ok ? 200 : 503, authorized(authorization) ? report : { ok: report.ok });
  });
  routes.set('/metrics', async () => ({ status: 200, body: await options.registry.metrics(), type: options.registry.contentType }));

  async function answer(req: IncomingMessage): Promise<Answer> {
    const path = (req.url ?? '/').split('?')[0] ?? '';
    if (isGuarded(path) && !authorized(req.headers.authorization)) return { ...json(401, UNAUTHORIZED), headers: { 'www-authenticate': 'Bearer' } };
    const route = req.method === 'GET' || req.method === 'HEAD' ? routes.get(path) : undefined;
    if (!route) return json(404, { message: `Route ${req.method ?? ''}:${req.url ?? path} not found`, error: 'Not Found', statusCode: 404 });
    try {
      return await route(req.headers.authorization);
    } catch (err) {
      return json(500, { statusCode: 500, error: 'Internal Server Error', message: err instanceof Error ? err.message : String(err) });
    }
  }

  function respond(req: IncomingMessage, res: ServerResponse): void {
    void answer(req).then((a) => {
      res.writeHead(a.status, { 'content-type': a.type, 'content-length': Buffer.byteLength(a.body), ...a.headers });
      res.end(req.method === 'HEAD' ? undefined : a.body);
    });
  }

  const server = createServer(respond);
  /** For `localhost`, the servers on its other addresses (Fastify listens on each, e.g. ::1 and 127.0.0.1). */
  const others: Server[] = [];
  let url: string | undefined;
  return {
    get(path, handler) {
      routes.set(path, async () => json(200, await handler()));
    },
    authorized,
    get url() {
      return url;
    },
    async listen() {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.port, options.host ?? '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
      const { address, port } = server.address() as AddressInfo;
      if (options.host === 'localhost') {
        const { lookup } = await import('node:dns/promises');
        const all = await lookup('localhost', { all: true }).catch(() => []);
        for (const other of all.filter((a) => a.address !== address)) {
          const extra = createServer(respond);
          // Best effort, as Fastify: an address that cannot be bound (no IPv6) is left out.
          const bound = await new Promise<boolean>((resolve) => {
            extra.once('error', () => resolve(false));
            extra.listen(port, other.address, () => resolve(true));
          });
          if (bound) others.push(extra);
        }
      }
      // As Fastify reports it: the wildcard as the loopback address, IPv6 in brackets.
      url = address === '0.0.0.0' ? `http://127.0.0.1:${port}` : address.includes(':') ? `http://[${address}]:${port}` : `http://${address}:${port}`;
      return url;
    },
    async close() {
      // close() ends idle keep-alive connections (Node 19+) and waits for the busy ones.
      await Promise.all([server, ...others.splice(0)].filter((s) => s.listening).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    },
  };
}
