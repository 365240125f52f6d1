// The direct-device journal: a device's QoS 1 publish is PUBACKed only once it is committed here,
// and readings are written to the database from here, each row deleted once the database confirmed
// it (or it was dead-lettered, or found to be a duplicate).
//
// Throughput: MQTT.js hands over one message at a time and sends the PUBACK when its handler calls
// back, so the handler's cost is the ceiling. Appends are group-committed: everything appended in
// one turn of the event loop goes into one transaction, then every caller is called back. With one
// connection that is usually one row per commit. The default is WAL with synchronous=FULL: the
// PUBACK follows the commit, so each commit is fsynced and survives a power cut, at the disk's
// fsync rate. `normal` makes a commit a write() into the WAL, no fsync: it survives a process crash
// (kill -9), but a power cut can lose the commits since the last checkpoint.
//
// Bound: at `maxRows` rows appends wait (no PUBACK), so the broker holds the device messages, until
// deletes make room.
//
// A full disk: an append that cannot commit is not PUBACKed (the broker delivers it again); a
// delete that cannot commit is kept and tried again with the next commit, so its row neither
// stays for good nor keeps counting against the bound.
import { FerryError } from '@ferry/protocol';
import type { DirectEntry } from './direct.js';
import { openSqlite } from '@ferry/runtime';

export interface DeviceJournal {
  /** Commits the message, then calls back (error: not committed, do not PUBACK). */
  append(topic: string, payload: Buffer, receivedAt: number, done: (err?: Error) => void): void;
  /** Rows after `afterId`, oldest first. */
  read(afterId: number, limit: number): DirectEntry[];
  /** Deletes settled rows (group-committed); frees room for waiting appends. */
  remove(id: number): void;
  readonly rows: number;
  /** Called after each commit of appends. */
  onAppended(listener: () => void): void;
  close(): void;
}

export interface DeviceJournalOptions {
  readonly path: string;
  readonly maxRows: number;
  readonly synchronous: 'normal' | 'full';
  /** Each commit: went through (no `err`) or failed; what tells a full disk. */
  readonly onCommit?: (err?: unknown) => void;
}

interface Appending {
  readonly topic: string;
  readonly payload: Buffer;
  readonly receivedAt: number;
  readonly done: (err?: Error) => void;
}

interface JournalRow {
  id: number;
  topic: string;
  payload: Buffer;
  received_at: number;
}

export function openDeviceJournal(options: DeviceJournalOptions): DeviceJournal {
  const db = openSqlite({
    path: options.path,
    what: 'device journal',
    synchronous: options.synchronous === 'full' ? 'full' : 'normal',
    setup: (d) =>
      d.exec(`
        CREATE TABLE IF NOT EXISTS journal (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          topic TEXT NOT NULL,
          payload BLOB NOT NULL,
          received_at INTEGER NOT NULL
        );
      `),
  });
  const insert = db.prepare<[string, Buffer, number]>('INSERT INTO journal (topic, payload, received_at) VALUES (?, ?, ?)');
  const selectAfter = db.prepare<[number, number], JournalRow>('SELECT id, topic, payload, received_at FROM journal WHERE id > ? ORDER BY id LIMIT ?');
  const deleteOne = db.prepare<[number]>('DELETE FROM journal WHERE id = ?');
  let rows = db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM journal').get()?.n ?? 0;

  const insertAll = db.transaction((items: readonly Appending[]) => {
    for (const item of items) insert.run(item.topic, item.payload, item.receivedAt);
  });
  const deleteAll = db.transaction((ids: readonly number[]) => {
    let n = 0;
    for (const id of ids) n += deleteOne.run(id).changes;
    return n;
  });

  let appending: Appending[] = [];
  /** Appends held back at the bound, oldest first. */
  const waiting: Appending[] = [];
  let removing: number[] = [];
  let scheduled = false;
  let open = true;
  const listeners: (() => void)[] = [];

  function schedule(): void {
    if (scheduled || !open) return;
    scheduled = true;
    setImmediate(flush);
  }

  function flush(): void {
    scheduled = false;
    if (!open) return;
    if (removing.length > 0) {
      const ids = removing;
      removing = [];
      try {
        rows -= deleteAll(ids);
        options.onCommit?.();
      } catch (err) {
        // Tried again with the next commit (the next append or delete schedules one). Should the
        // process stop first, the rows are read again after the restart: duplicates, caught by dedupe.
        removing = ids.concat(removing);
        options.onCommit?.(err);
      }
    }
    while (waiting.length > 0 && rows + appending.length < options.maxRows) appending.push(waiting.shift()!);
    if (appending.length === 0) return;
    const items = appending;
    appending = [];
    try {
      insertAll(items);
    } catch (err) {
      options.onCommit?.(err);
      const failure = new FerryError('FERRY_ERR_STORAGE', `device journal append failed: ${(err as Error).message}`, {}, { cause: err });
      for (const item of items) item.done(failure);
      return;
    }
    rows += items.length;
    options.onCommit?.();
    for (const item of items) item.done();
    for (const listener of listeners) listener();
  }

  return {
    append(topic, payload, receivedAt, done) {
      if (!open) {
        done(new FerryError('FERRY_ERR_NOT_READY', 'the device journal is closed'));
        return;
      }
      const item = { topic, payload, receivedAt, done };
      if (rows + appending.length >= options.maxRows || waiting.length > 0) waiting.push(item);
      else appending.push(item);
      schedule();
    },
    read(afterId, limit) {
      return selectAfter.all(afterId, limit).map((r) => ({ id: r.id, topic: r.topic, payload: r.payload, receivedAt: r.received_at }));
    },
    remove(id) {
      removing.push(id);
      schedule();
    },
    get rows() {
      return rows;
    },
    onAppended(listener) {
      listeners.push(listener);
    },
    close() {
      if (!open) return;
      if (removing.length > 0) {
        try {
          rows -= deleteAll(removing);
        } catch {
          // Read again after the restart and deduped.
        }
        removing = [];
      }
      open = false;
      // Not committed, so not PUBACKed: the broker delivers them again to the next session.
      const closed = new FerryError('FERRY_ERR_NOT_READY', 'the device journal is closed');
      for (const item of [...appending, ...waiting]) item.done(closed);
      appending = [];
      waiting.length = 0;
      db.close();
    },
  };
}
