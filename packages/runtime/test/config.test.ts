import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { isFerryError } from '@ferry/protocol';
import { backoffDelay, configFromEnv, loadConfig, ManualClock, readConfigFile } from '../src/index.js';

/** Temp dirs for config files, removed after the file's tests. */
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-cfg-'));
  dirs.push(dir);
  return dir;
}

const schema = z
  .object({
    name: z.string(),
    uplink: z.object({ url: z.string().url(), ackTimeoutMs: z.number().int().positive().default(1000) }).strict(),
    batch: z.object({ maxReadings: z.number().int().positive().default(10) }).strict().default({ maxReadings: 10 }),
  })
  .strict();

function configError(fn: () => unknown): { message: string; fields: unknown } {
  try {
    fn();
  } catch (err) {
    if (isFerryError(err, 'FERRY_ERR_CONFIG_INVALID')) return { message: err.message, fields: err.details.fields };
    throw err;
  }
  throw new Error('expected FERRY_ERR_CONFIG_INVALID');
}

describe('loadConfig', () => {
  it('merges file, environment and flags in that order', () => {
    const dir = tempDir();
    const file = join(dir, 'gw.yaml');
    writeFileSync(file, 'name: from-file\nuplink:\n  url: mqtt://file:1883\n  ackTimeoutMs: 5\n');
    const cfg = loadConfig({
      schema,
      file,
      env: { FERRY_UPLINK__URL: 'mqtt://env:1883', FERRY_BATCH__MAX_READINGS: '50', OTHER: 'x' },
      overrides: { name: 'from-flag' },
    });
    expect(cfg).toEqual({ name: 'from-flag', uplink: { url: 'mqtt://env:1883', ackTimeoutMs: 5 }, batch: { maxReadings: 50 } });
  });

  it('names the field and what was expected when a value is wrong', () => {
    const err = configError(() => loadConfig({ schema, overrides: { name: 'x', uplink: { url: 'mqtt://a:1', ackTimeoutMs: -3 } } }));
    expect(err.message).toContain('uplink.ackTimeoutMs');
    expect(err.message).toMatch(/>0|positive|greater/i);
    expect(err.fields).toEqual(['uplink.ackTimeoutMs']);
  });

  it('names a missing required field and an unknown key', () => {
    const err = configError(() => loadConfig({ schema, overrides: { uplink: { url: 'mqtt://a:1', bogus: 1 } } }));
    expect(err.message).toContain('name');
    expect(err.message).toContain('bogus');
  });

  it('refuses a config file that is not valid YAML', () => {
    const dir = tempDir();
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'name: [unclosed\n');
    expect(configError(() => loadConfig({ schema, file })).message).toContain('not valid YAML');
  });
});

describe('configFromEnv', () => {
  it('maps FERRY_A__B_C to a.bC and parses JSON scalars', () => {
    expect(configFromEnv({ FERRY_HTTP__PORT: '0', FERRY_DEVICES__LISTEN: 'false', FERRY_GATEWAY_ID: 'gw' })).toEqual({
      http: { port: 0 },
      devices: { listen: false },
      gatewayId: 'gw',
    });
  });
});

describe('backoffDelay', () => {
  it('grows exponentially within the cap and never returns zero', () => {
    const policy = { initialMs: 100, maxMs: 1000, factor: 2 };
    expect(backoffDelay(0, policy, () => 0)).toBe(50);
    expect(backoffDelay(3, policy, () => 0.999)).toBeLessThanOrEqual(800);
    expect(backoffDelay(10, policy, () => 1)).toBe(1000);
  });

  it('ManualClock moves only when told', () => {
    const clock = new ManualClock(5);
    clock.advance(10);
    expect(clock.now()).toBe(15);
  });
});

describe('readConfigFile', () => {
  it('lets go of the YAML parser once a YAML file is read, and loads it again for the next one', () => {
    const dir = tempDir();
    const yaml = join(dir, 'gw.yaml');
    writeFileSync(yaml, 'name: a\nlist: [1, 2]\n');
    const json = join(dir, 'gw.json');
    writeFileSync(json, '{"name":"b"}');
    const cache = createRequire(import.meta.url).cache;
    const yamlModules = () => Object.keys(cache).filter((path) => /[\\/]yaml[\\/]/.test(path));
    expect(yamlModules()).toEqual([]);
    expect(readConfigFile(json)).toEqual({ name: 'b' });
    expect(readConfigFile(yaml)).toEqual({ name: 'a', list: [1, 2] });
    expect(yamlModules()).toEqual([]);
    expect(readConfigFile(yaml)).toEqual({ name: 'a', list: [1, 2] });
    writeFileSync(yaml, 'name: [unclosed\n');
    expect(() => readConfigFile(yaml)).toThrow(/is not valid YAML/);
    expect(yamlModules()).toEqual([]);
  });
});
