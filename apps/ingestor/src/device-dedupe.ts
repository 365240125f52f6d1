// Stage 3b, device dedupe: a reading's own identity, from the device's side, remembered for a
// while so that a device's republish is written once even though it is a new message.
//
// Why: a device whose PUBACK was lost (at a gateway, or at the cloud broker for a device that
// publishes directly) publishes the same reading again. Through a gateway it gets a second gateway
// seq, so the gateway-seq window cannot see it; directly, it is a second MQTT message.
//
// Identity, per device and per gateway (the gateway is part of the point's series, and one device
// heard by two gateways is two series), from what the device itself sent:
// - deviceSeq and a device time: key (deviceSeq, ts). Strict: the same key with other content is a
//   conflict (dead-lettered, never merged). Such readings also map to a point whose timestamp
//   carries the deviceSeq instead of the gateway seq (map.ts), so even a republish this window
//   misses (crash between write and record, or older than the window) overwrites the same point.
// - deviceSeq, no device time: key (deviceSeq, content hash). A seq reused with other content is a
//   device that restarted its counter, so a new reading, not a conflict.
// - a device time, no deviceSeq: key (ts, content hash). Two different readings in one device
//   millisecond are both legitimate, so again no conflict: only identical content is a duplicate.
// - neither (gateway-stamped time): no device identity. Through a gateway only the gateway seq
//   dedupes; a direct device gets key (ingestor receive time, content hash), which catches the
//   journal being replayed after a crash but not a republish (it has a new receive time).
//
// Limits: the window is `deviceWindowMs` of ingest time and `deviceWindowMaxEntries` rows; a
// republish arriving later is written again (for the strict key that is an overwrite of the same
// point; otherwise a second point). Identical readings a device really meant to send twice with the
// same deviceSeq or device millisecond are taken for one.
//
// Persisted (SQLite, WAL, synchronous=FULL) so the window survives restarts and power cuts: what it
// records is acknowledged right after.
import type Database from 'better-sqlite3';
import type { DeviceReading } from '@ferry/protocol';
import { deviceContentHash, legacyContentHash, sameContent } from './content-hash.js';
import type { DeviceContent } from './content-hash.js';
import { openSqlite } from '@ferry/runtime';

export interface DeviceIdentity {
  /** The gateway the reading came through, or the direct gateway tag. */
  readonly scope: string;
  readonly deviceId: string;
  readonly key: string;
  /** Content hash: what the device said, without anything a gateway or the ingestor added. */
  readonly hash: string;
  /** The same key with a different hash is a conflict. */
  readonly strict: boolean;
  /** The device time in the key, when it has one: lets a lookup above a device's newest stored time skip the query. */
  readonly ts?: number | undefined;
  /** What `hash` is the hash of: lets a record stored by an earlier release (its hash form) still be matched. */
  readonly content: unknown;
  /** The stored device column: scope and id; a gateway id never contains '/', so this is unambiguous. */
  readonly device: string;
  /** Device column and key together: the identity's key in memory. */
  readonly slot: string;
}

/** A device identity; `content` is built only when asked (a record of an earlier release's hash form to match). */
class Identity implements DeviceIdentity {
  constructor(
    readonly scope: string,
    readonly deviceId: string,
    readonly key: string,
    readonly hash: string,
    readonly strict: boolean,
    readonly ts: number | undefined,
    readonly device: string,
    readonly slot: string,
    private readonly said: DeviceContent,
  ) {}

  get content(): unknown {
    const { kind, metrics, tags, deviceSeq, ts } = this.said;
    return { kind, metrics, tags, deviceSeq, ts };
  }
}

/** Pure: the identity of a reading, or undefined when the device gave nothing to recognise it by. */
export function deviceIdentity(reading: DeviceReading, origin: 'gateway' | 'direct', scope: string): DeviceIdentity | undefined {
  const deviceTime = reading.tsSource === 'device' ? reading.ts : undefined;
  const { deviceId, deviceSeq } = reading;
  // Nothing to recognise the reading by: no hash to compute either.
  if (deviceSeq === undefined && deviceTime === undefined && origin === 'gateway') return undefined;
  const said: DeviceContent = { kind: reading.kind, metrics: reading.metrics, tags: reading.tags, deviceSeq, ts: deviceTime };
  const hash = deviceContentHash(said);
  const strict = deviceSeq !== undefined && deviceTime !== undefined;
  const key =
    deviceSeq !== undefined
      ? strict
        ? `s${deviceSeq}@${deviceTime}`
        : `s${deviceSeq}#${hash}`
      : deviceTime !== undefined
        ? `t${deviceTime}#${hash}`
        : `r${reading.receivedAt}#${hash}`;
  const device = `${scope}/${deviceId}`;
  return new Identity(scope, deviceId, key, hash, strict, deviceTime, device, `${device}\u0000${key}`, said);
}

/** The key an earlier release stored for a loose identity (its hash form inside the key); a strict key has no hash in it. */
export function legacyKeyOf(identity: DeviceIdentity): string | undefined {
  if (identity.strict) return undefined;
  return identity.key.slice(0, identity.key.length - identity.hash.length) + legacyContentHash(identity.content);
}

/**
 * The sub-millisecond part of a direct reading's point when the device sent no deviceSeq: taken
 * from the content, so a republish maps to the very same point. It stays the first release's
 * (SHA-256) form, so points are the same points across an upgrade.
 */
export function contentPointSeq(identity: DeviceIdentity): number {
  return Number.parseInt(legacyContentHash(identity.content).slice(0, 8), 16);
}

export type DeviceVerdict = { readonly kind: 'new' } | { readonly kind: 'duplicate' } | { readonly kind: 'conflict'; readonly reason: string };

/** Pure: what a reading is, given the hash its identity was recorded with. */
const NEW: DeviceVerdict = { kind: 'new' };

export function judgeDevice(seenHash: string | undefined, identity: DeviceIdentity): DeviceVerdict {
  if (seenHash === undefined) return NEW;
  if (sameContent(seenHash, identity.hash, identity.content)) return { kind: 'duplicate' };
  return identity.strict
    ? { kind: 'conflict', reason: `device ${identity.deviceId} sent ${identity.key} before with different content (hash ${seenHash}, now ${identity.hash})` }
    : { kind: 'new' };
}

export interface DeviceDedupeStore {
  lookup(identity: DeviceIdentity): string | undefined;
  /** Records written identities at `now` and prunes the window; returns how many identities the bound discarded. */
  record(identities: readonly DeviceIdentity[], now: number): number;
  readonly held: number;
  close(): void;
}

export interface DeviceDedupeOptions {
  readonly path: string;
  readonly windowMs: number;
  readonly maxEntries: number;
}

/** Pruning by age runs at most this often: it is a range delete, cheap but not free. */
const PRUNE_EVERY_MS = 10_000;

/** Devices whose newest stored device time is cached; past this the cache starts over (it is only a shortcut). */
const MAX_CACHED_DEVICES = 100_000;

/**
 * A run (one row of device_runs) covers at most this much device time, so a lookup reads only the
 * runs that start in [ts - RUN_SPAN_MS, ts]. Never lower it: runs stored with a wider span would no
 * longer be found.
 */
const RUN_SPAN_MS = 60_000;

/** Identities a run holds at most. */
const RUN_MAX_ENTRIES = 2_000;

/** Runs whose entries are kept parsed for lookups (a drain of older readings looks into the same runs again and again). */
const PARSED_RUNS = 64;

interface RunRow {
  id: number;
  entries: string;
}

export function openDeviceDedupeStore(options: DeviceDedupeOptions): DeviceDedupeStore {
  // Two tables. device_runs: the identities with a device time, one row per device per recorded
  // chunk and minute of device time (a JSON object key -> hash), so recording a chunk costs a row
  // per device, not per reading. device_seen: one row per identity without a device time (their
  // keys carry no time to find a run by), and the rows of releases before the runs.
  const db = openSqlite({
    path: options.path,
    what: 'device dedupe store',
    // full, as the gateway-seq store: what it records is acknowledged right after.
    synchronous: 'full',
    setup: (d) => {
      d.exec(`
      CREATE TABLE IF NOT EXISTS device_seen (
        device TEXT NOT NULL,
        key TEXT NOT NULL,
        hash TEXT NOT NULL,
        seen_at INTEGER NOT NULL,
        ts INTEGER,
        PRIMARY KEY (device, key)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS device_seen_at ON device_seen (seen_at);
      CREATE TABLE IF NOT EXISTS device_runs (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        seen_at INTEGER NOT NULL,
        n INTEGER NOT NULL,
        entries TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS device_runs_by_time ON device_runs (device, first_ts);
      CREATE INDEX IF NOT EXISTS device_runs_at ON device_runs (seen_at);
    `);
      addDeviceTimeColumn(d);
    },
  });
  const select = db.prepare<[string, string], { hash: string }>('SELECT hash FROM device_seen WHERE device = ? AND key = ?');
  const selectNewest = db.prepare<[string], { ts: number | null }>('SELECT MAX(ts) AS ts FROM device_seen WHERE device = ?');
  const selectNewestRun = db.prepare<[string], { ts: number | null }>('SELECT MAX(last_ts) AS ts FROM device_runs WHERE device = ?');
  const insert = db.prepare<[string, string, string, number, number | null]>('INSERT OR IGNORE INTO device_seen (device, key, hash, seen_at, ts) VALUES (?, ?, ?, ?, ?)');
  const update = db.prepare<[string, number, string, string]>('UPDATE device_seen SET hash = ?, seen_at = ? WHERE device = ? AND key = ?');
  const insertRun = db.prepare<[string, number, number, number, number, string]>(
    'INSERT INTO device_runs (device, first_ts, last_ts, seen_at, n, entries) VALUES (?, ?, ?, ?, ?, ?)',
  );
  const selectRuns = db.prepare<[string, number, number, number], RunRow>(
    'SELECT id, entries FROM device_runs WHERE device = ? AND first_ts BETWEEN ? AND ? AND last_ts >= ?',
  );
  const deleteOlder = db.prepare<[number]>('DELETE FROM device_seen WHERE seen_at < ?');
  const runsOlder = db.prepare<[number], { n: number | null }>('SELECT SUM(n) AS n FROM device_runs WHERE seen_at < ?');
  const deleteRunsOlder = db.prepare<[number]>('DELETE FROM device_runs WHERE seen_at < ?');
  const oldestRuns = db.prepare<[], { id: number; n: number }>('SELECT id, n FROM device_runs ORDER BY seen_at, id');
  const deleteRunsUpTo = db.prepare<[number]>('DELETE FROM device_runs WHERE id IN (SELECT id FROM device_runs ORDER BY seen_at, id LIMIT ?)');
  const deleteOldestByKey = db.prepare<[number]>(
    'DELETE FROM device_seen WHERE (device, key) IN (SELECT device, key FROM device_seen ORDER BY seen_at LIMIT ?)',
  );
  const count = db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM device_seen');
  const countRuns = db.prepare<[], { n: number | null }>('SELECT SUM(n) AS n FROM device_runs');
  let heldRows = count.get()?.n ?? 0;
  let heldInRuns = countRuns.get()?.n ?? 0;
  let lastPrune = 0;
  // Set when a record deleted runs: an emptied table hands their ids out again, so parsed entries
  // kept under those ids must go.
  let runsDeleted = false;
  // Rows an earlier release stored (its hash form): while any are left in the window, a loose
  // identity not found under its key is looked up under the key that release would have used.
  const anyLegacy = db.prepare<[], { one: number }>('SELECT 1 AS one FROM device_seen WHERE length(hash) = 16 LIMIT 1');
  let legacyRows = anyLegacy.get() !== undefined;

  /** Pure: a chunk's identities with a device time, as runs per device (sorted by time, each within RUN_SPAN_MS). */
  function runsOf(identities: readonly DeviceIdentity[]): { device: string; first: number; last: number; entries: DeviceIdentity[] }[] {
    const byDevice = new Map<string, DeviceIdentity[]>();
    for (const i of identities) {
      if (i.ts === undefined) continue;
      let list = byDevice.get(i.device);
      if (!list) byDevice.set(i.device, (list = []));
      list.push(i);
    }
    const runs: { device: string; first: number; last: number; entries: DeviceIdentity[] }[] = [];
    for (const [device, list] of byDevice) {
      list.sort((a, b) => a.ts! - b.ts!);
      let run: { device: string; first: number; last: number; entries: DeviceIdentity[] } | undefined;
      for (const i of list) {
        const ts = i.ts!;
        if (!run || ts - run.first > RUN_SPAN_MS || run.entries.length >= RUN_MAX_ENTRIES) runs.push((run = { device, first: ts, last: ts, entries: [] }));
        run.last = ts;
        run.entries.push(i);
      }
    }
    return runs;
  }

  function entriesJson(entries: readonly DeviceIdentity[]): string {
    // Keys are a letter, numbers (digits, '-', '.', 'e', '+'), '@' or '#' and a hash; hashes are
    // hex: nothing in them needs escaping in JSON (device-dedupe.test.ts parses what this writes).
    let out = '{';
    for (let k = 0; k < entries.length; k++) out += `${k > 0 ? ',"' : '"'}${entries[k]!.key}":"${entries[k]!.hash}"`;
    return `${out}}`;
  }

  const recordAll = db.transaction((identities: readonly DeviceIdentity[], now: number): number => {
    for (const i of identities) {
      if (i.ts !== undefined) continue;
      if (insert.run(i.device, i.key, i.hash, now, null).changes > 0) heldRows++;
      else update.run(i.hash, now, i.device, i.key);
    }
    for (const run of runsOf(identities)) {
      insertRun.run(run.device, run.first, run.last, now, run.entries.length, entriesJson(run.entries));
      heldInRuns += run.entries.length;
    }
    let discarded = 0;
    if (now - lastPrune >= PRUNE_EVERY_MS) {
      lastPrune = now;
      const cutoff = now - options.windowMs;
      heldRows -= deleteOlder.run(cutoff).changes;
      const aged = runsOlder.get(cutoff)?.n ?? 0;
      if (aged > 0) {
        deleteRunsOlder.run(cutoff);
        heldInRuns -= aged;
        runsDeleted = true;
      }
      if (legacyRows) legacyRows = anyLegacy.get() !== undefined;
    }
    // Over the bound: the oldest runs go first (whole runs), then the oldest rows.
    let excess = heldRows + heldInRuns - options.maxEntries;
    if (excess > 0 && heldInRuns > 0) {
      let runs = 0;
      let removed = 0;
      for (const r of oldestRuns.iterate()) {
        if (removed >= excess) break;
        runs++;
        removed += r.n;
      }
      deleteRunsUpTo.run(runs);
      runsDeleted = true;
      heldInRuns -= removed;
      discarded += removed;
      excess -= removed;
    }
    if (excess > 0) {
      const gone = deleteOldestByKey.run(excess).changes;
      heldRows -= gone;
      discarded += gone;
    }
    return discarded;
  });

  // The newest device time stored per device (-Infinity: none). A key with a device time can only
  // match an identity stored with that same time, so a reading newer than the device's newest stored
  // time is new without a query: the common case of a device reporting forward in time.
  const newest = new Map<string, number>();
  const newestOf = (device: string): number => {
    let ts = newest.get(device);
    if (ts === undefined) {
      if (newest.size >= MAX_CACHED_DEVICES) newest.clear();
      ts = Math.max(selectNewest.get(device)?.ts ?? -Infinity, selectNewestRun.get(device)?.ts ?? -Infinity);
      newest.set(device, ts);
    }
    return ts;
  };

  const parsed = new Map<number, Record<string, string>>();
  function runEntries(row: RunRow): Record<string, string> {
    let entries = parsed.get(row.id);
    if (!entries) {
      entries = JSON.parse(row.entries) as Record<string, string>;
      if (parsed.size >= PARSED_RUNS) parsed.delete(parsed.keys().next().value!);
      parsed.set(row.id, entries);
    }
    return entries;
  }

  function inRuns(identity: DeviceIdentity, ts: number): string | undefined {
    for (const row of selectRuns.all(identity.device, ts - RUN_SPAN_MS, ts, ts)) {
      const entries = runEntries(row);
      // Runs are this release's: their keys and hashes are in its form, never an earlier one's.
      if (Object.hasOwn(entries, identity.key)) return entries[identity.key];
    }
    return undefined;
  }

  let open = true;
  return {
    lookup(identity) {
      const device = identity.device;
      if (identity.ts !== undefined) {
        if (identity.ts > newestOf(device)) return undefined;
        const found = inRuns(identity, identity.ts);
        if (found !== undefined) return found;
      }
      const found = select.get(device, identity.key)?.hash;
      if (found !== undefined || !legacyRows) return found;
      const legacyKey = legacyKeyOf(identity);
      return legacyKey === undefined ? undefined : select.get(device, legacyKey)?.hash;
    },
    record(identities, now) {
      if (identities.length === 0) return 0;
      runsDeleted = false;
      const discarded = recordAll(identities, now);
      if (runsDeleted) parsed.clear();
      // After the commit only; a device not cached is read from the tables when next needed.
      for (const i of identities) {
        if (i.ts === undefined) continue;
        const device = i.device;
        const ts = newest.get(device);
        if (ts !== undefined && i.ts > ts) newest.set(device, i.ts);
      }
      return discarded;
    },
    get held() {
      return heldRows + heldInRuns;
    },
    close() {
      if (!open) return;
      open = false;
      db.close();
    },
  };
}

/** Files from before the ts column: add it and fill it from the keys that carry a device time. */
function addDeviceTimeColumn(db: Database.Database): void {
  const columns = db.prepare<[], { name: string }>('PRAGMA table_info(device_seen)').all();
  if (columns.some((c) => c.name === 'ts')) return;
  db.transaction(() => {
    db.exec('ALTER TABLE device_seen ADD COLUMN ts INTEGER');
    db.exec(`UPDATE device_seen SET ts = CASE
      WHEN key LIKE 's%@%' THEN CAST(substr(key, instr(key, '@') + 1) AS INTEGER)
      WHEN key LIKE 't%#%' THEN CAST(substr(key, 2, instr(key, '#') - 2) AS INTEGER)
      END`);
  })();
}
