#!/usr/bin/env node
// One command that makes a fresh clone ready: installs the npm packages and builds, and with
// --servers first installs the real servers the tests run (Debian packages). Idempotent:
// what is already there is left alone. Plain Node, no dependencies: it runs before any install.
//
//   node scripts/setup.mjs [--servers] [--skip-build]

import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, readFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
// Pinned in package.json "packageManager". Corepack is not used: it is broken here.
const PNPM = ['--yes', 'pnpm@12.21.0'];

// Binary -> Debian package that ships it.
const SERVER_BINARIES = [
  ['mosquitto', 'mosquitto'],
  ['mosquitto_pub', 'mosquitto-clients'],
  ['mosquitto_sub', 'mosquitto-clients'],
  ['influxd', 'influxdb'],
  ['victoria-metrics', 'victoria-metrics'],
  ['redis-server', 'redis-server'],
  ['chromium', 'chromium'],
  ['ip', 'iproute2'],
  ['tc', 'iproute2'],
  // test/deploy: the Pi install scripts are linted and the systemd unit verified.
  ['shellcheck', 'shellcheck'],
  ['systemd-analyze', 'systemd'],
  // scripts/any-date.mjs: the suite again with the clock shifted a year ahead (libfaketime).
  ['faketime', 'faketime'],
  // test/deploy: docker/init-secrets.sh makes the compose stack's certificates and ops token.
  ['openssl', 'openssl'],
  // Power-cut tests: @ferry/testkit's powercut-fs.py, a FUSE filesystem that loses unsynced writes.
  ['fusermount3', 'fuse3'],
  ['/usr/lib/python3/dist-packages/fusepy.py', 'python3-fusepy'],
];
// better-sqlite3 compiles from source (its prebuilt download is not reachable): the npm install needs these.
const BUILD_TOOLS = [
  ['python3', 'python3'],
  ['make', 'make'],
  ['g++', 'g++'],
];
// Daemons a package's post-install script may start on default ports.
const DAEMONS = new Set(['mosquitto', 'influxd', 'victoria-metrics', 'redis-server']);

class SetupError extends Error {}

function log(message) {
  console.log(`[setup] ${message}`);
}

function parseArgs(argv) {
  const opts = { servers: false, skipBuild: false };
  for (const arg of argv) {
    if (arg === '--servers') opts.servers = true;
    else if (arg === '--skip-build') opts.skipBuild = true;
    else if (arg === '--help' || arg === '-h') {
      console.log('usage: node scripts/setup.mjs [--servers] [--skip-build]');
      process.exit(0);
    } else throw new SetupError(`unknown argument ${arg} (expected --servers or --skip-build)`);
  }
  return opts;
}

/** Runs a command with inherited output; throws naming the command if it fails. */
function run(command, args, env = {}) {
  const shown = [command, ...args].map((a) => (/[\s"']/.test(a) || a === '' ? JSON.stringify(a) : a)).join(' ');
  log(`$ ${shown}`);
  const result = spawnSync(command, args, { cwd: ROOT, stdio: 'inherit', env: { ...process.env, ...env } });
  if (result.error !== undefined) throw new SetupError(`\`${shown}\` could not run: ${result.error.message}`);
  if (result.status !== 0) {
    const how = result.signal !== null ? `signal ${result.signal}` : `exit code ${result.status}`;
    throw new SetupError(`\`${shown}\` failed with ${how}`);
  }
}

// Same search as @ferry/testkit's findBinary: PATH plus the system dirs a non-root PATH lacks.
function findBinary(name) {
  // A file a package ships (a Python module), not a command.
  if (name.startsWith('/')) return existsSync(name) ? name : undefined;
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/sbin', '/bin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

/** pid -> command line of running daemons we care about, read from /proc (what pgrep reads). */
function runningDaemons() {
  const found = new Map();
  let entries;
  try {
    entries = readdirSync('/proc');
  } catch {
    return found;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
      const first = argv[0] ?? '';
      const name = first.split('/').pop()?.split(' ')[0] ?? '';
      if (DAEMONS.has(name)) found.set(Number(entry), argv.join(' '));
    } catch {
      // process ended while we looked
    }
  }
  return found;
}

function isRunning(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stopProcess(pid, cmdline) {
  log(`stopping ${cmdline} (pid ${pid}), started by the package install: tests run their own instances`);
  try {
    process.kill(pid, 'SIGTERM');
  } catch (err) {
    log(`warning: could not stop pid ${pid}: ${err.message}; stop it by hand so it does not hold a default port`);
    return;
  }
  const deadline = Date.now() + 10_000;
  while (isRunning(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  if (isRunning(pid)) {
    log(`pid ${pid} ignored SIGTERM for 10 s; sending SIGKILL`);
    process.kill(pid, 'SIGKILL');
  }
}

async function installDebianPackages(binaries, what) {
  const missing = binaries.filter(([binary]) => findBinary(binary) === undefined);
  for (const [binary] of binaries) {
    const at = findBinary(binary);
    if (at !== undefined) log(`found ${binary} at ${at}`);
  }
  if (missing.length === 0) {
    log(`all ${what} are installed`);
    return;
  }
  const packages = [...new Set(missing.map(([, pkg]) => pkg))];
  log(`missing: ${missing.map(([b]) => b).join(', ')} -> Debian packages: ${packages.join(' ')}`);
  if (findBinary('apt-get') === undefined) {
    throw new SetupError(
      `apt-get is not available; install these packages (Debian names) by hand: ${packages.join(' ')}`,
    );
  }
  const asRoot = process.getuid?.() === 0;
  if (!asRoot && findBinary('sudo') === undefined) {
    throw new SetupError(`not root and no sudo; as root run: apt-get install ${packages.join(' ')}`);
  }
  const privileged = (args) => (asRoot ? ['apt-get', args] : ['sudo', ['apt-get', ...args]]);

  const daemonsBefore = runningDaemons();
  run(...privileged(['update']));
  // sudo drops most of the environment, so the frontend is also passed on its command line.
  const install = ['install', '-y', '--no-install-recommends', ...packages];
  if (asRoot) run('apt-get', install, { DEBIAN_FRONTEND: 'noninteractive' });
  else run('sudo', ['DEBIAN_FRONTEND=noninteractive', 'apt-get', ...install]);

  // Post-install scripts may have started a daemon on its default port (1883, 6379,
  // 8086, 8428). Only those started just now, with the system's config, are stopped;
  // servers started by tests live in ferry-* temp dirs.
  for (const [pid, cmdline] of runningDaemons()) {
    if (daemonsBefore.has(pid) || cmdline.includes('ferry-')) continue;
    if (/\/etc\/|\/var\/lib\/|:6379\b|:1883\b|:8086\b|:8428\b/.test(cmdline) || !cmdline.includes(' ')) {
      await stopProcess(pid, cmdline);
    }
  }

  const stillMissing = binaries.filter(([binary]) => findBinary(binary) === undefined).map(([b]) => b);
  if (stillMissing.length > 0) {
    throw new SetupError(`after apt-get install these are still missing: ${stillMissing.join(', ')}`);
  }
  log(`${what} installed`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  await installDebianPackages(opts.servers ? [...BUILD_TOOLS, ...SERVER_BINARIES] : BUILD_TOOLS, opts.servers ? 'build tools and test servers' : 'build tools');
  // pnpm-workspace.yaml sets pmOnFail: ignore (see the comment there).
  run('npx', [...PNPM, 'install', '--frozen-lockfile']);
  if (opts.skipBuild) log('skipping the build (--skip-build)');
  else run('npx', [...PNPM, 'run', 'build']);
  log('done');
}

main().catch((err) => {
  console.error(`[setup] FAILED: ${err instanceof SetupError ? err.message : err.stack ?? String(err)}`);
  process.exit(1);
});
