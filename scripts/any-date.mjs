#!/usr/bin/env node
// The suite again with the clock shifted past a year ahead (libfaketime, Debian `faketime`): a test
// that pins a calendar date next to a real clock, or an age bound judged on the wrong time, fails
// here today instead of on the day the calendar reaches it. Suites that cannot follow the shift
// (Go servers, Redis, Chromium) are listed with their reasons in vitest.config.ts.
//
//   node scripts/any-date.mjs [--shift +400d] [vitest args...]

import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
let shift = '+400d';
const at = args.indexOf('--shift');
if (at !== -1) {
  shift = args[at + 1] ?? '';
  args.splice(at, 2);
}
if (!/^[+-]\d+[dhms]?$/.test(shift)) {
  console.error(`[any-date] --shift must look like +400d (got ${JSON.stringify(shift)})`);
  process.exit(2);
}

const env = {
  ...process.env,
  FERRY_SHIFTED_CLOCK: '1',
  // Timers and timeouts keep real time; only the wall clock moves.
  FAKETIME_DONT_FAKE_MONOTONIC: '1',
};

// Prove the shift takes: a faketime that silently does nothing would make this run pass for nothing.
const probe = spawnSync('faketime', ['-f', shift, process.execPath, '-e', 'process.stdout.write(String(Date.now()))'], { env, encoding: 'utf8' });
if (probe.error || probe.status !== 0) {
  console.error(`[any-date] faketime could not run (${probe.error?.message ?? probe.stderr.trim()}); scripts/setup.mjs --servers installs it`);
  process.exit(1);
}
const aheadDays = (Number(probe.stdout) - Date.now()) / 86_400_000;
if (!(Math.abs(aheadDays) > 300)) {
  console.error(`[any-date] the clock under faketime ${shift} is only ${aheadDays.toFixed(1)} days off; libfaketime is not taking effect`);
  process.exit(1);
}
console.log(`[any-date] running the suite with the wall clock at ${new Date(Number(probe.stdout)).toISOString()} (${shift})`);

const vitest = join(ROOT, 'node_modules', 'vitest', 'vitest.mjs');
const result = spawnSync('faketime', ['-f', shift, process.execPath, vitest, 'run', ...args], { cwd: ROOT, env, stdio: 'inherit' });
if (result.error) {
  console.error(`[any-date] vitest could not run: ${result.error.message}`);
  process.exit(1);
}
process.exit(result.status ?? 1);
