// An aedes persistence in SQLite: retained messages, persistent-session subscriptions, queued and
// in-flight outgoing QoS 1/2 messages, incoming QoS 2 messages and wills survive a kill -9.
// It follows aedes-persistence's async interface (the one aedes 1.x calls) and passes its abstract suite.
//
// A write that fails (a full disk: SQLITE_FULL) rejects, and aedes refuses what needed it: the
// QoS 1 publish is not PUBACKed, the CONNECT or SUBSCRIBE fails and the client comes back later.
// Every commit's outcome goes to `onWrite`, so the broker can tell a full disk and when it ends.
//
// Commits are what a message costs here (each one a WAL write and, with synchronous=full, an fsync),
// so writes share transactions (see `#stage`). Journal entries commit together at the end of the
// turn, before their PUBACKs. What the journal already covers (a journaled publish stored for its
// subscribers or as retained) and the bookkeeping of a QoS 1 delivery (its packet id, its deletion
// at the PUBACK, journal clears) do not commit on their own: they go with the next commit, at the
// latest DEFERRED_COMMIT_MS later. A kill -9 in that window only sends a QoS 1 message again (under
// a new packet id if its id was not committed) or replays the journal, as QoS 1 allows; nothing
// acknowledged is lost. Every other write commits before its call returns, as aedes expects.
// None of this may change when aedes' publish steps resolve: aedes drops a message that reaches a
// client after one published later (its brokerCounter dedupe), so no step may wait for a commit.
//
// Two failures need more than a rejection. A will's deletion never rejects: aedes chains it with
// .finally(), and the unhandled rejection would end the process; it is kept and done with the next
// commit. A publish that could not be stored after its PUBACK also goes to `onPublishNotStored`
// (with its journal seq when the store failed at a later commit, after aedes went on): its client
// will not send it again, so the broker publishes it again from the journal.
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { deserialize, serialize } from 'node:v8';
import type Database from 'better-sqlite3';
import { openSqlite } from '@ferry/runtime';

const require = createRequire(import.meta.url);

/** The packet shape aedes hands to a persistence; any other field is kept as it is. */
export interface PersistedPacket {
  cmd?: string;
  topic?: string;
  payload?: Buffer | string;
  qos?: number;
  retain?: boolean;
  messageId?: number | undefined;
  brokerId?: string | undefined;
  brokerCounter?: number;
  clientId?: string;
  [key: string]: unknown;
}

export interface PersistedSubscription {
  topic: string;
  qos: number;
  rh?: number;
  rap?: boolean;
  nl?: boolean;
  subscriptionIdentifier?: number;
}

/** A stored subscription as matched by topic: who gets a QoS > 0 message while offline. */
export interface TopicSubscription {
  clientId: string;
  topic: string;
  qos: number;
  rh?: number | undefined;
  rap?: boolean | undefined;
  nl?: boolean | undefined;
}

interface ClientRef {
  readonly id: string;
}

interface BrokerRef {
  readonly id: string;
}

// aedes-packet (through aedes-persistence) normalises a packet the way the memory persistence
// stores it: defaults filled in, `length` dropped, messageId reset for QoS > 0.
const { Packet } = require('aedes-persistence') as { Packet: new (original: PersistedPacket, broker?: BrokerRef) => PersistedPacket };

interface QlobberSubLike {
  readonly subscriptionsCount: number;
  add(topic: string, value: TopicSubscription): void;
  remove(topic: string, value: { clientId: string; topic: string }): void;
  match(topic: string): TopicSubscription[];
}
interface QlobberTrueLike {
  add(topic: string): void;
  test(topic: string): boolean;
}
const QlobberSub = require('qlobber/aedes/qlobber-sub') as new (options: object) => QlobberSubLike;
const { QlobberTrue } = require('qlobber') as { QlobberTrue: new (options: object) => QlobberTrueLike };

const QLOBBER_OPTIONS = { wildcard_one: '+', wildcard_some: '#', separator: '/' };

/** Longest a write nobody waits for stays uncommitted when no write with a waiter comes along. */
const DEFERRED_COMMIT_MS = 10;

/** Someone waiting for the open transaction: told once it committed (null) or failed. */
type Settle = (err: Error | null) => void;

/** The transaction open in this turn of the event loop. */
interface OpenTransaction {
  /** The first write's persistence call, for `onWrite`. */
  readonly op: string;
  readonly waiters: Settle[];
  /** Journal seqs deleted in it: deleted again with a later commit if it fails. */
  readonly cleared: number[];
  /** Journaled publishes it stores (queued for subscribers, retained) without committing: published again if it fails. */
  readonly journaledStores: { seq: number; packet: PersistedPacket }[];
}

export interface SqlitePersistenceOptions {
  /** Database file; created with its directory's permissions. */
  readonly path: string;
  /**
   * FULL (default) fsyncs every commit, so a power cut loses nothing acknowledged. NORMAL in WAL
   * survives a process crash (kill -9) but a power cut may lose the last commits.
   */
  readonly synchronous?: 'full' | 'normal';
  /** Each commit: went through (no `err`) or failed; `op` names the persistence call that opened its transaction. */
  readonly onWrite?: (op: string, err?: unknown) => void;
  /**
   * A packet aedes could not store (retained, or queued for its subscribers) in its publish
   * pipeline: for a client's QoS 1 publish that is after the PUBACK, so the client will not send it again.
   * `journalSeq` is its journal entry when it was journaled (undefined otherwise); that entry is
   * already forgotten (journalSeqOf), so only its redelivery clears it.
   */
  readonly onPublishNotStored?: (packet: PersistedPacket, journalSeq?: number) => void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, packet BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  client_id TEXT NOT NULL, topic TEXT NOT NULL, qos INTEGER NOT NULL,
  rh INTEGER, rap INTEGER, nl INTEGER, subscription_identifier INTEGER,
  UNIQUE (client_id, topic)
);
CREATE TABLE IF NOT EXISTS outgoing (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  client_id TEXT NOT NULL, broker_id TEXT, broker_counter INTEGER, message_id INTEGER,
  packet BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outgoing_by_client ON outgoing (client_id, seq);
CREATE TABLE IF NOT EXISTS incoming (
  client_id TEXT NOT NULL, message_id INTEGER NOT NULL, packet BLOB NOT NULL,
  PRIMARY KEY (client_id, message_id)
);
CREATE TABLE IF NOT EXISTS inbound_journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, packet BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS wills (client_id TEXT PRIMARY KEY, broker_id TEXT, packet BLOB NOT NULL);
`;

// v8 serialisation keeps Buffers, undefined fields and every extra property a packet carries, which
// JSON would not; a packet read back is a plain object with the same fields.
function pack(packet: object): Buffer {
  return serialize(packet);
}
function unpack(blob: Buffer): PersistedPacket {
  return deserialize(blob) as PersistedPacket;
}

function flag(value: boolean | undefined): number | null {
  return value === undefined ? null : value ? 1 : 0;
}
function unflag(value: number | null): boolean | undefined {
  return value === null ? undefined : value === 1;
}

interface SubscriptionRow {
  client_id: string;
  topic: string;
  qos: number;
  rh: number | null;
  rap: number | null;
  nl: number | null;
  subscription_identifier: number | null;
}

function subscriptionOf(row: SubscriptionRow): PersistedSubscription {
  // The same keys the memory persistence returns, undefined where the subscriber gave none.
  const sub = { topic: row.topic, qos: row.qos, rh: row.rh ?? undefined, rap: unflag(row.rap), nl: unflag(row.nl) } as PersistedSubscription;
  if (row.subscription_identifier !== null) sub.subscriptionIdentifier = row.subscription_identifier;
  return sub;
}

/** A queued packet as stored, with the packet id it was last sent with (kept in its own column). */
function queuedPacket(row: { packet: Buffer; message_id: number | null }): PersistedPacket {
  const packet = unpack(row.packet);
  if (row.message_id !== null) packet.messageId = row.message_id;
  return packet;
}

function fromRows<T>(rows: Iterable<T>): Readable {
  return Readable.from(rows, { objectMode: true });
}

export class SqlitePersistence {
  readonly #db: Database.Database;
  readonly #trie = new QlobberSub(QLOBBER_OPTIONS);
  /** client id -> topic -> subscription, mirrored from SQLite so SUBSCRIBE and lookups stay in memory. */
  readonly #subscriptions = new Map<string, Map<string, PersistedSubscription>>();
  #broker: BrokerRef | undefined;
  #destroyed = false;
  readonly #stmt;
  #open: OpenTransaction | undefined;
  /** The open transaction's commit: at the end of this turn (someone waits) or after DEFERRED_COMMIT_MS. */
  #commitSoon: NodeJS.Immediate | undefined;
  #commitLater: NodeJS.Timeout | undefined;
  /** Journal seqs whose clear failed with its transaction: cleared again with the next commit. */
  #journalClearRetry: number[] = [];
  /** The journal entry of each committed, not yet cleared publish, by payload (aedes' packet copies keep it). */
  readonly #journalSeqs = new WeakMap<Buffer, number>();
  /**
   * Clients whose will could not be deleted (a full disk): deleted with the next commit (QoS 1
   * traffic, or the broker's close), never read or published meanwhile.
   */
  readonly #willsToDelete = new Set<string>();
  readonly #options: SqlitePersistenceOptions;

  constructor(options: SqlitePersistenceOptions) {
    this.#options = options;
    const db = openSqlite({
      path: options.path,
      what: 'broker persistence',
      synchronous: options.synchronous === 'normal' ? 'normal' : 'full',
      setup: (d) => d.exec(SCHEMA),
    });
    this.#db = db;
    this.#stmt = {
      retainedPut: db.prepare('INSERT INTO retained (topic, packet) VALUES (?, ?) ON CONFLICT (topic) DO UPDATE SET packet = excluded.packet'),
      retainedDel: db.prepare('DELETE FROM retained WHERE topic = ?'),
      retainedAll: db.prepare<[], { topic: string; packet: Buffer }>('SELECT topic, packet FROM retained ORDER BY rowid'),
      subPut: db.prepare(
        `INSERT INTO subscriptions (client_id, topic, qos, rh, rap, nl, subscription_identifier) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (client_id, topic) DO UPDATE SET qos = excluded.qos, rh = excluded.rh, rap = excluded.rap,
           nl = excluded.nl, subscription_identifier = excluded.subscription_identifier`,
      ),
      subDel: db.prepare('DELETE FROM subscriptions WHERE client_id = ? AND topic = ?'),
      subDelClient: db.prepare('DELETE FROM subscriptions WHERE client_id = ?'),
      subAll: db.prepare<[], SubscriptionRow>('SELECT * FROM subscriptions ORDER BY seq'),
      outPut: db.prepare('INSERT INTO outgoing (client_id, broker_id, broker_counter, message_id, packet) VALUES (?, ?, ?, ?, ?)'),
      outByClient: db.prepare<[string], { packet: Buffer; message_id: number | null }>('SELECT packet, message_id FROM outgoing WHERE client_id = ? ORDER BY seq'),
      // The first queued packet this update is for: the same broker message, or (a PUBREL, or a
      // packet from another broker) the one holding that message id. Mirrors the memory persistence.
      outFind: db.prepare<
        [{ clientId: string; brokerId: string | null; brokerCounter: number | null; messageId: number | null }],
        { seq: number; same: number }
      >(
        `SELECT seq, (broker_id IS @brokerId AND broker_counter IS @brokerCounter) AS same FROM outgoing
         WHERE client_id = @clientId AND ((broker_id IS @brokerId AND broker_counter IS @brokerCounter)
           OR (broker_id IS NOT @brokerId AND message_id IS @messageId))
         ORDER BY seq LIMIT 1`,
      ),
      outSet: db.prepare('UPDATE outgoing SET broker_id = ?, broker_counter = ?, message_id = ?, packet = ? WHERE seq = ?'),
      outSetMessageId: db.prepare('UPDATE outgoing SET message_id = ? WHERE seq = ?'),
      outTakeByMessageId: db.prepare<[string, number], { packet: Buffer; message_id: number | null }>(
        `DELETE FROM outgoing WHERE seq = (SELECT seq FROM outgoing WHERE client_id = ? AND message_id = ? ORDER BY seq LIMIT 1)
         RETURNING packet, message_id`,
      ),
      inPut: db.prepare('INSERT INTO incoming (client_id, message_id, packet) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET packet = excluded.packet'),
      inGet: db.prepare<[string, number], { packet: Buffer }>('SELECT packet FROM incoming WHERE client_id = ? AND message_id = ?'),
      inDel: db.prepare('DELETE FROM incoming WHERE client_id = ? AND message_id = ?'),
      inDelClient: db.prepare('DELETE FROM incoming WHERE client_id = ?'),
      willPut: db.prepare('INSERT INTO wills (client_id, broker_id, packet) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET broker_id = excluded.broker_id, packet = excluded.packet'),
      willGet: db.prepare<[string], { packet: Buffer }>('SELECT packet FROM wills WHERE client_id = ?'),
      willDel: db.prepare('DELETE FROM wills WHERE client_id = ?'),
      willAll: db.prepare<[], { client_id: string; broker_id: string | null; packet: Buffer }>('SELECT client_id, broker_id, packet FROM wills ORDER BY rowid'),
      journalPut: db.prepare('INSERT INTO inbound_journal (packet) VALUES (?)'),
      journalDel: db.prepare('DELETE FROM inbound_journal WHERE seq = ?'),
      journalAll: db.prepare<[], { seq: number; packet: Buffer }>('SELECT seq, packet FROM inbound_journal ORDER BY seq'),
      begin: db.prepare('BEGIN'),
      commit: db.prepare('COMMIT'),
      rollback: db.prepare('ROLLBACK'),
      counts: db.prepare<[], { retained: number; outgoing: number; incoming: number }>(
        'SELECT (SELECT count(*) FROM retained) AS retained, (SELECT count(*) FROM outgoing) AS outgoing, (SELECT count(*) FROM incoming) AS incoming',
      ),
    };
    for (const row of this.#stmt.subAll.iterate()) this.#remember(row.client_id, subscriptionOf(row));
  }

  // The write path: `#stage` runs a write now in the open transaction (so reads see it at once),
  // which commits with the next `#write` (committed before it returns), at the end of the turn when
  // a journal entry waits for it (`#whenCommitted`), or DEFERRED_COMMIT_MS after it opened. A write
  // that fails fails its whole transaction: everything staged in it is rolled back, and `#abort`
  // tells whoever depended on it.

  /** Runs `write` in the open transaction, opening one; a write that throws rolls the transaction back. */
  #stage<T>(op: string, write: () => T): T {
    const open = this.#open ?? this.#begin(op);
    try {
      return write();
    } catch (err) {
      this.#abort(open, err, false);
      throw err;
    }
  }

  #begin(op: string): OpenTransaction {
    this.#stmt.begin.run();
    const open: OpenTransaction = { op, waiters: [], cleared: [], journaledStores: [] };
    this.#open = open;
    // Every transaction gets committed, whether or not anyone waits for it.
    this.#deferred();
    return open;
  }

  /** `settle` is told when what was staged so far is committed (null) or rolled back. */
  #whenCommitted(settle: Settle): void {
    const open = this.#open;
    if (!open) {
      settle(null);
      return;
    }
    open.waiters.push(settle);
    if (this.#commitLater) clearTimeout(this.#commitLater);
    this.#commitLater = undefined;
    this.#commitSoon ??= setImmediate(() => this.#commit(true));
  }

  /** The open transaction commits within DEFERRED_COMMIT_MS if nothing commits it sooner. */
  #deferred(): void {
    if (!this.#open || this.#commitSoon || this.#commitLater) return;
    this.#commitLater = setTimeout(() => this.#commit(), DEFERRED_COMMIT_MS);
    this.#commitLater.unref();
  }

  /**
   * Commits the open transaction; a failure rolls it back (see `#abort`) and is returned. Clears and
   * will deletions an earlier failed commit left behind go with it, unless it is `alone`.
   */
  #commit(atTurnEnd = false, alone = false): Error | undefined {
    this.#cancelCommit();
    const open = this.#open;
    if (!open) return undefined;
    try {
      if (!alone) {
        for (const seq of this.#journalClearRetry) this.#stmt.journalDel.run(seq);
        for (const clientId of this.#willsToDelete) this.#stmt.willDel.run(clientId);
      }
      this.#stmt.commit.run();
    } catch (err) {
      return this.#abort(open, err, atTurnEnd);
    }
    this.#open = undefined;
    // Nothing can join either list between the statements above and here (no callback runs).
    if (!alone) {
      this.#journalClearRetry = [];
      this.#willsToDelete.clear();
    }
    this.#options.onWrite?.(open.op);
    this.#settle(open.waiters, null, atTurnEnd);
    return undefined;
  }

  /** Rolls back the open transaction after `err`: its waiters fail, its journal clears are retried. */
  #abort(open: OpenTransaction, err: unknown, atTurnEnd: boolean): Error {
    this.#cancelCommit();
    this.#open = undefined;
    // Some errors (SQLITE_FULL, SQLITE_IOERR) may have rolled it back already.
    if (this.#db.inTransaction) {
      try {
        this.#stmt.rollback.run();
      } catch {
        // Nothing more to undo: the connection has left the transaction either way.
      }
    }
    // A journaled publish queued in it is published again, and its clear (if in it) not retried.
    const notStored = new Set<number>();
    for (const { seq, packet } of open.journaledStores) {
      if (notStored.has(seq)) continue;
      notStored.add(seq);
      // Published again, it waits for its queueing like any publish the journal does not hold.
      if (packet.payload !== undefined && typeof packet.payload !== 'string') this.#journalSeqs.delete(packet.payload);
      this.#options.onPublishNotStored?.(packet, seq);
    }
    this.#journalClearRetry.push(...open.cleared.filter((seq) => !notStored.has(seq)));
    this.#options.onWrite?.(open.op, err);
    const error = err instanceof Error ? err : new Error(String(err));
    this.#settle(open.waiters, error, atTurnEnd);
    return error;
  }

  /**
   * Tells the waiters (journal entries, whose PUBACKs and publishes follow) at the end of a turn, as
   * always: a commit inside another persistence call must not start publishes in the middle of it.
   */
  #settle(waiters: readonly Settle[], err: Error | null, atTurnEnd: boolean): void {
    if (waiters.length === 0) return;
    if (atTurnEnd) for (const settle of waiters) settle(err);
    else setImmediate(() => this.#settle(waiters, err, true));
  }

  #cancelCommit(): void {
    if (this.#commitSoon) clearImmediate(this.#commitSoon);
    if (this.#commitLater) clearTimeout(this.#commitLater);
    this.#commitSoon = undefined;
    this.#commitLater = undefined;
  }

  /**
   * Runs a write and commits it before returning; throws if it failed. What was staged before
   * commits first, on its own: on a full disk a write that changes nothing (a clean client's
   * CONNECT) still goes through, and one that fails fails for itself alone.
   */
  #write<T>(op: string, write: () => T): T {
    if (this.#open) this.#commit();
    const result = this.#stage(op, write);
    const err = this.#commit(false, true);
    if (err) throw err;
    return result;
  }

  /**
   * A store in aedes' publish pipeline. For a journaled publish it is staged only: the journal keeps
   * the publish until its clear commits, with this write or after it, and should this write's
   * transaction fail, `#abort` has it published again. Any other is committed at once.
   */
  #publishWrite(op: string, packet: PersistedPacket, write: () => void): void {
    const payload = packet.payload;
    const journalSeq = payload === undefined || typeof payload === 'string' ? undefined : this.#journalSeqs.get(payload);
    try {
      if (journalSeq === undefined) {
        this.#write(op, write);
        return;
      }
      this.#stage(op, write);
    } catch (err) {
      // The broker may have to publish the packet again; that pass waits for its queueing.
      if (journalSeq !== undefined && payload !== undefined && typeof payload !== 'string') this.#journalSeqs.delete(payload);
      this.#options.onPublishNotStored?.(packet, journalSeq);
      throw err;
    }
    this.#open?.journaledStores.push({ seq: journalSeq, packet });
  }

  get broker(): BrokerRef | undefined {
    return this.#broker;
  }

  async setup(broker: BrokerRef): Promise<void> {
    this.#broker = broker;
    await Promise.resolve();
  }

  /** Rows held now, for the retained-count and in-flight gauges. */
  counts(): { retained: number; outgoing: number; incoming: number } {
    const row = this.#stmt.counts.get();
    return row ?? { retained: 0, outgoing: 0, incoming: 0 };
  }

  // aedes sends a QoS 1 PUBACK before it stores the message (retained, offline queues). The
  // journal closes that window: the broker records the publish before letting aedes ack it,
  // clears it once aedes has stored and relayed it, and replays what is left after a crash
  // (at least once, as QoS 1 allows).

  // Group commit: every publish asked for in one turn of the event loop goes into one transaction
  // (one WAL commit, or one fsync with synchronous=full), not one each; clears go with it or with
  // the next commit (at most DEFERRED_COMMIT_MS later). aedes handles
  // all the packets of a socket read at once, so a busy publisher's window shares a commit.

  /** Records an accepted QoS 1 publish; `done` gets the entry's seq once it is committed, and only then may aedes ack it. */
  journalInbound(packet: { topic: string; payload: Buffer | string; qos: number; retain: boolean }, done: (err: Error | null, seq?: number) => void): void {
    const entry = { topic: packet.topic, payload: packet.payload, qos: packet.qos, retain: packet.retain };
    let seq: number;
    try {
      seq = this.#stage('journal', () => Number(this.#stmt.journalPut.run(pack(entry)).lastInsertRowid));
    } catch (err) {
      done(err as Error);
      return;
    }
    const payload = packet.payload;
    this.#whenCommitted((err) => {
      if (err) {
        done(err);
        return;
      }
      if (typeof payload !== 'string') this.#journalSeqs.set(payload, seq);
      done(null, seq);
    });
  }

  /** The journal entry of a committed, not yet cleared publish, by its payload (aedes' packet copies share it). */
  journalSeqOf(payload: Buffer): number | undefined {
    return this.#journalSeqs.get(payload);
  }

  /**
   * Clears an entry once aedes stored and relayed its publish; committed with the next group. A
   * kill -9 before that commit replays the publish on restart: a duplicate, as QoS 1 allows (Ferry's
   * ingestor dedupes it). Committing each clear on its own instead costs about 40% of QoS 1
   * throughput (measured with bench/broker.mjs: 10,500/s against 17,200/s).
   */
  journalDone(seq: number, payload?: Buffer): void {
    if (payload) this.#journalSeqs.delete(payload);
    let open: OpenTransaction;
    try {
      open = this.#open ?? this.#begin('journal');
    } catch {
      this.#journalClearRetry.push(seq);
      return;
    }
    // Noted before the delete runs: should it fail, `#abort` decides with the rest of the
    // transaction. A clear is done again with the next commit (until then a crash only replays the
    // publish, at least once), unless the same transaction held the publish's store: then the
    // publish was handed to redelivery and only that clears the entry. Retried anyway, a crash
    // between that commit and the redelivery's store would lose a PUBACKed publish.
    open.cleared.push(seq);
    try {
      this.#stage('journal', () => this.#stmt.journalDel.run(seq));
    } catch {
      // Rolled back and sorted out by `#abort`.
    }
  }

  /** Publishes the journal holds from before a crash, oldest first. */
  journalPending(): { seq: number; packet: PersistedPacket }[] {
    return this.#stmt.journalAll.all().map((row) => ({ seq: row.seq, packet: unpack(row.packet) }));
  }

  async storeRetained(packet: PersistedPacket): Promise<void> {
    const payload = packet.payload ?? Buffer.alloc(0);
    const topic = packet.topic ?? '';
    this.#publishWrite('storeRetained', packet, () => {
      if (payload.length === 0) this.#stmt.retainedDel.run(topic);
      else this.#stmt.retainedPut.run(topic, pack({ ...packet }));
    });
    await Promise.resolve();
  }

  createRetainedStreamCombi(patterns: readonly string[]): Readable {
    const matchers = patterns.map((pattern) => {
      const q = new QlobberTrue(QLOBBER_OPTIONS);
      q.add(pattern);
      return q;
    });
    const rows = this.#stmt.retainedAll.all();
    return fromRows(rows.filter((row) => matchers.some((m) => m.test(row.topic))).map((row) => unpack(row.packet)));
  }

  createRetainedStream(pattern: string): Readable {
    return this.createRetainedStreamCombi([pattern]);
  }

  #remember(clientId: string, sub: PersistedSubscription): void {
    let stored = this.#subscriptions.get(clientId);
    if (!stored) {
      stored = new Map();
      this.#subscriptions.set(clientId, stored);
    }
    const before = stored.get(sub.topic);
    // Only QoS > 0 subscriptions queue messages for an offline client, so only they go in the trie.
    if (sub.qos > 0) {
      this.#trie.add(sub.topic, { clientId, topic: sub.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl });
    } else if (before && before.qos > 0) {
      this.#trie.remove(sub.topic, { clientId, topic: sub.topic });
    }
    stored.set(sub.topic, sub);
  }

  #forget(clientId: string, topic: string): void {
    const stored = this.#subscriptions.get(clientId);
    const before = stored?.get(topic);
    if (!stored || !before) return;
    if (before.qos > 0) this.#trie.remove(topic, { clientId, topic });
    stored.delete(topic);
    if (stored.size === 0) this.#subscriptions.delete(clientId);
  }

  async addSubscriptions(client: ClientRef, subs: readonly PersistedSubscription[]): Promise<void> {
    this.#write('addSubscriptions', () => {
      for (const sub of subs) {
        this.#stmt.subPut.run(client.id, sub.topic, sub.qos, sub.rh ?? null, flag(sub.rap), flag(sub.nl), sub.subscriptionIdentifier ?? null);
      }
    });
    for (const sub of subs) {
      const record = { topic: sub.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl } as PersistedSubscription;
      if (sub.subscriptionIdentifier !== undefined) record.subscriptionIdentifier = sub.subscriptionIdentifier;
      this.#remember(client.id, record);
    }
    await Promise.resolve();
  }

  async removeSubscriptions(client: ClientRef, topics: readonly string[]): Promise<void> {
    this.#write('removeSubscriptions', () => {
      for (const topic of topics) this.#stmt.subDel.run(client.id, topic);
    });
    for (const topic of topics) this.#forget(client.id, topic);
    await Promise.resolve();
  }

  async subscriptionsByClient(client: ClientRef): Promise<PersistedSubscription[]> {
    await Promise.resolve();
    return [...(this.#subscriptions.get(client.id)?.values() ?? [])].map((sub) => ({ ...sub }));
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    await Promise.resolve();
    return { subsCount: this.#trie.subscriptionsCount, clientsCount: this.#subscriptions.size };
  }

  async subscriptionsByTopic(topic: string): Promise<TopicSubscription[]> {
    await Promise.resolve();
    return this.#trie.match(topic);
  }

  async cleanSubscriptions(client: ClientRef): Promise<void> {
    this.#write('cleanSubscriptions', () => this.#stmt.subDelClient.run(client.id));
    for (const topic of [...(this.#subscriptions.get(client.id)?.keys() ?? [])]) this.#forget(client.id, topic);
    await Promise.resolve();
  }

  #enqueue(clientId: string, packet: PersistedPacket): void {
    const queued = new Packet(packet);
    this.#stmt.outPut.run(clientId, queued.brokerId ?? null, queued.brokerCounter ?? null, queued.messageId ?? null, pack(queued));
  }

  async outgoingEnqueue(sub: { clientId: string }, packet: PersistedPacket): Promise<void> {
    this.#write('outgoingEnqueue', () => this.#enqueue(sub.clientId, packet));
    await Promise.resolve();
  }

  async outgoingEnqueueCombi(subs: readonly { clientId: string }[], packet: PersistedPacket): Promise<void> {
    // Nothing to write for a topic nobody holds a session for: no write, so nothing to fail.
    if (subs.length > 0) {
      this.#publishWrite('outgoingEnqueueCombi', packet, () => {
        for (const sub of subs) this.#enqueue(sub.clientId, packet);
      });
    }
    await Promise.resolve();
  }

  async outgoingUpdate(client: ClientRef, packet: PersistedPacket): Promise<void> {
    const brokerId = packet.brokerId ?? null;
    const brokerCounter = packet.brokerCounter ?? null;
    const messageId = packet.messageId ?? null;
    const row = this.#stmt.outFind.get({ clientId: client.id, brokerId, brokerCounter, messageId });
    if (!row) throw new Error('no such packet');
    if (row.same === 1) {
      // The message got its packet id for delivery: the id goes in its column (readers take it from
      // there), the stored packet stays as it is. QoS 1: committed with the next commit (sent again
      // after a kill -9 under a new id, it is only a duplicate, which QoS 1 allows). A QoS 2 message
      // keeps its id across a crash (exactly once): committed before it is sent.
      const setMessageId = (): unknown => this.#stmt.outSetMessageId.run(messageId, row.seq);
      if (packet.qos === 1) this.#stage('outgoingUpdate', setMessageId);
      else this.#write('outgoingUpdate', setMessageId);
    } else {
      // A PUBREL (or another broker's packet) takes the place of the packet with its message id.
      this.#write('outgoingUpdate', () => this.#stmt.outSet.run(brokerId, brokerCounter, messageId, pack(packet), row.seq));
    }
    await Promise.resolve();
  }

  async outgoingClearMessageId(client: ClientRef, packet: { messageId?: number }): Promise<PersistedPacket | undefined> {
    await Promise.resolve();
    if (typeof packet !== 'object' || typeof packet.messageId !== 'number') return undefined;
    const messageId = packet.messageId;
    // Acknowledged: a deletion lost to a kill -9 before it is committed only sends the message again.
    const row = this.#stage('outgoingClearMessageId', () => this.#stmt.outTakeByMessageId.get(client.id, messageId));
    return row ? queuedPacket(row) : undefined;
  }

  outgoingStream(client: ClientRef): Readable {
    return fromRows(this.#stmt.outByClient.all(client.id).map(queuedPacket));
  }

  async incomingStorePacket(client: ClientRef, packet: PersistedPacket): Promise<void> {
    const stored = new Packet(packet);
    stored.messageId = packet.messageId;
    this.#write('incomingStorePacket', () => this.#stmt.inPut.run(client.id, packet.messageId ?? 0, pack(stored)));
    await Promise.resolve();
  }

  async incomingGetPacket(client: ClientRef, packet: { messageId?: number }): Promise<PersistedPacket> {
    await Promise.resolve();
    const row = this.#stmt.inGet.get(client.id, packet.messageId ?? 0);
    if (!row) throw new Error('no such packet');
    return unpack(row.packet);
  }

  async incomingDelPacket(client: ClientRef, packet: { messageId?: number }): Promise<void> {
    await Promise.resolve();
    const result = this.#write('incomingDelPacket', () => this.#stmt.inDel.run(client.id, packet.messageId ?? 0));
    if (result.changes === 0) throw new Error('no such packet');
  }

  async cleanIncoming(client: ClientRef): Promise<void> {
    this.#write('cleanIncoming', () => this.#stmt.inDelClient.run(client.id));
    await Promise.resolve();
  }

  async putWill(client: ClientRef, packet: PersistedPacket): Promise<void> {
    // Recorded on the packet itself, as aedes reads brokerId and clientId back from a streamed will.
    packet.brokerId = this.#broker?.id;
    packet.clientId = client.id;
    // Before the write: a deletion still pending from a full disk must not remove this new will.
    this.#willsToDelete.delete(client.id);
    this.#write('putWill', () => this.#stmt.willPut.run(client.id, packet.brokerId ?? null, pack(packet)));
    await Promise.resolve();
  }

  async getWill(client: ClientRef): Promise<PersistedPacket | undefined> {
    await Promise.resolve();
    if (this.#willsToDelete.has(client.id)) return undefined;
    const row = this.#stmt.willGet.get(client.id);
    return row ? unpack(row.packet) : undefined;
  }

  /** Never rejects (see the top of the file): a deletion that fails is done with the next commit. */
  async delWill(client: ClientRef): Promise<PersistedPacket | undefined> {
    await Promise.resolve();
    if (this.#willsToDelete.has(client.id)) return undefined;
    const row = this.#stmt.willGet.get(client.id);
    // No will stored, nothing to write: a client without one connects even on a full disk.
    if (!row) return undefined;
    try {
      this.#write('delWill', () => this.#stmt.willDel.run(client.id));
    } catch {
      this.#willsToDelete.add(client.id);
    }
    return unpack(row.packet);
  }

  /** Wills of clients whose broker is not among `brokers` (alive): those brokers died holding them. */
  streamWill(brokers: Record<string, unknown> = {}): Readable {
    const rows = this.#stmt.willAll
      .all()
      .filter((row) => (row.broker_id === null || !brokers[row.broker_id]) && !this.#willsToDelete.has(row.client_id));
    return fromRows(rows.map((row) => unpack(row.packet)));
  }

  getClientList(topic: string): Readable {
    const ids: string[] = [];
    for (const [clientId, subs] of this.#subscriptions) if (subs.has(topic)) ids.push(clientId);
    return fromRows(ids);
  }

  async destroy(): Promise<void> {
    await Promise.resolve();
    if (this.#destroyed) throw new Error('destroyed called twice!');
    this.#destroyed = true;
    // What is staged goes in before the file closes, so a clean stop replays nothing. A will
    // deletion still pending from a full disk gets this last chance too.
    if (!this.#open && (this.#willsToDelete.size > 0 || this.#journalClearRetry.length > 0)) this.#begin('destroy');
    this.#commit();
    this.#db.close();
  }
}

/** A SQLite persistence to pass as aedes' `persistence` option. */
export function createSqlitePersistence(options: SqlitePersistenceOptions): SqlitePersistence {
  return new SqlitePersistence(options);
}
