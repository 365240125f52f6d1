// The SQLite persistence's own behaviour beyond aedes' abstract suite: what one turn's transaction
// commits, and files written by the release before it (same schema, packet ids also in the blob).
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { serialize } from 'node:v8';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir } from '@ferry/testkit';
import { createSqlitePersistence } from '../src/persistence-sqlite.js';
import type { PersistedPacket, SqlitePersistence } from '../src/persistence-sqlite.js';

const dir = await makeTempDir('persistence-sqlite');
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
function freshPath(): string {
  files += 1;
  return join(dir, `broker-${files}.db`);
}

async function open(path: string, onPublishNotStored?: (packet: PersistedPacket, journalSeq?: number) => void): Promise<SqlitePersistence> {
  const persistence = createSqlitePersistence({ path, synchronous: 'normal', ...(onPublishNotStored ? { onPublishNotStored } : {}) });
  await persistence.setup({ id: 'broker-a' });
  return persistence;
}

async function queued(persistence: SqlitePersistence, clientId: string): Promise<PersistedPacket[]> {
  const packets: PersistedPacket[] = [];
  for await (const packet of persistence.outgoingStream({ id: clientId })) packets.push(packet as PersistedPacket);
  return packets;
}

function publish(counter: number, payload: string): PersistedPacket {
  return { cmd: 'publish', topic: 'ferry/v1/gw/g1/batch', payload: Buffer.from(payload), qos: 1, retain: false, dup: false, brokerId: 'broker-a', brokerCounter: counter };
}

describe('SQLite persistence', () => {
  it('keeps the packet id a queued QoS 1 message was sent with across a reopen, and clears it by that id', async () => {
    const path = freshPath();
    let persistence = await open(path);
    await persistence.outgoingEnqueueCombi([{ clientId: 'ingestor' }], publish(1, 'one'));
    await persistence.outgoingEnqueueCombi([{ clientId: 'ingestor' }], publish(2, 'two'));
    await persistence.outgoingUpdate({ id: 'ingestor' }, { ...publish(1, 'one'), messageId: 7 });
    await persistence.outgoingUpdate({ id: 'ingestor' }, { ...publish(2, 'two'), messageId: 8 });
    await persistence.destroy();

    persistence = await open(path);
    const packets = await queued(persistence, 'ingestor');
    expect(packets.map((p) => [p.messageId, String(p.payload)])).toEqual([
      [7, 'one'],
      [8, 'two'],
    ]);
    const cleared = await persistence.outgoingClearMessageId({ id: 'ingestor' }, { messageId: 7 });
    expect(cleared).toMatchObject({ messageId: 7, topic: 'ferry/v1/gw/g1/batch', brokerCounter: 1 });
    expect(String(cleared?.payload)).toBe('one');
    expect((await queued(persistence, 'ingestor')).map((p) => p.messageId)).toEqual([8]);
    await persistence.destroy();
  });

  it('commits a QoS 1 delivery\'s bookkeeping without anyone waiting: a reopen right after a clean stop sees it', async () => {
    const path = freshPath();
    let persistence = await open(path);
    await persistence.outgoingEnqueueCombi([{ clientId: 'ingestor' }], publish(1, 'one'));
    // Neither waits for a commit; destroy() commits what is staged.
    await persistence.outgoingUpdate({ id: 'ingestor' }, { ...publish(1, 'one'), messageId: 3 });
    expect(await persistence.outgoingClearMessageId({ id: 'ingestor' }, { messageId: 3 })).toMatchObject({ messageId: 3 });
    await persistence.destroy();
    persistence = await open(path);
    expect(await queued(persistence, 'ingestor')).toEqual([]);
    await persistence.destroy();
  });

  it('opens a file written by the previous release: queued packets, their ids, subscriptions, retained messages and the journal', async () => {
    const path = freshPath();
    // The previous release's writer: the same tables, the packet id both in its column and in the blob.
    const seed = await open(path);
    await seed.destroy();
    const db = new Database(path);
    const old = { ...publish(5, 'old'), messageId: 41 };
    db.prepare('INSERT INTO outgoing (client_id, broker_id, broker_counter, message_id, packet) VALUES (?, ?, ?, ?, ?)').run('ingestor', 'broker-a', 5, 41, serialize(old));
    db.prepare('INSERT INTO subscriptions (client_id, topic, qos) VALUES (?, ?, ?)').run('ingestor', 'ferry/v1/gw/+/batch', 1);
    db.prepare('INSERT INTO retained (topic, packet) VALUES (?, ?)').run('r/1', serialize({ cmd: 'publish', topic: 'r/1', payload: Buffer.from('kept'), qos: 1, retain: true }));
    db.prepare('INSERT INTO inbound_journal (packet) VALUES (?)').run(serialize({ topic: 't', payload: Buffer.from('j'), qos: 1, retain: false }));
    db.close();

    const persistence = await open(path);
    expect((await queued(persistence, 'ingestor')).map((p) => [p.messageId, String(p.payload)])).toEqual([[41, 'old']]);
    expect(await persistence.subscriptionsByTopic('ferry/v1/gw/g1/batch')).toMatchObject([{ clientId: 'ingestor', qos: 1 }]);
    expect(persistence.journalPending().map((e) => String(e.packet.payload))).toEqual(['j']);
    const retained: PersistedPacket[] = [];
    for await (const packet of persistence.createRetainedStream('r/#')) retained.push(packet as PersistedPacket);
    expect(retained.map((p) => String(p.payload))).toEqual(['kept']);
    expect(await persistence.outgoingClearMessageId({ id: 'ingestor' }, { messageId: 41 })).toMatchObject({ messageId: 41, brokerCounter: 5 });
    await persistence.destroy();
  });

  it('queues a journaled publish in the transaction that clears its journal entry, so a reopen has one or the other', async () => {
    const path = freshPath();
    let persistence = await open(path);
    const payload = Buffer.from('batch');
    const seq = await new Promise<number | undefined>((resolve, reject) => {
      persistence.journalInbound({ topic: 'ferry/v1/gw/g1/batch', payload, qos: 1, retain: false }, (err, s) => (err ? reject(err) : resolve(s)));
    });
    expect(seq).toBeTypeOf('number');
    await persistence.outgoingEnqueueCombi([{ clientId: 'ingestor' }], { ...publish(1, 'batch'), payload });
    persistence.journalDone(seq ?? 0, payload);
    await persistence.destroy();
    persistence = await open(path);
    expect(persistence.journalPending()).toEqual([]);
    expect((await queued(persistence, 'ingestor')).map((p) => String(p.payload))).toEqual(['batch']);
    await persistence.destroy();
  });

  it('keeps the journal entry of a publish whose clear failed with its queueing: only its redelivery clears it, so a crash before that loses nothing', async () => {
    const path = freshPath();
    const handed: (number | undefined)[] = [];
    let persistence = await open(path, (_packet, journalSeq) => handed.push(journalSeq));
    const payload = Buffer.from('batch');
    const seq = await new Promise<number | undefined>((resolve, reject) => {
      persistence.journalInbound({ topic: 'ferry/v1/gw/g1/batch', payload, qos: 1, retain: false }, (err, s) => (err ? reject(err) : resolve(s)));
    });
    // The clear's DELETE fails (as on a full disk) in the transaction that queued the publish.
    const other = new Database(path);
    other.exec("CREATE TRIGGER refuse_clear BEFORE DELETE ON inbound_journal BEGIN SELECT RAISE(ABORT, 'clear refused'); END;");
    await persistence.outgoingEnqueueCombi([{ clientId: 'ingestor' }], { ...publish(1, 'batch'), payload });
    persistence.journalDone(seq ?? 0, payload);
    // Rolled back together: the queueing is gone, and the publish is handed back for redelivery.
    expect(handed).toEqual([seq]);
    other.exec('DROP TRIGGER refuse_clear');
    other.close();
    // A crash before the redelivery stored it (the stop commits whatever is left to retry).
    await persistence.destroy();
    persistence = await open(path);
    expect(await queued(persistence, 'ingestor')).toEqual([]);
    expect(persistence.journalPending().map((e) => [e.seq, String(e.packet.payload)])).toEqual([[seq, 'batch']]);
    await persistence.destroy();
  });
});
