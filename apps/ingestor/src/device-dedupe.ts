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
// Limits: the window is `deviceWindowMs` of ingest time and `deviceWindowMaxEntries` identities
// (rows, and the entries of spans and runs; past the bound whole spans go, each of at most a tenth
// of the bound and 5,000); a
// republish arriving later is written again (for the strict key that is an overwrite of the same
// point; otherwise a second point). Identical readings a device really meant to send twice with the
// same deviceSeq or device millisecond are taken for one.
//
// Persisted (SQLite, WAL, synchronous=FULL) so the window survives restarts and power cuts: what it
// records is acknowledged right after.
import type Database from 'better-sqlite3';
import type { Statement } from 'better-sqlite3';
import type { DeviceReading } from '@ferry/protocol';
import { deviceFieldsHash, legacyContentHash, sameContent } from './content-hash.js';
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

/** A device identity; `content` is built from the reading only when asked (a record of an earlier release's hash form to match). */
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
    reading: DeviceReading,
  ) {
    this.#reading = reading;
  }

  // Private: two identities of the same content are equal whatever else their readings carry.
  readonly #reading: DeviceReading;

  get content(): DeviceContent {
    const { kind, metrics, tags, deviceSeq } = this.#reading;
    return { kind, metrics, tags, deviceSeq, ts: this.ts };
  }
}

/** Device strings per scope and device id, kept: one string per device rather than one per reading, so the maps keyed by it hash it once. */
const devices = new Map<string, Map<string, string>>();
/** Device strings kept at most; past this they start over (they are only a shortcut). */
const DEVICE_STRINGS_KEPT = 100_000;
let devicesHeld = 0;

/** `${scope}/${deviceId}`, the same string each time. */
function deviceOf(scope: string, deviceId: string): string {
  let ofScope = devices.get(scope);
  if (!ofScope) devices.set(scope, (ofScope = new Map<string, string>()));
  let device = ofScope.get(deviceId);
  if (device === undefined) {
    if (devicesHeld >= DEVICE_STRINGS_KEPT) {
      devices.clear();
      devicesHeld = 0;
      devices.set(scope, (ofScope = new Map<string, string>()));
    }
    ofScope.set(deviceId, (device = `${scope}/${deviceId}`));
    devicesHeld++;
  }
  return device;
}

/**
 * `${n}`, faster for the integers of epoch milliseconds: V8 writes an integer above 2^31 out as a
 * double (about 250 ns), two small integers in under half that. Every other number as `${n}`
 * (device.test.ts holds them equal).
 */
export function decimal(n: number): string {
  if (n >= 1e8 && n <= Number.MAX_SAFE_INTEGER && Number.isInteger(n)) {
    const low = n % 1e8;
    return `${(n - low) / 1e8}${String(low + 1e8).slice(1)}`;
  }
  return `${n}`;
}

/** Pure: the identity of a reading, or undefined when the device gave nothing to recognise it by. */
export function deviceIdentity(reading: DeviceReading, origin: 'gateway' | 'direct', scope: string): DeviceIdentity | undefined {
  const deviceTime = reading.tsSource === 'device' ? reading.ts : undefined;
  const { deviceId, deviceSeq } = reading;
  // Nothing to recognise the reading by: no hash to compute either.
  if (deviceSeq === undefined && deviceTime === undefined && origin === 'gateway') return undefined;
  const hash = deviceFieldsHash(reading.kind, reading.metrics, reading.tags, deviceSeq, deviceTime);
  const strict = deviceSeq !== undefined && deviceTime !== undefined;
  const key =
    deviceSeq !== undefined
      ? strict
        ? `s${deviceSeq}@${decimal(deviceTime)}`
        : `s${deviceSeq}#${hash}`
      : deviceTime !== undefined
        ? `t${decimal(deviceTime)}#${hash}`
        : `r${decimal(reading.receivedAt)}#${hash}`;
  const device = deviceOf(scope, deviceId);
  return new Identity(scope, deviceId, key, hash, strict, deviceTime, device, `${device}\u0000${key}`, reading);
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
  /** Lookups that had to read the stored identities (the others were new by the device's newest time alone). */
  readonly queried?: number;
  close(): void;
}

export interface DeviceDedupeOptions {
  readonly path: string;
  readonly windowMs: number;
  readonly maxEntries: number;
  /** Devices whose newest device time is kept in memory (default 200,000); see MAX_KNOWN_DEVICES. */
  readonly maxKnownDevices?: number;
}

/** Pruning by age runs at most this often: it is a range delete, cheap but not free. */
const PRUNE_EVERY_MS = 10_000;

/** Devices whose newest stored device time is cached; past this the cache starts over (it is only a shortcut). */
const MAX_CACHED_DEVICES = 100_000;

/**
 * Devices whose newest time in the spans is known (read once from the spans, then kept up by
 * record()). A device beyond it is bounded by the newest time of any device: correct, but each of
 * its readings at or below that time is looked up. Once the bound is reached, the map is read
 * again from the spans after the window has let devices go (at most once per window), so devices
 * that came and went over the process's life do not hold it full for good.
 */
const MAX_KNOWN_DEVICES = 200_000;

/**
 * An earlier release's run (one row of device_runs, one device) covers at most this much device
 * time, so a lookup reads only the runs that start in [ts - RUN_SPAN_MS, ts].
 */
const RUN_SPAN_MS = 60_000;

/**
 * A span (one row of device_spans) holds the identities of one record() whose device times fall
 * in one second (Math.floor(ts / SPAN_MS)), every device together: a lookup reads only the spans
 * of its own second. Never change it: spans stored with another width would no longer be found.
 */
const SPAN_MS = 1_000;

/**
 * Identities a span holds at most (a larger group is cut into several spans of the same second),
 * and at most a tenth of the window's bound: the bound drops whole spans, so a span as large as
 * the bound would take the whole window with it.
 */
const SPAN_MAX_ENTRIES = 5_000;

/** Identities kept parsed for lookups, in the spans and runs they came in (a drain of older readings looks into the same ones again and again). */
const PARSED_ENTRIES = 50_000;

interface StoredRow {
  id: number;
  n: number;
}

/** Pure: a record's identities with a device time, grouped by second and cut at `maxPerSpan`. */
function spansOf(identities: readonly DeviceIdentity[], maxPerSpan: number): { second: number; entries: DeviceIdentity[] }[] {
  const bySecond = new Map<number, DeviceIdentity[]>();
  for (const i of identities) {
    if (i.ts === undefined) continue;
    const second = Math.floor(i.ts / SPAN_MS);
    let list = bySecond.get(second);
    if (!list) bySecond.set(second, (list = []));
    list.push(i);
  }
  const spans: { second: number; entries: DeviceIdentity[] }[] = [];
  for (const [second, list] of bySecond) {
    for (let at = 0; at < list.length; at += maxPerSpan) spans.push({ second, entries: list.length <= maxPerSpan ? list : list.slice(at, at + maxPerSpan) });
  }
  return spans;
}

/** The JSON of a slot's device part, opening quote and the NUL after it included: what a span's key starts with. */
function slotPrefixJson(device: string): string {
  // A device id may hold '"' and '\\' (and a scope or id anything JSON must escape): quoted by JSON.stringify.
  const quoted = JSON.stringify(`${device}\u0000`);
  return quoted.slice(0, quoted.length - 1);
}

export function openDeviceDedupeStore(options: DeviceDedupeOptions): DeviceDedupeStore {
  // Three tables. device_spans: the identities with a device time, one row per recorded chunk and
  // second of device time, all devices together (a JSON object slot -> hash), so recording a chunk
  // costs a row per second of device time it covers, not per reading or per device. device_seen:
  // one row per identity without a device time (their keys carry no time to find a span by), and
  // the rows of releases before the runs. device_runs: the per-device runs of the releases before
  // the spans, read until the window lets them go (nothing writes them any more).
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
      CREATE TABLE IF NOT EXISTS device_spans (
        id INTEGER PRIMARY KEY,
        second INTEGER NOT NULL,
        seen_at INTEGER NOT NULL,
        n INTEGER NOT NULL,
        entries TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS device_spans_by_second ON device_spans (second);
      CREATE INDEX IF NOT EXISTS device_spans_at ON device_spans (seen_at);
    `);
      addDeviceTimeColumn(d);
    },
  });
  const select = db.prepare<[string, string], { hash: string }>('SELECT hash FROM device_seen WHERE device = ? AND key = ?');
  const selectNewest = db.prepare<[string], { ts: number | null }>('SELECT MAX(ts) AS ts FROM device_seen WHERE device = ?');
  const selectNewestRun = db.prepare<[string], { ts: number | null }>('SELECT MAX(last_ts) AS ts FROM device_runs WHERE device = ?');
  const selectNewestSpan = db.prepare<[], { second: number | null }>('SELECT MAX(second) AS second FROM device_spans');
  const insert = db.prepare<[string, string, string, number, number | null]>('INSERT OR IGNORE INTO device_seen (device, key, hash, seen_at, ts) VALUES (?, ?, ?, ?, ?)');
  const update = db.prepare<[string, number, string, string]>('UPDATE device_seen SET hash = ?, seen_at = ? WHERE device = ? AND key = ?');
  const insertSpan = db.prepare<[number, number, number, string]>('INSERT INTO device_spans (second, seen_at, n, entries) VALUES (?, ?, ?, ?)');
  const selectSpans = db.prepare<[number], StoredRow>('SELECT id, n FROM device_spans WHERE second = ?');
  const spanEntries = db.prepare<[number], { entries: string }>('SELECT entries FROM device_spans WHERE id = ?');
  const selectRuns = db.prepare<[string, number, number, number], StoredRow>(
    'SELECT id, n FROM device_runs WHERE device = ? AND first_ts BETWEEN ? AND ? AND last_ts >= ?',
  );
  const runEntries = db.prepare<[number], { entries: string }>('SELECT entries FROM device_runs WHERE id = ?');
  const deleteOlder = db.prepare<[number]>('DELETE FROM device_seen WHERE seen_at < ?');
  const runsOlder = db.prepare<[number], { n: number | null }>('SELECT SUM(n) AS n FROM device_runs WHERE seen_at < ?');
  const deleteRunsOlder = db.prepare<[number]>('DELETE FROM device_runs WHERE seen_at < ?');
  const spansOlder = db.prepare<[number], { n: number | null }>('SELECT SUM(n) AS n FROM device_spans WHERE seen_at < ?');
  const deleteSpansOlder = db.prepare<[number]>('DELETE FROM device_spans WHERE seen_at < ?');
  const oldestRuns = db.prepare<[], StoredRow>('SELECT id, n FROM device_runs ORDER BY seen_at, id');
  const deleteRunsUpTo = db.prepare<[number]>('DELETE FROM device_runs WHERE id IN (SELECT id FROM device_runs ORDER BY seen_at, id LIMIT ?)');
  const oldestSpans = db.prepare<[], StoredRow>('SELECT id, n FROM device_spans ORDER BY seen_at, id');
  const deleteSpansUpTo = db.prepare<[number]>('DELETE FROM device_spans WHERE id IN (SELECT id FROM device_spans ORDER BY seen_at, id LIMIT ?)');
  const deleteOldestByKey = db.prepare<[number]>(
    'DELETE FROM device_seen WHERE (device, key) IN (SELECT device, key FROM device_seen ORDER BY seen_at LIMIT ?)',
  );
  const count = db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM device_seen');
  const countRuns = db.prepare<[], { n: number | null }>('SELECT SUM(n) AS n FROM device_runs');
  const countSpans = db.prepare<[], { n: number | null }>('SELECT SUM(n) AS n FROM device_spans');
  const maxPerSpan = Math.max(1, Math.min(SPAN_MAX_ENTRIES, Math.floor(options.maxEntries / 10)));
  const maxKnownDevices = options.maxKnownDevices ?? MAX_KNOWN_DEVICES;
  let heldRows = count.get()?.n ?? 0;
  let heldInRuns = countRuns.get()?.n ?? 0;
  let heldInSpans = countSpans.get()?.n ?? 0;
  const everySpan = db.prepare<[], { second: number; entries: string }>('SELECT second, entries FROM device_spans');
  // The newest second any span holds: an upper bound of every device's newest time in the spans.
  const newestSecond = selectNewestSpan.get()?.second;
  let spansNewest = newestSecond === null || newestSecond === undefined ? -Infinity : newestSecond * SPAN_MS + SPAN_MS - 1;
  let lastPrune = 0;
  // Set when a record deleted spans or runs: an emptied table hands their ids out again, so
  // parsed entries kept under those ids must go.
  let rowsDeleted = false;
  // Rows an earlier release stored (its hash form): while any are left in the window, a loose
  // identity not found under its key is looked up under the key that release would have used.
  const anyLegacy = db.prepare<[], { one: number }>('SELECT 1 AS one FROM device_seen WHERE length(hash) = 16 LIMIT 1');
  let legacyRows = anyLegacy.get() !== undefined;
  // Timed rows (device_seen rows with a ts, and device_runs) are only an earlier release's: while
  // none are left, a device's newest time is the spans' alone and its lookups never read them.
  const anyTimedRows = db.prepare<[], { one: number }>('SELECT 1 AS one FROM device_seen WHERE ts IS NOT NULL UNION ALL SELECT 1 FROM device_runs LIMIT 1');
  let timedRows = anyTimedRows.get() !== undefined;

  // Each device's slotPrefixJson, kept: a chunk holds many identities of a device, and the device strings are shared (deviceIdentity).
  const prefixes = new Map<string, string>();
  /** A span's entries as stored: a JSON object slot (device, NUL, key) -> hash. Keys and hashes need no escaping (letters, digits, '-', '.', '+', '@', '#', hex). */
  function spanJson(entries: readonly DeviceIdentity[]): string {
    if (prefixes.size >= MAX_CACHED_DEVICES) prefixes.clear();
    let out = '{';
    for (let k = 0; k < entries.length; k++) {
      const i = entries[k]!;
      let prefix = prefixes.get(i.device);
      if (prefix === undefined) prefixes.set(i.device, (prefix = slotPrefixJson(i.device)));
      out += `${k > 0 ? ',' : ''}${prefix}${i.key}":"${i.hash}"`;
    }
    return `${out}}`;
  }

  /** Deletes the oldest whole rows (runs or spans) holding at least `excess` identities; returns how many they held. */
  function dropOldest(oldest: Statement<[], StoredRow>, deleteUpTo: Statement<[number]>, excess: number): number {
    let rows = 0;
    let removed = 0;
    for (const r of oldest.iterate()) {
      if (removed >= excess) break;
      rows++;
      removed += r.n;
    }
    deleteUpTo.run(rows);
    rowsDeleted = true;
    return removed;
  }

  const recordAll = db.transaction((identities: readonly DeviceIdentity[], now: number): number => {
    for (const i of identities) {
      if (i.ts !== undefined) continue;
      if (insert.run(i.device, i.key, i.hash, now, null).changes > 0) heldRows++;
      else update.run(i.hash, now, i.device, i.key);
    }
    for (const span of spansOf(identities, maxPerSpan)) {
      insertSpan.run(span.second, now, span.entries.length, spanJson(span.entries));
      heldInSpans += span.entries.length;
    }
    let discarded = 0;
    if (now - lastPrune >= PRUNE_EVERY_MS) {
      lastPrune = now;
      const cutoff = now - options.windowMs;
      heldRows -= deleteOlder.run(cutoff).changes;
      if (heldInRuns > 0) {
        const aged = runsOlder.get(cutoff)?.n ?? 0;
        if (aged > 0) {
          deleteRunsOlder.run(cutoff);
          heldInRuns -= aged;
          rowsDeleted = true;
        }
      }
      const aged = spansOlder.get(cutoff)?.n ?? 0;
      if (aged > 0) {
        deleteSpansOlder.run(cutoff);
        heldInSpans -= aged;
        rowsDeleted = true;
      }
      if (legacyRows) legacyRows = anyLegacy.get() !== undefined;
      if (timedRows) timedRows = anyTimedRows.get() !== undefined;
    }
    // Over the bound: the oldest runs go first (an earlier release's, whole), then the oldest
    // spans (whole), then the oldest rows.
    let excess = heldRows + heldInRuns + heldInSpans - options.maxEntries;
    if (excess > 0 && heldInRuns > 0) {
      const removed = dropOldest(oldestRuns, deleteRunsUpTo, excess);
      heldInRuns -= removed;
      discarded += removed;
      excess -= removed;
    }
    if (excess > 0 && heldInSpans > 0) {
      const removed = dropOldest(oldestSpans, deleteSpansUpTo, excess);
      heldInSpans -= removed;
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

  // The newest device time stored per device (-Infinity: none), or a bound above it. A key with a
  // device time can only match an identity stored with that same time, so a reading newer than
  // the device's newest stored time is new without a query: the common case of a device
  // reporting forward in time.
  //
  // In the spans, per device: read from every span once, when first needed (a span's second gives
  // the bound: its last millisecond), then kept up by record(). Spans are not kept per device (a
  // row per device per chunk was most of recording's cost), so this is the one full read.
  let known: Map<string, number> | undefined;
  // False once `known` reached its bound: a device not in it may have spans all the same.
  let everyDevice = true;
  // When `known` was last let go to be read again (ingest time of that record()).
  let knownDroppedAt = -Infinity;
  // Lookups that read the database (for a device time at or below the device's newest, or without one).
  let queried = 0;
  function note(map: Map<string, number>, device: string, ts: number): void {
    const was = map.get(device);
    if (was === undefined) {
      if (map.size >= maxKnownDevices) everyDevice = false;
      else map.set(device, ts);
    } else if (ts > was) map.set(device, ts);
  }
  function knownDevices(): Map<string, number> {
    if (known) return known;
    known = new Map();
    for (const row of everySpan.iterate()) {
      const last = row.second * SPAN_MS + SPAN_MS - 1;
      for (const slot of Object.keys(JSON.parse(row.entries) as Record<string, string>)) note(known, slot.slice(0, slot.lastIndexOf('\u0000')), last);
    }
    return known;
  }
  // In the rows an earlier release wrote (device_seen with a ts, device_runs), per device, while any are left.
  const olderNewest = new Map<string, number>();
  function olderNewestOf(device: string): number {
    let ts = olderNewest.get(device);
    if (ts === undefined) {
      if (olderNewest.size >= MAX_CACHED_DEVICES) olderNewest.clear();
      ts = Math.max(selectNewest.get(device)?.ts ?? -Infinity, selectNewestRun.get(device)?.ts ?? -Infinity);
      olderNewest.set(device, ts);
    }
    return ts;
  }
  const newestOf = (device: string): number => {
    const inSpans = knownDevices().get(device) ?? (everyDevice ? -Infinity : spansNewest);
    return timedRows ? Math.max(inSpans, olderNewestOf(device)) : inSpans;
  };

  // Parsed entries of spans and runs by id (one map per table), oldest first; bounded by the identities they hold.
  const parsedSpans = new Map<number, Record<string, string>>();
  const parsedRuns = new Map<number, Record<string, string>>();
  const parsedOrder: { readonly from: Map<number, Record<string, string>>; readonly id: number; readonly n: number }[] = [];
  let parsedEntries = 0;
  function entriesOf(from: Map<number, Record<string, string>>, read: Statement<[number], { entries: string }>, row: StoredRow): Record<string, string> {
    let entries = from.get(row.id);
    if (!entries) {
      entries = JSON.parse(read.get(row.id)?.entries ?? '{}') as Record<string, string>;
      while (parsedOrder.length > 0 && parsedEntries + row.n > PARSED_ENTRIES) {
        const gone = parsedOrder.shift()!;
        gone.from.delete(gone.id);
        parsedEntries -= gone.n;
      }
      from.set(row.id, entries);
      parsedOrder.push({ from, id: row.id, n: row.n });
      parsedEntries += row.n;
    }
    return entries;
  }
  function forgetParsed(): void {
    parsedSpans.clear();
    parsedRuns.clear();
    parsedOrder.length = 0;
    parsedEntries = 0;
  }

  function inSpans(identity: DeviceIdentity, ts: number): string | undefined {
    for (const row of selectSpans.all(Math.floor(ts / SPAN_MS))) {
      const entries = entriesOf(parsedSpans, spanEntries, row);
      // Spans are this release's: their slots and hashes are in its form, never an earlier one's.
      if (Object.hasOwn(entries, identity.slot)) return entries[identity.slot];
    }
    return undefined;
  }

  function inRuns(identity: DeviceIdentity, ts: number): string | undefined {
    for (const row of selectRuns.all(identity.device, ts - RUN_SPAN_MS, ts, ts)) {
      const entries = entriesOf(parsedRuns, runEntries, row);
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
        queried++;
        const found = inSpans(identity, identity.ts) ?? (heldInRuns > 0 ? inRuns(identity, identity.ts) : undefined);
        if (found !== undefined) return found;
        // Only an earlier release put an identity with a device time into device_seen.
        if (!timedRows) return undefined;
      } else queried++;
      const found = select.get(device, identity.key)?.hash;
      if (found !== undefined || !legacyRows) return found;
      const legacyKey = legacyKeyOf(identity);
      return legacyKey === undefined ? undefined : select.get(device, legacyKey)?.hash;
    },
    record(identities, now) {
      if (identities.length === 0) return 0;
      rowsDeleted = false;
      const discarded = recordAll(identities, now);
      if (rowsDeleted) forgetParsed();
      // `known` full, and the window has let spans go: read it again from what is left, once a window.
      if (!everyDevice && rowsDeleted && now - knownDroppedAt >= options.windowMs) {
        known = undefined;
        everyDevice = true;
        knownDroppedAt = now;
      }
      // After the commit only. Before `known` is first read, the spans it is read from hold these.
      for (const i of identities) {
        if (i.ts === undefined) continue;
        if (i.ts > spansNewest) spansNewest = i.ts;
        if (known) note(known, i.device, i.ts);
      }
      return discarded;
    },
    get held() {
      return heldRows + heldInRuns + heldInSpans;
    },
    get queried() {
      return queried;
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
