// The least an ingestor process can do with the same batches (bench/ingestor.mjs): an MQTT.js
// subscriber that parses each batch envelope, writes every reading as a line of line protocol,
// POSTs 5,000 lines a request (two in flight) to VictoriaMetrics and, once a batch's lines are
// confirmed (204), publishes its ack. Nothing else: no validation, no dedupe, no records, no
// health, no accounting, no dead letters, no metrics. Its CPU per reading is the floor any
// ingestor on this machine sits on, beside the real one's.
//
//   node bench/lib/bare-ingestor.mjs <mqtt url> <victoria url> <measurement> <gateway> [<gateway> ...]
//
// Prints "ready" on stdout once subscribed. Not a product: the bench's yardstick only.
import mqtt from 'mqtt';
import { uplinkTopics } from '@ferry/protocol';

const [mqttUrl, vmUrl, measurement, ...gateways] = process.argv.slice(2);
const LINES_PER_REQUEST = 5000;
const IN_FLIGHT = 2;

const client = await mqtt.connectAsync(mqttUrl, { protocolVersion: 4, clientId: 'bench-bare-ingestor', clean: true });

/** Lines not yet POSTed, and the batches whose last line is among them. */
let lines = [];
let closing = [];
const queue = [];
let posting = 0;
/**
 * Requests in order: a batch is acked once its last line's request and every request before it
 * were confirmed (its first lines may have gone in an earlier one).
 */
const requests = [];
let firstOpen = 0;

function ackConfirmed() {
  while (firstOpen < requests.length && requests[firstOpen].confirmed) {
    for (const b of requests[firstOpen].batches) {
      const ack = { v: b.v, gatewayId: b.gatewayId, batchId: b.batchId, nonce: b.nonce, accepted: b.count, duplicates: 0, rejected: [], ackedAt: Date.now() };
      client.publish(uplinkTopics.ack(b.gatewayId), JSON.stringify(ack), { qos: 1 });
    }
    requests[firstOpen] = undefined;
    firstOpen++;
  }
}

function send() {
  while (posting < IN_FLIGHT && queue.length > 0) {
    const request = queue.shift();
    posting++;
    fetch(`${vmUrl}/api/v2/write?org=ferry&bucket=ferry&precision=ns`, { method: 'POST', body: request.body, headers: { 'content-type': 'text/plain; charset=utf-8' } }).then(
      async (res) => {
        await res.arrayBuffer();
        posting--;
        if (res.status !== 204) throw new Error(`VictoriaMetrics answered ${res.status}`);
        request.confirmed = true;
        request.body = undefined;
        ackConfirmed();
        send();
      },
      (err) => {
        process.stderr.write(`${err.stack}\n`);
        process.exit(1);
      },
    );
  }
}

function cut() {
  if (lines.length === 0) return;
  const request = { body: lines.join('\n'), batches: closing, confirmed: false };
  requests.push(request);
  queue.push(request);
  lines = [];
  closing = [];
  send();
}

let flushScheduled = false;
client.on('message', (_topic, payload) => {
  const env = JSON.parse(payload.toString('utf8'));
  const gatewayTag = `,gateway=${env.gatewayId}`;
  for (const r of env.readings) {
    let line = `${measurement},device=${r.deviceId}${gatewayTag}`;
    let separator = ' ';
    for (const key in r.metrics) {
      line += `${separator}${key}=${r.metrics[key]}`;
      separator = ',';
    }
    // Cut before a line is added, not after: a batch is in `closing` before its last line's request is cut.
    if (lines.length >= LINES_PER_REQUEST) cut();
    lines.push(`${line} ${r.ts}000000`);
  }
  closing.push({ v: env.v, gatewayId: env.gatewayId, batchId: env.batchId, nonce: env.nonce, count: env.readings.length });
  // What is left once the messages that came together are read goes in a shorter request.
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(() => {
      flushScheduled = false;
      cut();
    });
  }
});

await client.subscribeAsync(gateways.map((g) => uplinkTopics.batch(g)), { qos: 1 });
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  client.end(true, () => process.exit(0));
});
