// Health state on disk (SQLite), so devices, gateways, alerts and silences survive an ingestor
// restart. The monitor hands over only what changed; a flush is one transaction.
// synchronous=NORMAL in WAL mode: a power cut can lose the last flushes, never corrupt the file;
// health is rebuilt from the next readings, so that trade is deliberate.
import { FerryError } from '@ferry/protocol';
import { openSqlite } from '@ferry/runtime';
import type { Alert, AlertSnapshot, Silence } from './alerts.js';
import type { DeviceHealth, FleetSnapshot, GatewayHealth } from './fleet.js';
import type { HealthChanges, HealthMonitor } from './monitor.js';

export interface HealthState {
  readonly fleet: FleetSnapshot;
  readonly alerts: AlertSnapshot;
}

export interface HealthStore {
  /** The state of the previous run, or undefined for a fresh store. */
  load(): HealthState | undefined;
  save(changes: HealthChanges, silences: readonly Silence[], nextAlertId: number): void;
  close(): void;
}

export interface SqliteHealthStoreOptions {
  readonly path: string;
  /** Resolved alerts kept; older ones are deleted (and counted in `pruned`). */
  readonly resolvedLimit?: number;
}

export interface SqliteHealthStore extends HealthStore {
  /** Resolved alerts deleted by the bound, this run. */
  readonly pruned: number;
}

export function createSqliteHealthStore(options: SqliteHealthStoreOptions): SqliteHealthStore {
  const db = openSqlite({
    path: options.path,
    what: 'health store',
    synchronous: 'normal',
    setup: (d) =>
      d.exec(`
        CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, body TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS gateways (id TEXT PRIMARY KEY, body TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY, state TEXT NOT NULL, body TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state, id);
        CREATE TABLE IF NOT EXISTS silences (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      `),
  });
  const resolvedLimit = options.resolvedLimit ?? 1000;
  const putDevice = db.prepare('INSERT INTO devices (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body');
  const deleteDevice = db.prepare('DELETE FROM devices WHERE id = ?');
  const deleteGateway = db.prepare('DELETE FROM gateways WHERE id = ?');
  const putGateway = db.prepare('INSERT INTO gateways (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body');
  const putAlert = db.prepare('INSERT INTO alerts (id, state, body) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body');
  const deleteAlert = db.prepare('DELETE FROM alerts WHERE id = ?');
  const pruneResolved = db.prepare(
    "DELETE FROM alerts WHERE state = 'resolved' AND id NOT IN (SELECT id FROM alerts WHERE state = 'resolved' ORDER BY id DESC LIMIT ?)",
  );
  const clearSilences = db.prepare('DELETE FROM silences');
  const putSilence = db.prepare('INSERT INTO silences (id, body) VALUES (?, ?)');
  const putMeta = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value');
  let pruned = 0;

  const save = db.transaction((changes: HealthChanges, silences: readonly Silence[], nextAlertId: number) => {
    // Forgotten first: a device forgotten and heard from again within one flush is written back below.
    for (const id of changes.fleet.forgottenDevices) deleteDevice.run(id);
    for (const id of changes.fleet.forgottenGateways) deleteGateway.run(id);
    for (const d of changes.fleet.devices) putDevice.run(d.deviceId, JSON.stringify(d));
    for (const g of changes.fleet.gateways) putGateway.run(g.gatewayId, JSON.stringify(g));
    let resolved = false;
    for (const a of changes.alerts) {
      // A pending alert that cleared before firing leaves no trace.
      if (a.state === 'resolved' && a.firingAt === undefined) deleteAlert.run(a.id);
      else putAlert.run(a.id, a.state, JSON.stringify(a));
      if (a.state === 'resolved') resolved = true;
    }
    if (resolved) pruned += pruneResolved.run(resolvedLimit).changes;
    clearSilences.run();
    for (const s of silences) putSilence.run(s.id, JSON.stringify(s));
    putMeta.run('nextAlertId', String(nextAlertId));
  });

  return {
    get pruned() {
      return pruned;
    },
    load() {
      const meta = db.prepare('SELECT value FROM meta WHERE key = ?').get('nextAlertId') as { value: string } | undefined;
      if (!meta) return undefined;
      const bodies = <T>(sql: string): T[] => (db.prepare(sql).all() as { body: string }[]).map((row) => JSON.parse(row.body) as T);
      return {
        fleet: { devices: bodies<DeviceHealth>('SELECT body FROM devices'), gateways: bodies<GatewayHealth>('SELECT body FROM gateways') },
        alerts: { alerts: bodies<Alert>('SELECT body FROM alerts ORDER BY id'), silences: bodies<Silence>('SELECT body FROM silences ORDER BY id'), nextId: Number(meta.value) },
      };
    },
    save(changes, silences, nextAlertId) {
      try {
        save(changes, silences, nextAlertId);
      } catch (err) {
        throw new FerryError('FERRY_ERR_STORAGE', `health store ${options.path} write failed: ${(err as Error).message}`, { path: options.path });
      }
    },
    close() {
      if (db.open) db.close();
    },
  };
}

/** Writes what changed in the monitor since the last flush. */
export function flushHealth(monitor: HealthMonitor, store: HealthStore): void {
  const changes = monitor.takeDirty();
  const snapshot = monitor.alerts.snapshot();
  store.save(changes, snapshot.silences, snapshot.nextId);
}
