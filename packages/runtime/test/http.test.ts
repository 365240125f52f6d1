// The ops endpoint's token rule: beyond loopback /metrics and /healthz's details need a bearer
// token; the config says so at start, and the server holds to it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { createOpsServer, opsHttpAuthIssue, opsHttpSchema, opsTokens } from '../src/index.js';
import type { OpsServer } from '../src/index.js';

const TOKEN = 'a-token-of-32-characters-0123456';
const dir = mkdtempSync(join(tmpdir(), 'ops-http-'));
const servers: OpsServer[] = [];
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

async function serve(tokens?: string[]): Promise<string> {
  const registry = new Registry();
  const server = createOpsServer({ port: 0, registry, health: () => ({ ok: false, detail: 'sink down' }), ...(tokens ? { tokens } : {}) });
  servers.push(server);
  return server.listen();
}

const get = async (url: string, token?: string) => {
  const res = await fetch(url, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: await res.text() };
};

describe('createOpsServer with tokens', () => {
  it('answers /metrics with a valid bearer token only', async () => {
    const url = await serve([TOKEN]);
    expect((await get(`${url}/metrics`)).status).toBe(401);
    expect((await get(`${url}/metrics`, `${TOKEN}x`)).status).toBe(401);
    expect((await get(`${url}/metrics`, TOKEN)).status).toBe(200);
  });

  it('gives /healthz its verdict to anyone and its details to token holders', async () => {
    const url = await serve([TOKEN]);
    expect(await get(`${url}/healthz`)).toEqual({ status: 503, body: '{"ok":false}' });
    const full = await get(`${url}/healthz`, TOKEN);
    expect(full.status).toBe(503);
    expect(JSON.parse(full.body)).toEqual({ ok: false, detail: 'sink down' });
  });

  it('is open without tokens (a loopback listener)', async () => {
    const url = await serve();
    expect((await get(`${url}/metrics`)).status).toBe(200);
    expect(JSON.parse((await get(`${url}/healthz`)).body)).toEqual({ ok: false, detail: 'sink down' });
  });
});
