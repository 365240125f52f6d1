// The ops endpoint's token rule: beyond loopback /metrics and /healthz's details need a bearer
// token; the config says so at start, and the server holds to it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { createBasicOpsServer, createOpsServer, opsHttpAuthIssue, opsHttpSchema, opsTokens } from '../src/index.js';
import type { BasicOpsServer, OpsServer, OpsServerOptions } from '../src/index.js';

const TOKEN = 'a-token-of-32-characters-0123456';
const dir = mkdtempSync(join(tmpdir(), 'ops-http-'));
const servers: (OpsServer | BasicOpsServer)[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  rmSync(dir, { recursive: true, force: true });
});

const http = (input: Record<string, unknown>) => opsHttpSchema.parse(input);

describe('opsHttpAuthIssue', () => {
  it('refuses a host beyond loopback without a token, naming the host', () => {
    expect(opsHttpAuthIssue(http({ host: '0.0.0.0' }))).toEqual({ path: ['host'], message: expect.stringContaining('0.0.0.0 is reachable beyond this host') });
    expect(opsHttpAuthIssue(http({ host: '10.0.0.5' }))?.path).toEqual(['host']);
  });

  it('accepts loopback, a token, a token file, other tokens (the ingestor API) or allowAnonymous', () => {
    for (const host of ['127.0.0.1', 'localhost', '::1', '127.0.0.2']) expect(opsHttpAuthIssue(http({ host })), host).toBeUndefined();
    expect(opsHttpAuthIssue(http({ host: '0.0.0.0', token: TOKEN }))).toBeUndefined();
    expect(opsHttpAuthIssue(http({ host: '0.0.0.0', tokenFile: '/run/secrets/ops_token' }))).toBeUndefined();
    expect(opsHttpAuthIssue(http({ host: '0.0.0.0' }), 1)).toBeUndefined();
    expect(opsHttpAuthIssue(http({ host: '0.0.0.0', allowAnonymous: true }))).toBeUndefined();
  });

  it('refuses both token and tokenFile, and a short token', () => {
    expect(opsHttpAuthIssue(http({ token: TOKEN, tokenFile: '/x' }))?.path).toEqual(['tokenFile']);
    expect(() => http({ token: 'short' })).toThrow(/at least 16 characters/);
  });
});

describe('opsTokens', () => {
  it('reads the first line of the token file, with the inline token and the extra ones', () => {
    const file = join(dir, 'token');
    writeFileSync(file, `${TOKEN}\n# comment\n`);
    expect(opsTokens(http({ tokenFile: file }), ['api-token-0123456789'])).toEqual(['api-token-0123456789', TOKEN]);
    expect(opsTokens(http({ token: TOKEN }))).toEqual([TOKEN]);
  });

  it('names http.tokenFile when the file is missing or its token is short', () => {
    expect(() => opsTokens(http({ tokenFile: join(dir, 'missing') }))).toThrow(/http\.tokenFile: cannot read/);
    const short = join(dir, 'short');
    writeFileSync(short, 'abc\n');
    expect(() => opsTokens(http({ tokenFile: short }))).toThrow(/http\.tokenFile: .* at least 16 characters/);
  });
});

const SERVERS = { fastify: createOpsServer, basic: createBasicOpsServer } as const;
type Kind = keyof typeof SERVERS;

async function serve(tokens?: string[], kind: Kind = 'fastify', more: Partial<OpsServerOptions> = {}): Promise<string> {
  const registry = new Registry();
  const server = SERVERS[kind]({ port: 0, registry, health: () => ({ ok: false, detail: 'sink down' }), ...(tokens ? { tokens } : {}), ...more });
  servers.push(server);
  return server.listen();
}

const get = async (url: string, token?: string, method = 'GET') => {
  const res = await fetch(url, { method, ...(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }) });
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
};

describe.each(Object.keys(SERVERS) as Kind[])('the %s ops server with tokens', (kind) => {
  it('answers /metrics with a valid bearer token only', async () => {
    const url = await serve([TOKEN], kind);
    expect((await get(`${url}/metrics`)).status).toBe(401);
    expect((await get(`${url}/metrics`, `${TOKEN}x`)).status).toBe(401);
    expect((await get(`${url}/metrics`, TOKEN)).status).toBe(200);
  });

  it('gives /healthz its verdict to anyone and its details to token holders', async () => {
    const url = await serve([TOKEN], kind);
    expect(await get(`${url}/healthz`)).toEqual({ status: 503, body: '{"ok":false}', type: 'application/json; charset=utf-8' });
    const full = await get(`${url}/healthz`, TOKEN);
    expect(full.status).toBe(503);
    expect(JSON.parse(full.body)).toEqual({ ok: false, detail: 'sink down' });
  });

  it('is open without tokens (a loopback listener)', async () => {
    const url = await serve(undefined, kind);
    expect((await get(`${url}/metrics`)).status).toBe(200);
    expect(JSON.parse((await get(`${url}/healthz`)).body)).toEqual({ ok: false, detail: 'sink down' });
  });
});

describe('createBasicOpsServer', () => {
  it('answers as the Fastify server does: metrics, unknown routes and methods, HEAD, a protected path', async () => {
    const answers = async (kind: Kind) => {
      const url = await serve([TOKEN], kind, { protectedPaths: ['/gaps'] });
      return {
        metrics: await get(`${url}/metrics?x=1`, TOKEN),
        unknown: await get(`${url}/nope?x=1`),
        post: await get(`${url}/healthz`, undefined, 'POST'),
        head: await get(`${url}/healthz`, TOKEN, 'HEAD'),
        guarded: await get(`${url}/gaps/under`),
      };
    };
    const fastify = await answers('fastify');
    expect(await answers('basic')).toEqual(fastify);
    expect(fastify.unknown).toMatchObject({ status: 404 });
    expect(fastify.head).toEqual({ status: 503, body: '', type: 'application/json; charset=utf-8' });
    expect(fastify.guarded.status).toBe(401);
  });

  it("serves a component's routes as JSON, behind the token when protected, and a failing one as a 500", async () => {
    const registry = new Registry();
    const server = createBasicOpsServer({ port: 0, registry, health: () => ({ ok: true }), tokens: [TOKEN], protectedPaths: ['/gaps'] });
    servers.push(server);
    server.get('/gaps', () => ({ gaps: [1, 2] }));
    server.get('/open', () => Promise.resolve({ open: true }));
    server.get('/broken', () => {
      throw new Error('no outbox');
    });
    const url = await server.listen();
    expect(server.url).toBe(url);
    expect((await get(`${url}/gaps`)).status).toBe(401);
    expect(await get(`${url}/gaps`, TOKEN)).toEqual({ status: 200, body: '{"gaps":[1,2]}', type: 'application/json; charset=utf-8' });
    expect(JSON.parse((await get(`${url}/open`)).body)).toEqual({ open: true });
    expect(await get(`${url}/broken`)).toEqual({
      status: 500,
      body: JSON.stringify({ statusCode: 500, error: 'Internal Server Error', message: 'no outbox' }),
      type: 'application/json; charset=utf-8',
    });
    expect(server.authorized(`Bearer ${TOKEN}`)).toBe(true);
    expect(server.authorized(undefined)).toBe(false);
  });

  it('closes with a keep-alive connection open, and twice', async () => {
    const server = createBasicOpsServer({ port: 0, registry: new Registry(), health: () => ({ ok: true }) });
    const url = await server.listen();
    expect((await fetch(`${url}/healthz`, { keepalive: true })).status).toBe(200);
    await server.close();
    await server.close();
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });
});
