// The Raspberry Pi install path, run for real: deploy/pack.sh builds the release tarball,
// deploy/pi/install.sh lays it into a temporary root (DESTDIR), systemd-analyze checks the unit,
// and the installed gateway runs as an unprivileged throwaway user against an in-process broker
// and ingestor. Needs root (useradd, setpriv) and a built tree (`npx tsc -b`).
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBroker } from '@ferry/broker';
import type { Broker } from '@ferry/broker';
import { createIngestor } from '@ferry/ingestor';
import type { Ingestor } from '@ferry/ingestor';
import { gatewayConfigSchema, OUTBOX_SCHEMA_VERSION } from '@ferry/gateway';
import { parseConfig, readConfigFile, silentLogger } from '@ferry/runtime';
import { findBinary, stablePort, makeTempDir, waitFor } from '@ferry/testkit';
import { httpText, metricValue, runCommand, startChild, waitHealthy } from './child.js';
import type { Child } from './child.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PACK = join(ROOT, 'deploy/pack.sh');
const INSTALL = join(ROOT, 'deploy/pi/install.sh');
const UNINSTALL = join(ROOT, 'deploy/pi/uninstall.sh');
const UNIT = join(ROOT, 'deploy/pi/ferry-gateway.service');

let work: string;
let tarball: string;
let destdir: string;
let user: { name: string; uid: number; gid: number };
let broker: Broker;
let ingestor: Ingestor;
/** Device passwords install.sh printed, by device id (= user name). */
const devicePasswords = new Map<string, string>();

function install(...extra: string[]): string {
  const result = runCommand('bash', [INSTALL, '--tarball', tarball, '--destdir', destdir, '--gateway-id', 'pi-test', ...extra]);
  expect(result.code, result.stderr + result.stdout).toBe(0);
  return result.stdout;
}

function idOf(flag: '-u' | '-g', name: string): number {
  return Number(runCommand('id', [flag, name]).stdout.trim());
}

interface RunningGateway {
  readonly child: Child;
  readonly deviceUrl: string;
  readonly httpUrl: string;
}

/** The device accounts install.sh wrote, where the installed config's /etc/ferry/devices.passwd points in the temporary root. */
function passwordFileEnv(): Record<string, string> {
  return { FERRY_GATEWAY__DEVICES__LISTEN__PASSWORD_FILE: join(destdir, 'etc/ferry/devices.passwd') };
}

/**
 * The installed entry, as the unit runs it, but as the throwaway user with no new privileges.
 * The device listener keeps the shipped host (0.0.0.0) and login settings; only its port moves.
 */
async function runInstalledGateway(uplink: string): Promise<RunningGateway> {
  const devicePort = await stablePort();
  const httpPort = await stablePort();
  const child = startChild({
    setpriv: ['--reuid', String(user.uid), '--regid', String(user.gid), '--clear-groups', '--no-new-privs'],
    command: process.execPath,
    args: [
      join(destdir, 'opt/ferry/gateway/bin/ferry.mjs'),
      'gateway',
      '--config', join(destdir, 'etc/ferry/gateway.yaml'),
      '--data-dir', join(destdir, 'var/lib/ferry'),
      '--uplink', uplink,
      '--listen-port', String(devicePort),
      '--http-port', String(httpPort),
    ],
    // No HOME and no inherited variables: only what a systemd unit would give it.
    env: { PATH: '/usr/bin:/bin', NODE_ENV: 'production', ...passwordFileEnv() },
    cwd: '/',
    logFile: join(work, 'gateway.log'),
  });
  const httpUrl = `http://127.0.0.1:${httpPort}`;
  await waitHealthy(`${httpUrl}/healthz`, child, 'installed gateway');
  return { child, deviceUrl: `mqtt://127.0.0.1:${devicePort}`, httpUrl };
}

async function publishReadings(deviceUrl: string, device: string, count: number): Promise<void> {
  // Logged in with the account install.sh made for this device.
  const password = devicePasswords.get(device);
  expect(password, `install.sh printed no password for ${device}`).toBeDefined();
  const client = await mqtt.connectAsync(deviceUrl, { protocolVersion: 4, clientId: `dev-${device}`, reconnectPeriod: 0, username: device, password: password ?? '' });
  try {
    for (let i = 0; i < count; i += 1) {
      // QoS 1: the PUBACK comes only once the reading is committed to the outbox.
      await client.publishAsync(`devices/${device}/telemetry`, JSON.stringify({ ts: Date.now(), metrics: { temperature: 20 + i } }), { qos: 1 });
    }
  } finally {
    await client.endAsync();
  }
}

async function ackedReadings(httpUrl: string): Promise<number> {
  const res = await httpText(`${httpUrl}/metrics`);
  return res ? metricValue(res.body, 'ferry_gateway_acked_readings_total') : -1;
}

beforeAll(async () => {
  work = await makeTempDir('pi-install');
  // The throwaway user must traverse into the temporary root, as `ferry` does into /.
  chmodSync(work, 0o755);
  const out = runCommand('bash', [PACK, '--skip-build', '--out', join(work, 'out')]);
  expect(out.code, out.stderr).toBe(0);
  tarball = out.stdout.trim().split('\n').pop() ?? '';
  expect(existsSync(tarball)).toBe(true);
  destdir = join(work, 'root');

  const name = `ferrytest${process.pid}`;
  runCommand('userdel', [name]); // left over from a run that was killed, if any
  const added = runCommand('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', name]);
  expect(added.code, added.stderr).toBe(0);
  user = { name, uid: idOf('-u', name), gid: idOf('-g', name) };

  broker = createBroker({ listen: { host: '127.0.0.1', port: 0 }, http: false }, { logger: silentLogger() });
  await broker.ready();
  ingestor = createIngestor({ dataDir: join(work, 'ingestor'), broker: { url: broker.url ?? '' }, http: false }, { logger: silentLogger() });
  await ingestor.ready();
}, 180_000);

afterAll(async () => {
  await ingestor?.close();
  await broker?.close();
  if (user) runCommand('userdel', [user.name]);
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('deploy/pi/install.sh into a temporary root', () => {
  it('lays down the program, a valid config, the device accounts, the data dir, the unit and the ferry command', () => {
    const stdout = install('--device', 'pi-sensor-1', '--device', 'pi-sensor-2');
    expect(stdout).toContain('better-sqlite3 loads as shipped');
    // Each device's password is printed once; the file keeps scrypt hashes only, readable by the service group.
    for (const m of stdout.matchAll(/^\[ferry-install\]\s+user (\S+)\s+password (\S+)$/gm)) devicePasswords.set(m[1] ?? '', m[2] ?? '');
    expect([...devicePasswords.keys()]).toEqual(['pi-sensor-1', 'pi-sensor-2']);
    const passwd = join(destdir, 'etc/ferry/devices.passwd');
    expect(statSync(passwd).mode & 0o777).toBe(0o640);
    const accounts = readFileSync(passwd, 'utf8');
    expect(accounts).toMatch(/^pi-sensor-1:scrypt\$16384\$8\$1\$/m);
    for (const password of devicePasswords.values()) expect(accounts).not.toContain(password);
    expect(stdout).not.toContain('warning');
    const program = join(destdir, 'opt/ferry/gateway');
    for (const file of ['bin/ferry.mjs', 'dist/main.js', 'package.json', 'RELEASE', 'docs/raspberry-pi.md']) {
      expect(existsSync(join(program, file)), file).toBe(true);
    }
    // Sources and tests are not shipped; dev dependencies are not installed.
    expect(existsSync(join(program, 'src'))).toBe(false);
    expect(existsSync(join(program, 'node_modules/@ferry/testkit'))).toBe(false);
    expect(readFileSync(join(program, 'RELEASE'), 'utf8')).toMatch(/^node_abi=\d+$/m);

    const config = join(destdir, 'etc/ferry/gateway.yaml');
    expect(statSync(config).mode & 0o777).toBe(0o640);
    expect(statSync(join(destdir, 'etc/ferry')).mode & 0o777).toBe(0o750);
    const parsed = parseConfig(gatewayConfigSchema, readConfigFile(config), 'installed gateway.yaml');
    expect(parsed.gatewayId).toBe('pi-test');
    expect(parsed.dataDir).toBe('/var/lib/ferry');
    expect(existsSync(join(destdir, 'etc/ferry/gateway.yaml.example'))).toBe(true);

    expect(statSync(join(destdir, 'var/lib/ferry')).isDirectory()).toBe(true);
    expect(statSync(join(destdir, 'var/lib/ferry')).mode & 0o777).toBe(0o750);
    expect(readFileSync(join(destdir, 'etc/systemd/system/ferry-gateway.service'), 'utf8')).toBe(readFileSync(UNIT, 'utf8'));
    expect(runCommand('readlink', [join(destdir, 'usr/local/bin/ferry')]).stdout.trim()).toBe('/opt/ferry/gateway/bin/ferry.mjs');
  }, 120_000);

  it('ships a hardened unit that systemd-analyze verify accepts without a warning', () => {
    const unitFile = join(destdir, 'etc/systemd/system/ferry-gateway.service');
    const unit = readFileSync(unitFile, 'utf8');
    for (const line of [
      'User=ferry',
      'Restart=on-failure',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'PrivateTmp=yes',
      'ReadWritePaths=/var/lib/ferry',
      'StandardError=journal',
      'ExecStart=/usr/bin/node --max-semi-space-size=1 --optimize-for-size --no-concurrent-recompilation /opt/ferry/gateway/bin/ferry.mjs gateway --config /etc/ferry/gateway.yaml',
    ]) {
      expect(unit.split('\n'), line).toContain(line);
    }
    const analyze = findBinary('systemd-analyze');
    const verified = runCommand(analyze, ['verify', unitFile]);
    expect(verified.code, verified.stderr).toBe(0);
    // verify exits 0 on unknown keys and bad values; they show up as lines naming the file.
    const aboutUnit = (verified.stdout + verified.stderr).split('\n').filter((l) => l.includes('ferry-gateway'));
    expect(aboutUnit).toEqual([]);

    // The same check does see a mistake: a misspelled key in a copy of the unit.
    const broken = join(work, 'broken/ferry-gateway.service');
    mkdirSync(join(work, 'broken'), { recursive: true });
    writeFileSync(broken, unit.replace('ProtectHome=yes', 'ProtectHomes=yes'));
    const complaint = runCommand(analyze, ['verify', broken]);
    expect(complaint.stdout + complaint.stderr).toMatch(/ferry-gateway\.service.*Unknown key 'ProtectHomes'/);
  }, 60_000);

  it('runs from the installed layout as an unprivileged user and gets its reading acked end to end', async () => {
    // What install.sh does on a real system for the `ferry` user.
    chownSync(join(destdir, 'etc/ferry'), 0, user.gid);
    chownSync(join(destdir, 'etc/ferry/gateway.yaml'), 0, user.gid);
    chownSync(join(destdir, 'etc/ferry/devices.passwd'), 0, user.gid);
    chownSync(join(destdir, 'var/lib/ferry'), user.uid, user.gid);

    const gateway = await runInstalledGateway(broker.url ?? '');
    try {
      // The shipped listener is on the LAN: a device without a login, or with another device's, is turned away.
      await expect(mqtt.connectAsync(gateway.deviceUrl, { protocolVersion: 4, reconnectPeriod: 0 })).rejects.toThrow(/Not authorized/i);
      await expect(
        mqtt.connectAsync(gateway.deviceUrl, { protocolVersion: 4, reconnectPeriod: 0, username: 'pi-sensor-1', password: devicePasswords.get('pi-sensor-2') ?? '' }),
      ).rejects.toThrow(/Bad username or password/i);
      const status = readFileSync(`/proc/${gateway.child.pid}/status`, 'utf8');
      // setpriv execs node in place, so the pid is the gateway's own.
      expect(status).toMatch(new RegExp(`^Uid:\\s+${user.uid}\\s+${user.uid}\\s+${user.uid}\\s+${user.uid}$`, 'm'));
      expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
      await publishReadings(gateway.deviceUrl, 'pi-sensor-1', 1);
      await waitFor(async () => (await ackedReadings(gateway.httpUrl)) >= 1, { timeoutMs: 60_000, what: 'the reading acked by the ingestor' });
      expect(ingestor.stats().written).toBeGreaterThanOrEqual(1);
    } finally {
      expect(await gateway.child.stop()).toBe(0);
    }
    const outbox = join(destdir, 'var/lib/ferry/outbox.db');
    expect(statSync(outbox).uid).toBe(user.uid);
  }, 120_000);

  it('keeps config and the outbox backlog across an upgrade, migrates an older outbox schema, and delivers the backlog after it', async () => {
    const config = join(destdir, 'etc/ferry/gateway.yaml');
    writeFileSync(config, readFileSync(config, 'utf8') + '# edited by the operator\n');
    const writtenBefore = ingestor.stats().written;

    // Uplink down (nothing listens there): readings stay in the outbox.
    const closedPort = await stablePort();
    const offline = await runInstalledGateway(`mqtt://127.0.0.1:${closedPort}`);
    try {
      await publishReadings(offline.deviceUrl, 'pi-sensor-2', 5);
    } finally {
      expect(await offline.child.stop()).toBe(0);
    }
    const db = new Database(join(destdir, 'var/lib/ferry/outbox.db'));
    const backlog = (db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n;
    expect(backlog).toBe(5);
    // The backlog as a release with outbox schema 1 left it: without what migrations 2 to 5 add,
    // so the upgrade has to migrate it. A migration 6 must be undone here too.
    expect(OUTBOX_SCHEMA_VERSION).toBe(5);
    db.exec('DROP TABLE outbox_sent; DROP TABLE outbox_compacted; DROP TABLE pipeline_state; DROP TABLE outbox_gaps; DROP INDEX outbox_received_at;');
    db.pragma('user_version = 1');
    db.close();
    // Written as root here: whatever SQLite left beside the file stays the service user's.
    for (const suffix of ['', '-wal', '-shm']) {
      const file = join(destdir, `var/lib/ferry/outbox.db${suffix}`);
      if (existsSync(file)) chownSync(file, user.uid, user.gid);
    }

    const accounts = readFileSync(join(destdir, 'etc/ferry/devices.passwd'), 'utf8');
    const stdout = install('--device', 'pi-sensor-1');
    expect(stdout).toContain('keeping /etc/ferry/gateway.yaml');
    expect(stdout).toContain('keeping the account of device pi-sensor-1');
    expect(stdout).not.toMatch(/password \S+$/m);
    expect(readFileSync(join(destdir, 'etc/ferry/devices.passwd'), 'utf8')).toBe(accounts);
    expect(readFileSync(config, 'utf8')).toContain('# edited by the operator');
    expect(statSync(join(destdir, 'var/lib/ferry/outbox.db')).uid).toBe(user.uid);

    const upgraded = await runInstalledGateway(broker.url ?? '');
    try {
      await waitFor(() => ingestor.stats().written >= writtenBefore + 5, { timeoutMs: 60_000, what: 'the backlog written after the upgrade' });
      await waitFor(async () => (await ackedReadings(upgraded.httpUrl)) >= 5, { timeoutMs: 60_000, what: 'the backlog acked' });
    } finally {
      expect(await upgraded.child.stop()).toBe(0);
    }
    const migrated = new Database(join(destdir, 'var/lib/ferry/outbox.db'), { readonly: true });
    expect(migrated.pragma('user_version', { simple: true })).toBe(OUTBOX_SCHEMA_VERSION);
    const added = ['outbox_gaps', 'outbox_received_at', 'pipeline_state', 'outbox_sent', 'outbox_compacted'];
    const names = (migrated.prepare('SELECT name FROM sqlite_master').all() as { name: string }[]).map((r) => r.name);
    expect(names).toEqual(expect.arrayContaining(added));
    migrated.close();
  }, 180_000);

  it('refuses an outbox written by a newer Ferry instead of touching it', async () => {
    const file = join(destdir, 'var/lib/ferry/outbox.db');
    const db = new Database(file);
    const current = db.pragma('user_version', { simple: true }) as number;
    db.pragma(`user_version = ${current + 100}`);
    db.close();
    const devicePort = await stablePort();
    const child = startChild({
      setpriv: ['--reuid', String(user.uid), '--regid', String(user.gid), '--clear-groups', '--no-new-privs'],
      command: process.execPath,
      args: [join(destdir, 'opt/ferry/gateway/bin/ferry.mjs'), 'gateway', '--config', join(destdir, 'etc/ferry/gateway.yaml'),
        '--data-dir', join(destdir, 'var/lib/ferry'), '--uplink', broker.url ?? '', '--listen-host', '127.0.0.1',
        '--listen-port', String(devicePort), '--http-port', '0'],
      env: { PATH: '/usr/bin:/bin', ...passwordFileEnv() },
      logFile: join(work, 'gateway-newer.log'),
    });
    const code = await child.exited;
    expect(code, child.log()).not.toBe(0);
    expect(child.log()).toContain(`schema version ${current + 100}, written by a newer Ferry`);
    const after = new Database(file, { readonly: true });
    expect(after.pragma('user_version', { simple: true })).toBe(current + 100);
    after.close();
    const restore = new Database(file);
    restore.pragma(`user_version = ${current}`);
    restore.close();
  }, 60_000);

  it('detects a better-sqlite3 built for another machine and names the build tools its rebuild needs', () => {
    // A tarball packed on another CPU: its native module does not load here.
    const foreign = join(work, 'foreign');
    mkdirSync(foreign);
    expect(runCommand('tar', ['-xzf', tarball, '-C', foreign]).code).toBe(0);
    const native = runCommand('find', [foreign, '-name', 'better_sqlite3.node']).stdout.trim().split('\n');
    expect(native.length).toBeGreaterThan(0);
    for (const file of native) writeFileSync(file, 'not an ELF file for this machine');
    const foreignTarball = join(work, 'foreign.tar.gz');
    expect(runCommand('tar', ['-czf', foreignTarball, '-C', foreign, 'ferry']).code).toBe(0);

    // A PATH with what install.sh uses, but no python3, make or g++ (as on a fresh Raspberry Pi OS Lite).
    const bin = join(work, 'bin-without-build-tools');
    mkdirSync(bin);
    for (const tool of ['node', 'tar', 'gzip', 'find', 'head', 'mkdir', 'rm', 'mv', 'chmod', 'install', 'sed', 'grep', 'cut', 'basename', 'dirname', 'hostname', 'tr', 'ln', 'readlink', 'nproc', 'id']) {
      symlinkSync(findBinary(tool), join(bin, tool));
    }
    const target = join(work, 'root-foreign');
    const result = runCommand('/bin/bash', [INSTALL, '--tarball', foreignTarball, '--destdir', target], { PATH: bin });
    expect(result.code).not.toBe(0);
    expect(result.stdout).toContain('better-sqlite3 does not load on this machine');
    expect(result.stderr).toContain('missing build tools: python3 make g++');
    expect(result.stderr).toContain('apt-get install python3 make g++');
    // Nothing half-installed is left behind.
    expect(existsSync(join(target, 'opt/ferry/gateway'))).toBe(false);
    expect(existsSync(join(target, 'opt/ferry/gateway.new'))).toBe(false);
  }, 120_000);

  it('uninstalls the program and unit but keeps /var/lib/ferry and /etc/ferry unless --purge', () => {
    const removed = runCommand('bash', [UNINSTALL, '--destdir', destdir]);
    expect(removed.code, removed.stderr).toBe(0);
    expect(existsSync(join(destdir, 'opt/ferry/gateway'))).toBe(false);
    expect(existsSync(join(destdir, 'etc/systemd/system/ferry-gateway.service'))).toBe(false);
    expect(existsSync(join(destdir, 'usr/local/bin/ferry'))).toBe(false);
    expect(existsSync(join(destdir, 'var/lib/ferry/outbox.db'))).toBe(true);
    expect(existsSync(join(destdir, 'etc/ferry/gateway.yaml'))).toBe(true);

    const purged = runCommand('bash', [UNINSTALL, '--destdir', destdir, '--purge']);
    expect(purged.code, purged.stderr).toBe(0);
    expect(existsSync(join(destdir, 'var/lib/ferry'))).toBe(false);
    expect(existsSync(join(destdir, 'etc/ferry'))).toBe(false);
  });

  it('the scripts pass shellcheck', () => {
    const result = runCommand(findBinary('shellcheck'), [PACK, INSTALL, UNINSTALL]);
    expect(result.code, result.stdout).toBe(0);
  });
});
