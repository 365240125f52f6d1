// A compromised Pi that can publish on another gateway's ack topic (and read its acks) tries to
// make it delete readings the database never got: every reading a device was PUBACKed for must
// still land exactly once (issue #22: acks that cannot be forged blind).
import { join } from 'node:path';
import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import { BATCH_VERSION, decodeAck, encodeAck, LEGACY_BATCH_VERSION, newBatchNonce, uplinkTopics } from '@ferry/protocol';
import type { Ack } from '@ferry/protocol';
import { createSqliteSink } from '@ferry/sinks';
import { waitFor } from '@ferry/testkit';
import { BASE_TS, deviceId, drained, expectedTemperature, publishReadings, startStack } from './stack.js';

const GATEWAY_ID = 'gw-victim';
const DEVICES = 5;
const READINGS = 200;
/** Marks the attacker's own acks, which it also receives, so it does not answer them. */
const FORGED_AT = -1;

/** Sums the samples of one metric in a Prometheus text exposition, optionally of one label value. */
function metricValue(text: string, name: string, label?: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (label !== undefined && !line.includes(label)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('forged acks', () => {
  it("keep every PUBACKed reading: a site's readings survive an attacker forging and replaying acks for every plausible batch id", async () => {
    // An ingestor that holds one batch at a time sheds the others unacked, so batches wait for a
    // resend: the window in which a forged ack would delete readings the database never got.
    const stack = await startStack({
      gatewayId: GATEWAY_ID,
      gateway: { batch: { maxReadings: 10, lingerMs: 5 }, uplink: { ackTimeoutMs: 300 } },
      ingestor: { queue: { maxBatches: 1, maxReadings: 10 } },
    });
    const pointsPath = join(stack.dataDir, 'ingestor', 'points.db');
    const attacker = await mqtt.connectAsync(stack.broker!.url!, { protocolVersion: 4, clientId: 'compromised-pi', reconnectPeriod: 0 });
    const ackTopic = uplinkTopics.ack(GATEWAY_ID);
    let highestSeen = 0;
    let forging = true;
    const replayed = new Set<string>();
    const ignored = new Map<string, number>();

    // What an attacker who knows (or guesses) a batch id but not its nonce can write: an ack that
    // refuses the whole envelope (which would delete every reading of it), one that claims them
    // all written, and a v1 ack without any nonce.
    const forge = (batchId: number): Promise<unknown> => {
      const base = { gatewayId: GATEWAY_ID, batchId, duplicates: 0, ackedAt: FORGED_AT };
      const acks: Ack[] = [
        { ...base, v: BATCH_VERSION, nonce: newBatchNonce(), accepted: 0, rejected: [{ seq: null, code: 'FERRY_ERR_ENVELOPE_INVALID', reason: 'forged' }] },
        { ...base, v: BATCH_VERSION, nonce: newBatchNonce(), accepted: 10, rejected: [] },
        { ...base, v: LEGACY_BATCH_VERSION, accepted: 0, rejected: [{ seq: null, code: 'FERRY_ERR_ENVELOPE_INVALID', reason: 'forged' }] },
      ];
      return Promise.all(acks.map((a) => attacker.publishAsync(ackTopic, encodeAck(a), { qos: 1 })));
    };

    // It reads the victim's genuine acks (not its batches, which carry the nonces): each one is
    // replayed, and names the batch ids likely in flight next.
    attacker.on('message', (_topic, payload) => {
      const ack = decodeAck(payload);
      if (!ack || ack.ackedAt === FORGED_AT || !forging) return;
      highestSeen = Math.max(highestSeen, ack.batchId);
      const key = payload.toString('utf8');
      if (!replayed.has(key)) {
        replayed.add(key);
        void attacker.publishAsync(ackTopic, payload, { qos: 1 }).catch(() => undefined);
      }
      for (let b = ack.batchId + 1; b <= ack.batchId + 8; b++) void forge(b).catch(() => undefined);
    });
    await attacker.subscribeAsync(ackTopic, { qos: 1 });

    try {
      // Batch ids are sequential from the outbox's creation time, so any id near the last one
      // acked is a plausible one; the attacker keeps forging those while readings flow.
      const sweeping = (async () => {
        while (forging) {
          const last = highestSeen;
          if (last > 0) for (let b = last - 4; b <= last + 16; b++) await forge(b);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      const acked = await publishReadings(stack.gateway.deviceUrl!, DEVICES, READINGS);
      expect(acked).toBe(DEVICES * READINGS);
      await drained(stack.gateway, 60_000);
      forging = false;
      await sweeping;

      // Replayed genuine acks name settled batches: wait until one was seen, then read the counters.
      const metrics = (): Promise<string> => fetch(`${stack.gateway.httpUrl!}/metrics`).then((r) => r.text());
      await waitFor(async () => metricValue(await metrics(), 'ferry_gateway_acks_ignored_total') > 0, { what: 'the attacker\'s acks to be ignored' });
      const text = await metrics();
      for (const reason of ['forged', 'no_nonce', 'unknown']) ignored.set(reason, metricValue(text, 'ferry_gateway_acks_ignored_total', `reason="${reason}"`));
    } finally {
      forging = false;
      await attacker.endAsync(true);
      await stack.gateway.close();
      await stack.ingestor.close();
    }

    const sink = createSqliteSink({ path: pointsPath });
    try {
      const points = sink.query({ measurement: 'telemetry' });
      const got = new Map<string, number>();
      for (const p of points) got.set(`${p.tags.device}@${Number(p.timestampNs / 1_000_000n)}`, p.fields.temperature as number);
      const expected = new Map<string, number>();
      for (let d = 0; d < DEVICES; d++) {
        for (let i = 0; i < READINGS; i++) expected.set(`${deviceId(d)}@${BASE_TS + i * 1000}`, expectedTemperature(d, i));
      }
      expect(points).toHaveLength(DEVICES * READINGS);
      expect(got).toEqual(expected);
    } finally {
      await sink.close();
      await stack.close();
    }
    // The attack did happen, and each kind of ack was told apart.
    expect(ignored.get('forged')).toBeGreaterThan(0);
    expect(ignored.get('no_nonce')).toBeGreaterThan(0);
    expect(ignored.get('unknown')).toBeGreaterThan(0);
  }, 120_000);
});
