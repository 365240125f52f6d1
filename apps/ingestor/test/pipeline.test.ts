// The data path in-process: real SQLite dedupe and dead-letter stores, an in-memory sink, acks
// captured instead of published. The MQTT and database ends are covered in ingestor.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Ack } from '@ferry/protocol';
import { uplinkTopics } from '@ferry/protocol';
import type { DeadLetterStore } from '@ferry/deadletter';
import { waitFor } from '@ferry/testkit';
import { Accounting, imbalances } from '../src/accounting.js';
import type { DedupeStore } from '../src/dedupe.js';
import type { Pipeline, QueueBounds } from '../src/pipeline.js';
import type { MemorySink } from './memory-sink.js';
import { openPipelineRig } from './pipeline-rig.js';
import type { PipelineRig } from './pipeline-rig.js';
import { batch, legacyBatch, nonceOf, reading, readings, T0 } from './fixtures.js';

interface Rig {
  pipeline: Pipeline;
  sink: MemorySink;
  acks: Ack[];
  accounting: Accounting;
  dedupe: DedupeStore;
  deadLetters: DeadLetterStore;
  send(gatewayId: string, batchId: number, items: readonly unknown[]): ReturnType<Pipeline['accept']>;
}

const open: { dir: string; rig: PipelineRig }[] = [];

function rig(options: { dir?: string; queue?: QueueBounds; acceptBatchesWithoutNonce?: boolean } = {}): Rig {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'ferry-pipeline-'));
  const r = openPipelineRig({
    dir,
    now: T0 + 60_000,
    ...(options.queue ? { queue: options.queue } : {}),
    ...(options.acceptBatchesWithoutNonce !== undefined ? { acceptBatchesWithoutNonce: options.acceptBatchesWithoutNonce } : {}),
  });
  open.push({ dir, rig: r });
  return {
    ...r,
    send: (gatewayId, batchId, items) => r.pipeline.accept(uplinkTopics.batch(gatewayId), batch(gatewayId, batchId, items)),
  };
}

async function shutdown(r: Rig): Promise<void> {
  await r.pipeline.stop(1000);
  r.dedupe.close();
  r.deadLetters.close();
}

afterEach(async () => {
  for (const o of open.splice(0)) {
    await o.rig.close(100);
    rmSync(o.dir, { recursive: true, force: true });
  }
});

function ackFor(r: Rig, batchId: number): Promise<Ack> {
  return waitFor(() => r.acks.find((a) => a.batchId === batchId), { timeoutMs: 5000, what: `ack of batch ${batchId}` });
}

describe('pipeline', () => {
  it('writes a batch and acks it with every reading accepted', async () => {
    const r = rig();
    expect(r.send('gw-1', 1, readings(0, 10))).toBe('accepted');
    const ack = await ackFor(r, 1);
    expect(ack).toMatchObject({ v: 2, gatewayId: 'gw-1', batchId: 1, nonce: nonceOf('gw-1', 1), accepted: 10, duplicates: 0, rejected: [] });
    expect(r.sink.points.size).toBe(10);
    expect(r.accounting.byGateway().get('gw-1')).toMatchObject({ received: 10, written: 10, inFlight: 0 });
  });

  it('acks a resent batch as duplicates without writing again', async () => {
    const r = rig();
    r.send('gw-1', 1, readings(0, 10));
    await ackFor(r, 1);
    const calls = r.sink.writeCalls;
    r.send('gw-1', 2, readings(0, 10));
    expect(await ackFor(r, 2)).toMatchObject({ accepted: 0, duplicates: 10, rejected: [] });
    expect(r.sink.writeCalls).toBe(calls);
    expect(r.sink.points.size).toBe(10);
  });

  it('acks a partly written resend: new readings accepted, the rest duplicates', async () => {
    const r = rig();
    r.send('gw-1', 1, readings(0, 5));
    await ackFor(r, 1);
    r.send('gw-1', 2, readings(0, 8));
    expect(await ackFor(r, 2)).toMatchObject({ accepted: 3, duplicates: 5 });
    expect(r.sink.points.size).toBe(8);
  });

  it('lets a resend that arrives while the first copy is still being written wait for it', async () => {
    const r = rig();
    r.sink.down = true;
    r.send('gw-1', 1, readings(0, 4));
    await r.sink.nextWrite();
    r.send('gw-1', 2, readings(0, 4));
    expect(r.acks).toEqual([]);
    r.sink.down = false;
    expect(await ackFor(r, 1)).toMatchObject({ accepted: 4, duplicates: 0 });
    expect(await ackFor(r, 2)).toMatchObject({ accepted: 0, duplicates: 4 });
    expect(r.sink.points.size).toBe(4);
    expect(r.accounting.byGateway().get('gw-1')).toMatchObject({ received: 8, written: 4, duplicates: 4, inFlight: 0 });
  });

  it('counts the same seq twice in one batch once as written and once as duplicate', async () => {
    const r = rig();
    r.send('gw-1', 1, [reading(1), reading(1)]);
    expect(await ackFor(r, 1)).toMatchObject({ accepted: 1, duplicates: 1 });
  });

  it('writes the good readings of a mixed batch and dead-letters the bad ones', async () => {
    const r = rig();
    const items = [reading(0), { ...reading(1), metrics: 'hot' }, reading(2), { nonsense: true }, reading(4, { ts: T0 + 86_400_000 })];
    r.send('gw-1', 1, items);
    const ack = await ackFor(r, 1);
    expect(ack.accepted).toBe(2);
    expect(ack.rejected).toEqual([
      { seq: 1, code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: expect.stringContaining('metrics') as string },
      { seq: null, code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: expect.any(String) as string },
      { seq: 4, code: 'FERRY_ERR_TIMESTAMP_SKEW', reason: expect.any(String) as string },
    ]);
    expect(r.sink.points.size).toBe(2);
    const letters = r.deadLetters.list();
    expect(letters.map((l) => [l.source.seq, l.code])).toEqual([
      [1, 'FERRY_ERR_PAYLOAD_SCHEMA'],
      [undefined, 'FERRY_ERR_PAYLOAD_SCHEMA'],
      [4, 'FERRY_ERR_TIMESTAMP_SKEW'],
    ]);
    expect(letters[0]?.source).toMatchObject({ gatewayId: 'gw-1', deviceId: 'dev-1', seq: 1 });
    expect(letters[0]?.issues?.length).toBeGreaterThan(0);
    expect(JSON.parse(letters[0]!.payload.toString('utf8'))).toEqual(items[1]);

    // A resend is refused the same way without filing the dead letters again.
    r.send('gw-1', 2, items);
    const again = await ackFor(r, 2);
    expect(again).toMatchObject({ accepted: 0, duplicates: 2 });
    expect(again.rejected.map((x) => x.seq)).toEqual([1, null, 4]);
    // The reading without a seq cannot be recognised, so it is filed again.
    expect(r.deadLetters.list()).toHaveLength(4);
    expect(imbalances(r.accounting.byGateway())).toEqual([]);
  });

  it('dead-letters a seq reused with different content instead of merging it', async () => {
    const r = rig();
    r.send('gw-1', 1, [reading(7)]);
    await ackFor(r, 1);
    r.send('gw-1', 2, [reading(7, { metrics: { temperature: -40 } })]);
    const ack = await ackFor(r, 2);
    expect(ack.rejected).toEqual([{ seq: 7, code: 'FERRY_ERR_DUPLICATE_CONFLICT', reason: expect.any(String) as string }]);
    expect([...r.sink.points.values()][0]?.fields).toMatchObject({ temperature: 20.7 });
    expect(r.deadLetters.list({ code: 'FERRY_ERR_DUPLICATE_CONFLICT' })).toHaveLength(1);
  });

  it('dead-letters points the database refuses with its reason and acks the rest', async () => {
    const r = rig();
    r.sink.refuse = (p) => (p.fields.bad !== undefined ? 'field type conflict: bad is string, was float' : undefined);
    r.send('gw-1', 1, [reading(0), reading(1, { metrics: { bad: 'x' } }), reading(2)]);
    const ack = await ackFor(r, 1);
    expect(ack).toMatchObject({ accepted: 2, rejected: [{ seq: 1, code: 'FERRY_ERR_SINK_REJECTED', reason: 'field type conflict: bad is string, was float' }] });
    const [letter] = r.deadLetters.list({ code: 'FERRY_ERR_SINK_REJECTED' });
    expect(letter).toMatchObject({ reason: 'field type conflict: bad is string, was float', source: { gatewayId: 'gw-1', seq: 1 } });
  });

  it('dead-letters an unreadable envelope and acks it with one refusal when it names its batch', async () => {
    const r = rig();
    const nonce = nonceOf('gw-1', 4);
    const payload = Buffer.from(JSON.stringify({ v: 2, gatewayId: 'gw-1', batchId: 4, sentAt: 1, nonce, compression: 'gzip', data: 'not gzip' }));
    expect(r.pipeline.accept(uplinkTopics.batch('gw-1'), payload)).toBe('envelope-invalid');
    expect(r.acks).toEqual([expect.objectContaining({ v: 2, batchId: 4, nonce, accepted: 0, duplicates: 0, rejected: [{ seq: null, code: 'FERRY_ERR_ENVELOPE_INVALID', reason: expect.any(String) as string }] })]);
    expect(r.pipeline.accept(uplinkTopics.batch('gw-1'), Buffer.from('not json'))).toBe('envelope-invalid');
    expect(r.acks).toHaveLength(1);
    const letters = r.deadLetters.list({ code: 'FERRY_ERR_ENVELOPE_INVALID' });
    expect(letters).toHaveLength(2);
    expect(letters[0]?.payload.equals(payload)).toBe(true);
    expect(r.accounting.totals().received).toBe(0);
  });

  it('refuses a v1 batch (no nonce) by default: dead-lettered, acked in v1 so an old gateway stops resending', async () => {
    const r = rig();
    const payload = legacyBatch('gw-1', 5, readings(0, 3));
    expect(r.pipeline.accept(uplinkTopics.batch('gw-1'), payload)).toBe('envelope-invalid');
    expect(r.acks).toEqual([{ v: 1, gatewayId: 'gw-1', batchId: 5, accepted: 0, duplicates: 0, rejected: [{ seq: null, code: 'FERRY_ERR_ENVELOPE_INVALID', reason: expect.stringContaining('no nonce') as string }], ackedAt: expect.any(Number) as number }]);
    const [letter] = r.deadLetters.list({ code: 'FERRY_ERR_ENVELOPE_INVALID' });
    expect(letter?.reason).toContain('acceptBatchesWithoutNonce');
    expect(letter?.payload.equals(payload)).toBe(true);
    expect(r.sink.points.size).toBe(0);
  });

  it('takes a v1 batch during a transition when acceptBatchesWithoutNonce is on, and acks it in v1', async () => {
    const r = rig({ acceptBatchesWithoutNonce: true });
    expect(r.pipeline.accept(uplinkTopics.batch('gw-1'), legacyBatch('gw-1', 5, readings(0, 3)))).toBe('accepted');
    const ack = await ackFor(r, 5);
    expect(ack).toMatchObject({ v: 1, accepted: 3 });
    expect(ack).not.toHaveProperty('nonce');
    expect(r.sink.points.size).toBe(3);
  });

  it("refuses every reading of an envelope that names another gateway than its topic, acking the topic's gateway", async () => {
    const r = rig();
    r.pipeline.accept(uplinkTopics.batch('gw-1'), batch('gw-2', 1, readings(0, 2)));
    const ack = await ackFor(r, 1);
    expect(ack).toMatchObject({ gatewayId: 'gw-1', accepted: 0 });
    expect(ack.rejected.map((x) => x.code)).toEqual(['FERRY_ERR_ENVELOPE_INVALID', 'FERRY_ERR_ENVELOPE_INVALID']);
    expect(r.sink.points.size).toBe(0);
  });

  it('sheds a batch unacked when the queue is full and takes it again once there is room', async () => {
    const r = rig({ queue: { maxBatches: 1, maxReadings: 1000 } });
    r.sink.down = true;
    expect(r.send('gw-1', 1, readings(0, 2))).toBe('accepted');
    expect(r.send('gw-1', 2, readings(2, 2))).toBe('shed');
    r.sink.down = false;
    await ackFor(r, 1);
    expect(r.acks.map((a) => a.batchId)).toEqual([1]);
    expect(r.send('gw-1', 2, readings(2, 2))).toBe('accepted');
    expect(await ackFor(r, 2)).toMatchObject({ accepted: 2 });
  });

  it('replays a dead-lettered reading once the database accepts it, and marks it replayed', async () => {
    const r = rig();
    r.sink.refuse = () => 'schema conflict';
    r.send('gw-1', 1, [reading(3)]);
    await ackFor(r, 1);
    const [letter] = r.deadLetters.list();
    r.sink.refuse = () => undefined;
    expect(await r.pipeline.replay(letter!.id, 5000)).toEqual({ outcome: 'written', id: letter!.id });
    expect(r.sink.points.size).toBe(1);
    expect(r.deadLetters.get(letter!.id)?.replayedAt).not.toBeNull();
    // Replaying again finds it written; a resend from the gateway is now a duplicate.
    expect(await r.pipeline.replay(letter!.id, 5000)).toMatchObject({ outcome: 'duplicate' });
    r.send('gw-1', 2, [reading(3)]);
    expect(await ackFor(r, 2)).toMatchObject({ duplicates: 1, rejected: [] });
  });

  it('does not replay over a conflicting write, nor what is not a reading', async () => {
    const r = rig();
    r.send('gw-1', 1, [reading(7)]);
    r.send('gw-1', 2, [reading(7, { metrics: { temperature: -40 } })]);
    await ackFor(r, 2);
    const [conflict] = r.deadLetters.list({ code: 'FERRY_ERR_DUPLICATE_CONFLICT' });
    expect(await r.pipeline.replay(conflict!.id, 1000)).toMatchObject({ outcome: 'rejected', code: 'FERRY_ERR_DUPLICATE_CONFLICT' });
    r.pipeline.accept(uplinkTopics.batch('gw-1'), Buffer.from('not json'));
    const [envelope] = r.deadLetters.list({ code: 'FERRY_ERR_ENVELOPE_INVALID' });
    expect(await r.pipeline.replay(envelope!.id, 1000)).toMatchObject({ outcome: 'unreplayable' });
    expect(await r.pipeline.replay(9999, 1000)).toMatchObject({ outcome: 'not-found' });
  });

  it('still dedupes after a restart on the same files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-pipeline-'));
    const first = rig({ dir });
    first.send('gw-1', 1, readings(0, 5));
    await ackFor(first, 1);
    await shutdown(first);
    open.splice(0);
    const second = rig({ dir });
    second.send('gw-1', 1, readings(0, 6));
    expect(await ackFor(second, 1)).toMatchObject({ accepted: 1, duplicates: 5 });
  });

  it('keeps the books balanced through writes, duplicates, refusals and an outage', async () => {
    const r = rig();
    r.sink.down = true;
    r.send('gw-1', 1, readings(0, 20));
    r.send('gw-2', 1, [...readings(0, 3), { broken: 1 }]);
    await r.sink.nextWrite();
    const during = r.accounting.totals();
    expect(during).toMatchObject({ received: 24, rejected: 1, inFlight: 23 });
    expect(imbalances(r.accounting.byGateway())).toEqual([]);
    r.sink.down = false;
    await ackFor(r, 1);
    await waitFor(() => r.acks.length === 2);
    r.send('gw-1', 2, readings(10, 20));
    await ackFor(r, 2);
    expect(r.accounting.totals()).toMatchObject({ received: 44, written: 33, duplicates: 10, rejected: 1, inFlight: 0 });
    expect(imbalances(r.accounting.byGateway())).toEqual([]);
    expect(r.sink.points.size).toBe(33);
  });
});
