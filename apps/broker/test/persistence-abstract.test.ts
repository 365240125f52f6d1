// The upstream aedes-persistence abstract suite, run against our SQLite persistence. Each upstream
// case becomes one vitest test; the adapter gives it the node:test context it expects (t.assert,
// t.plan, t.diagnostic), and a plan that does not match the assertions made fails the case.
import assert from 'node:assert';
import { createRequire } from 'node:module';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, test } from 'vitest';
import { makeTempDir } from '@ferry/testkit';
import { createSqlitePersistence } from '../src/persistence-sqlite.js';

const require = createRequire(import.meta.url);
type CaseBody = (t: NodeTestContext) => Promise<void> | void;
type AbstractSuite = (opts: { test: (name: string, body: CaseBody) => void; persistence: () => unknown; buildEmitter: () => unknown; testAsync: boolean }) => void;
const abstractSuite = require('aedes-persistence/abstract.js') as AbstractSuite;
const mqemitter = require('mqemitter') as () => unknown;

interface NodeTestContext {
  assert: typeof assert;
  plan(count: number): void;
  diagnostic(message: string): void;
}

function nodeTestContext(): { t: NodeTestContext; check: () => void } {
  let planned: number | undefined;
  let made = 0;
  // Every assertion counts towards the plan, as node:test's t.assert does.
  const counted = new Proxy(assert, {
    get(target, key, receiver) {
      const value: unknown = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        made += 1;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return {
    t: {
      assert: counted,
      plan(count) {
        planned = count;
      },
      diagnostic() {},
    },
    check: () => {
      if (planned !== undefined) assert.equal(made, planned, `planned ${planned} assertions, made ${made}`);
    },
  };
}

let instances = 0;
const dir = await makeTempDir('persistence-abstract');
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

abstractSuite({
  test(name, body) {
    test(`aedes-persistence abstract: ${name}`, async () => {
      const { t, check } = nodeTestContext();
      await body(t);
      check();
    });
  },
  // A fresh database per case, as the suite expects an empty store each time.
  persistence: () => createSqlitePersistence({ path: join(dir, `case-${(instances += 1)}.db`), synchronous: 'normal' }),
  buildEmitter: () => mqemitter(),
  testAsync: true,
});
