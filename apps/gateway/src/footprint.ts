// Process-wide memory settings for a gateway on a small device, applied once by the process that
// runs it (`ferry gateway`), before any MQTT packet is written.
//
// mqtt-packet (under both aedes and MQTT.js) keeps, by default, a ready-made 2-byte Buffer for each
// of the 65,536 packet ids and lengths it may write: about 6.5 MB of heap on the gateway, over 6% of
// a Pi gateway's whole footprint, to save allocating two bytes per packet. Writing the numbers as
// needed costs nothing measurable at a gateway's rates.
import { writeToStream } from 'mqtt-packet';

export function applyGatewayFootprint(): void {
  writeToStream.cacheNumbers = false;
}
