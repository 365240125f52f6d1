// An aedes persistence in SQLite: retained messages, persistent-session subscriptions, queued and
// in-flight outgoing QoS 1/2 messages, incoming QoS 2 messages and wills survive a kill -9.
// It follows aedes-persistence's async interface (the one aedes 1.x calls) and passes its abstract suite.
//
// A write that fails (a full disk: SQLITE_FULL) rejects, and aedes refuses what needed it: the
// QoS 1 publish is not PUBACKed, the CONNECT or SUBSCRIBE fails and the client comes back later.
// Every write's outcome goes to `onWrite`, so the broker can tell a full disk and when it ends.
// Two failures need more than a rejection. A will's deletion never rejects: aedes chains it with
// .finally(), and the unhandled rejection would end the process; it is kept and done with the next
// commit. A publish that could not be stored after its PUBACK also goes to `onPublishNotStored`:
// its client will not send it again, so the broker publishes it again from the journal.
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

export interface SqlitePersistenceOptions {
  /** Database file; created with its directory's permissions. */
  readonly path: string;
  /**
   * FULL (default) fsyncs every commit, so a power cut loses nothing acknowledged. NORMAL in WAL
   * survives a process crash (kill -9) but a power cut may lose the last commits.
   */
  readonly synchronous?: 'full' | 'normal';
  /** Each write: went through (no `err`) or failed; `op` names the persistence call. */
  readonly onWrite?: (op: string, err?: unknown) => void;
  /**
   * A packet aedes could not store (retained, or queued for its subscribers) in its publish
   * pipeline: for a client's QoS 1 publish that is after the PUBACK, so the client will not send it again.
   */
  readonly onPublishNotStored?: (packet: PersistedPacket) => void;
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
  /** Journal entries waiting for the next group commit, with who waits for their seq. */
  #journalQueue: { packed: Buffer; done: (err: Error | null, seq?: number) => void }[] = [];
  /** Journal seqs to clear at the next group commit. */
  #journalCleared: number[] = [];
  #journalFlush: NodeJS.Immediate | undefined;
  readonly #journalCommit: (packed: readonly Buffer[], cleared: readonly number[], wills: readonly string[]) => number[];
  /**
   * Clients whose will could not be deleted (a full disk): deleted with the next commit of the
   * journal (QoS 1 traffic, or the broker's close), never read or published meanwhile.
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
      outByClient: db.prepare<[string], { packet: Buffer }>('SELECT packet FROM outgoing WHERE client_id = ? ORDER BY seq'),
      // The first queued packet this update is for: the same broker message, or (a PUBREL, or a
      // packet from another broker) the one holding that message id. Mirrors the memory persistence.
      outFind: db.prepare<
        [{ clientId: string; brokerId: string | null; brokerCounter: number | null; messageId: number | null }],
        { seq: number; same: number; packet: Buffer }
      >(
        `SELECT seq, (broker_id IS @brokerId AND broker_counter IS @brokerCounter) AS same, packet FROM outgoing
         WHERE client_id = @clientId AND ((broker_id IS @brokerId AND broker_counter IS @brokerCounter)
           OR (broker_id IS NOT @brokerId AND message_id IS @messageId))
         ORDER BY seq LIMIT 1`,
      ),
      outSet: db.prepare('UPDATE outgoing SET broker_id = ?, broker_counter = ?, message_id = ?, packet = ? WHERE seq = ?'),
      outByMessageId: db.prepare<[string, number], { seq: number; packet: Buffer }>(
        'SELECT seq, packet FROM outgoing WHERE client_id = ? AND message_id = ? ORDER BY seq LIMIT 1',
      ),
      outDel: db.prepare('DELETE FROM outgoing WHERE seq = ?'),
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
      counts: db.prepare<[], { retained: number; outgoing: number; incoming: number }>(
        'SELECT (SELECT count(*) FROM retained) AS retained, (SELECT count(*) FROM outgoing) AS outgoing, (SELECT count(*) FROM incoming) AS incoming',
      ),
    };
    for (const row of this.#stmt.subAll.iterate()) this.#remember(row.client_id, subscriptionOf(row));
    const { journalPut, journalDel, willDel } = this.#stmt;
    this.#journalCommit = db.transaction((packed: readonly Buffer[], cleared: readonly number[], wills: readonly string[]): number[] => {
      for (const clientId of wills) willDel.run(clientId);
      for (const seq of cleared) journalDel.run(seq);
      return packed.map((p) => Number(journalPut.run(p).lastInsertRowid));
    });
  }

  /** Runs one write and reports its outcome; a failure is thrown on. */
  #write<T>(op: string, write: () => T): T {
    let result: T;
    try {
      result = write();
    } catch (err) {
      this.#options.onWrite?.(op, err);
      throw err;
    }
    this.#options.onWrite?.(op);
    return result;
  }

  /** A store in aedes' publish pipeline failed: the broker may have to publish the packet again. */
  #publishWrite(op: string, packet: PersistedPacket, write: () => void): void {
    try {
      this.#write(op, write);
    } catch (err) {
      this.#options.onPublishNotStored?.(packet);
      throw err;
    }
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

  // Group commit: every publish and clear asked for in one turn of the event loop goes into one
  // transaction (one WAL commit, or one fsync with synchronous=full), not one each. aedes handles
  // all the packets of a socket read at once, so a busy publisher's window shares a commit.

  /** Records an accepted QoS 1 publish; `done` gets the entry's seq once it is committed, and only then may aedes ack it. */
  journalInbound(packet: { topic: string; payload: Buffer | string; qos: number; retain: boolean }, done: (err: Error | null, seq?: number) => void): void {
    const entry = { topic: packet.topic, payload: packet.payload, qos: packet.qos, retain: packet.retain };
    this.#journalQueue.push({ packed: pack(entry), done });
    this.#scheduleJournalCommit();
  }

  /**
   * Clears an entry once aedes stored and relayed its publish; committed with the next group. A
   * kill -9 before that commit replays the publish on restart: a duplicate, as QoS 1 allows (Ferry's
   * ingestor dedupes it). Committing each clear on its own instead costs about 40% of QoS 1
   * throughput (measured with bench/broker.mjs: 10,500/s against 17,200/s).
   */
  journalDone(seq: number): void {
    this.#journalCleared.push(seq);
    this.#scheduleJournalCommit();
  }

  #scheduleJournalCommit(): void {
    this.#journalFlush ??= setImmediate(() => this.#commitJournal());
  }

  #commitJournal(): void {
    if (this.#journalFlush) clearImmediate(this.#journalFlush);
    this.#journalFlush = undefined;
    const queue = this.#journalQueue;
    const cleared = this.#journalCleared;
    if (queue.length === 0 && cleared.length === 0 && this.#willsToDelete.size === 0) return;
    this.#journalQueue = [];
    this.#journalCleared = [];
    const wills = [...this.#willsToDelete];
    let seqs: number[];
    try {
      seqs = this.#write('journal', () =>
        this.#journalCommit(
          queue.map((q) => q.packed),
          cleared,
          wills,
        ),
      );
    } catch (err) {
      // Nothing committed: the publishes are refused (their clients resend), the clears wait for the
      // next commit, and until then a crash would only replay them (at least once).
      this.#journalCleared.push(...cleared);
      for (const q of queue) q.done(err as Error);
      return;
    }
    for (const clientId of wills) this.#willsToDelete.delete(clientId);
    queue.forEach((q, i) => q.done(null, seqs[i]));
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
    const write = this.#db.transaction(() => {
      for (const sub of subs) {
        this.#stmt.subPut.run(client.id, sub.topic, sub.qos, sub.rh ?? null, flag(sub.rap), flag(sub.nl), sub.subscriptionIdentifier ?? null);
      }
    });
    this.#write('addSubscriptions', write);
    for (const sub of subs) {
      const record = { topic: sub.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl } as PersistedSubscription;
      if (sub.subscriptionIdentifier !== undefined) record.subscriptionIdentifier = sub.subscriptionIdentifier;
      this.#remember(client.id, record);
    }
    await Promise.resolve();
  }

  async removeSubscriptions(client: ClientRef, topics: readonly string[]): Promise<void> {
    const write = this.#db.transaction(() => {
      for (const topic of topics) this.#stmt.subDel.run(client.id, topic);
    });
    this.#write('removeSubscriptions', write);
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
    const write = this.#db.transaction(() => {
      for (const sub of subs) this.#enqueue(sub.clientId, packet);
    });
    // Nothing to write for a topic nobody holds a session for: no write, so nothing to fail.
    if (subs.length > 0) this.#publishWrite('outgoingEnqueueCombi', packet, write);
    await Promise.resolve();
  }

  async outgoingUpdate(client: ClientRef, packet: PersistedPacket): Promise<void> {
    const brokerId = packet.brokerId ?? null;
    const brokerCounter = packet.brokerCounter ?? null;
    const messageId = packet.messageId ?? null;
    const row = this.#stmt.outFind.get({ clientId: client.id, brokerId, brokerCounter, messageId });
    if (!row) throw new Error('no such packet');
    if (row.same === 1) {
      // The message got its packet id for delivery: keep the queued packet, record the id.
      const queued = unpack(row.packet);
      queued.messageId = packet.messageId;
      this.#write('outgoingUpdate', () => this.#stmt.outSet.run(brokerId, brokerCounter, messageId, pack(queued), row.seq));
    } else {
      // A PUBREL (or another broker's packet) takes the place of the packet with its message id.
      this.#write('outgoingUpdate', () => this.#stmt.outSet.run(brokerId, brokerCounter, messageId, pack(packet), row.seq));
    }
    await Promise.resolve();
  }

  async outgoingClearMessageId(client: ClientRef, packet: { messageId?: number }): Promise<PersistedPacket | undefined> {
    await Promise.resolve();
    if (typeof packet !== 'object' || typeof packet.messageId !== 'number') return undefined;
    const row = this.#stmt.outByMessageId.get(client.id, packet.messageId);
    if (!row) return undefined;
    this.#write('outgoingClearMessageId', () => this.#stmt.outDel.run(row.seq));
    return unpack(row.packet);
  }

  outgoingStream(client: ClientRef): Readable {
    return fromRows(this.#stmt.outByClient.all(client.id).map((row) => unpack(row.packet)));
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
    // What is queued goes in before the file closes, so a clean stop replays nothing.
    this.#commitJournal();
    this.#db.close();
  }
}

/** A SQLite persistence to pass as aedes' `persistence` option. */
export function createSqlitePersistence(options: SqlitePersistenceOptions): SqlitePersistence {
  return new SqlitePersistence(options);
}
