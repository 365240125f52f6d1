import { configDefaults, defineConfig } from 'vitest/config';

/**
 * `npm test` runs the suite twice: at today's date, then (scripts/any-date.mjs) with the clock
 * shifted more than a year ahead by libfaketime, so a test that pins a calendar date next to a
 * real clock fails now rather than when the calendar reaches it. The shifted run leaves out only
 * what cannot follow the shift; each of those runs at today's date in the first run.
 */
const NOT_SHIFTABLE = [
  // Go servers keep the real clock (libfaketime cannot reach them) and VictoriaMetrics drops
  // points a year ahead of its own clock.
  'test/e2e.test.ts',
  'test/faults/scale-out.test.ts',
  'apps/ingestor/test/sink-down.test.ts',
  'apps/ingestor/test/crash.test.ts',
  'packages/testkit/test/servers.test.ts',
  'test/deploy/docker.test.ts',
  // Chromium fails under libfaketime (a recursive clock_gettime in its allocator). Redis would
  // too, so the harness runs it at the real time (ServerSpec.realClock); the compose healthcheck
  // test runs redis-cli as Docker would, under the shifted clock, where it hangs.
  'test/deploy/cluster.test.ts',
  'apps/ingestor/test/dashboard.test.ts',
  'apps/ingestor/test/ops-view.test.ts',
  'apps/ingestor/test/gateway-page.test.ts',
  // The installed unit runs as another user with a clean environment: at the real date, while the
  // test and the ingestor run shifted.
  'test/deploy/pi-install.test.ts',
];

export default defineConfig({
  resolve: {
    // Tests run on the TypeScript sources of workspace packages, no build needed.
    conditions: ['ferry-source'],
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: [...configDefaults.exclude, ...(process.env.FERRY_SHIFTED_CLOCK === '1' ? NOT_SHIFTABLE : [])],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Two cores: real servers per file; keep parallelism modest.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
