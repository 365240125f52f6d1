// Quick loop for profiling: the in-process stages of bench/ingestor.mjs alone (no Mosquitto, no database).
import { BATCH_VERSION, encodeBatch, newBatchNonce, uplinkTopics } from '@ferry/protocol';
import { measureStages } from './ingestor-stages.mjs';
const T0 = Math.floor(Date.now() / 1000) * 1000 - 3_600_000;
const envelopes = [];
for (let b = 0; b < 25; b++) for (let gi = 0; gi < 4; gi++) {
  const g = `bench-gw-${gi}`;
  const items = Array.from({ length: 1000 }, (_, i) => { const seq = b * 1000 + i; return { seq, deviceId: `dev-${g}-${seq % 50}`, kind: 'telemetry', ts: T0 + seq * 10, tsSource: 'device', receivedAt: T0 + seq * 10 + 3, metrics: { temperature: 20 + (seq % 100) / 10 } }; });
  envelopes.push({ topic: uplinkTopics.batch(g), gatewayId: g, payload: encodeBatch({ v: BATCH_VERSION, gatewayId: g, batchId: b + 1, sentAt: Date.now(), nonce: newBatchNonce() }, items) });
}
console.log(JSON.stringify(await measureStages(envelopes, 100_000, Number(process.argv[2] ?? 5))));
