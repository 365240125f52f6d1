// Process-wide memory settings for a gateway on a small device, applied once by the process that
// runs it (`ferry gateway`), before any MQTT packet is written.
//
// mqtt-packet (under both aedes and MQTT.js) keeps, by default, a ready-made 2-byte Buffer for each
// of the 65,536 packet ids and lengths it may write: about 6.5 MB of heap on the gateway, over 6% of
// a Pi gateway's whole footprint, to save allocating two bytes per packet. Writing the numbers as
// needed costs about 0.1 µs of CPU per PUBACK, under 0.5% of a reading's (measured, issue #19); the
// ids cycle through the whole range, so caching only some of them would save next to nothing.
//
// V8's heap policy is heap-policy.ts's, applied from here too (and earlier by `ferry gateway`).
import { writeToStream } from 'mqtt-packet';
import { applyGatewayHeapPolicy } from './heap-policy.js';

export function applyGatewayFootprint(): void {
  writeToStream.cacheNumbers = false;
  applyGatewayHeapPolicy();
}
