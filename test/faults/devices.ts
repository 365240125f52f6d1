// Deterministic devices for fault tests: each publishes QoS 1 readings numbered by its own seq and
// keeps retrying (new connection, same reading) until each one is PUBACKed, as real firmware
// with a persistent queue would. What was PUBACKed is the set the database must hold.
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import type { InfluxdHandle } from '@ferry/testkit';

export interface PublishOptions {
  /** The gateway's device listener, e.g. mqtt://127.0.0.1:1883. */
  readonly url: string;
  readonly deviceIds: readonly string[];
  /** First device seq and how many readings each device publishes. */
  readonly from: number;
  readonly count: number;
  /** QoS 1 publishes in flight per device. */
  readonly window?: number;
  /** Device time of reading n is baseTs + n ms: unique per device, the same on every resend. */
  readonly baseTs: number;
  /** Give up (reject) after this long. */
  readonly deadlineMs?: number;
  /** The payload of reading n (default devicePayload); it must carry metrics n and seq n. */
  readonly payload?: (deviceId: string, n: number, baseTs: number) => string;
}

export interface PublishResult {
  /** Device seqs PUBACKed per device. */
  readonly acked: Map<string, Set<number>>;
  /** Publishes of a reading already sent once (after a lost connection or PUBACK). */
  readonly republished: number;
  /** Connections opened, first ones included. */
  readonly connections: number;
}

export function telemetryTopic(deviceId: string): string {
  return `devices/${deviceId}/telemetry`;
}

/** The value device `deviceId` reports as reading n: exact, so a value mix-up would show. */
export function readingValue(deviceId: string, n: number): number {
  let h = 0;
  for (const c of deviceId) h = (h * 31 + c.charCodeAt(0)) % 1000;
  return h + n / 1000;
}

export function devicePayload(deviceId: string, n: number, baseTs: number): string {
  return JSON.stringify({ ts: baseTs + n, seq: n, metrics: { n, v: readingValue(deviceId, n) } });
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Publishes until every reading of every device is PUBACKed, whatever happens to the gateway meanwhile. */
export async function publishReadings(options: PublishOptions): Promise<PublishResult> {
  const window = options.window ?? 10;
  const payloadOf = options.payload ?? devicePayload;
  const deadline = Date.now() + (options.deadlineMs ?? 600_000);
  const acked = new Map<string, Set<number>>();
  let republished = 0;
  let connections = 0;

  async function runDevice(deviceId: string): Promise<void> {
    const done = new Set<number>();
    acked.set(deviceId, done);
    const sentOnce = new Set<number>();
    const all = Array.from({ length: options.count }, (_, i) => options.from + i);
    const topic = telemetryTopic(deviceId);
    while (done.size < all.length) {
      if (Date.now() > deadline) {
        throw new Error(`device ${deviceId}: ${all.length - done.size} readings still not PUBACKed at the deadline`);
      }
      let client: MqttClient;
      try {
        connections += 1;
        client = await mqtt.connectAsync(options.url, {
          protocolVersion: 4,
          clientId: `${deviceId}-${connections}`,
          clean: true,
          reconnectPeriod: 0,
          connectTimeout: 5_000,
        });
      } catch {
        // The gateway is down or restarting: firmware waits a little and tries again.
        await pause(100);
        continue;
      }
      client.on('error', () => undefined);
      const todo = all.filter((n) => !done.has(n));
      await new Promise<void>((resolve) => {
        let over = false;
        let inFlight = 0;
        let next = 0;
        const finish = (): void => {
          if (over) return;
          over = true;
          resolve();
        };
        const pump = (): void => {
          while (!over && inFlight < window && next < todo.length) {
            const n = todo[next++]!;
            if (sentOnce.has(n)) republished += 1;
            else sentOnce.add(n);
            inFlight += 1;
            client.publish(topic, payloadOf(deviceId, n, options.baseTs), { qos: 1 }, (err) => {
              inFlight -= 1;
              // A PUBACK is a PUBACK, even if the connection failed for another publish meanwhile.
              if (!err) done.add(n);
              if (err) {
                finish();
                return;
              }
              if (next >= todo.length && inFlight === 0) {
                finish();
                return;
              }
              pump();
            });
          }
        };
        client.once('close', finish);
        pump();
      });
      client.end(true);
    }
  }

  await Promise.all(options.deviceIds.map((id) => runDevice(id)));
  return { acked, republished, connections };
}

/** Copies in the database per device and device seq. */
export type Copies = Map<string, Map<number, number>>;

export interface Delivery {
  /** Expected readings absent from the database, as device:seq. */
  readonly missing: string[];
  /** Expected readings present more than once, as device:seq. */
  readonly duplicated: string[];
  /** Extra copies beyond the first, in total. */
  readonly extraCopies: number;
  /** Readings in the database that nobody expected (e.g. never PUBACKed but committed). */
  readonly unexpected: string[];
  readonly present: number;
}

export function compareDelivery(expected: ReadonlyMap<string, ReadonlySet<number>>, copies: Copies): Delivery {
  const missing: string[] = [];
  const duplicated: string[] = [];
  const unexpected: string[] = [];
  let extraCopies = 0;
  let present = 0;
  for (const [device, seqs] of expected) {
    const got = copies.get(device);
    for (const n of seqs) {
      const c = got?.get(n) ?? 0;
      if (c === 0) missing.push(`${device}:${n}`);
      else present += 1;
      if (c > 1) {
        duplicated.push(`${device}:${n}`);
        extraCopies += c - 1;
      }
    }
  }
  for (const [device, got] of copies) {
    const seqs = expected.get(device);
    for (const [n] of got) if (!seqs?.has(n)) unexpected.push(`${device}:${n}`);
  }
  return { missing, duplicated, extraCopies, unexpected, present };
}

function addCopy(copies: Copies, device: string, n: number): void {
  let perDevice = copies.get(device);
  if (!perDevice) copies.set(device, (perDevice = new Map<number, number>()));
  perDevice.set(n, (perDevice.get(n) ?? 0) + 1);
}

export interface SqliteArrival {
  readonly device: string;
  readonly n: number;
  /** Insert order in the sink: a later write has a larger rowid (an overwrite keeps its rowid). */
  readonly rowid: number;
}

/** Every reading's `n` field in the embedded SQLite sink, in the order the sink stored them. */
export function readSqliteArrivals(pointsDb: string): SqliteArrival[] {
  let db: Database.Database;
  try {
    db = new Database(pointsDb, { readonly: true, fileMustExist: true });
  } catch {
    return [];
  }
  try {
    return db
      .prepare<[], SqliteArrival>(
        "SELECT json_extract(tags, '$.device') AS device, CAST(value_float AS INTEGER) AS n, rowid FROM point_fields WHERE measurement = 'telemetry' AND field = 'n' ORDER BY rowid",
      )
      .all();
  } catch {
    // The ingestor has not created the table yet.
    return [];
  } finally {
    db.close();
  }
}

export function sqliteCopies(pointsDb: string): Copies {
  const copies: Copies = new Map();
  for (const row of readSqliteArrivals(pointsDb)) addCopy(copies, row.device, row.n);
  return copies;
}

export function countCopies(copies: Copies): number {
  let total = 0;
  for (const perDevice of copies.values()) for (const c of perDevice.values()) total += c;
  return total;
}

/** Every reading's `n` field in an InfluxDB 1.x database. */
export async function influxCopies(influxd: InfluxdHandle, database: string): Promise<Copies> {
  const copies: Copies = new Map();
  const series = await influxd.query(database, 'SELECT "n" FROM "telemetry" GROUP BY "device"', { epoch: 'ns' });
  for (const s of series) {
    const device = s.tags?.device;
    if (device === undefined) continue;
    for (const row of s.values) addCopy(copies, device, Number(row[1]));
  }
  return copies;
}

export function expectedSet(result: PublishResult): Map<string, Set<number>> {
  return new Map([...result.acked].map(([d, s]) => [d, new Set(s)]));
}

export function mergeExpected(...sets: ReadonlyMap<string, ReadonlySet<number>>[]): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>();
  for (const set of sets) {
    for (const [device, seqs] of set) {
      let target = out.get(device);
      if (!target) out.set(device, (target = new Set()));
      for (const n of seqs) target.add(n);
    }
  }
  return out;
}

export function totalOf(set: ReadonlyMap<string, ReadonlySet<number>>): number {
  let total = 0;
  for (const s of set.values()) total += s.size;
  return total;
}
