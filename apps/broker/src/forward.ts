// The forward step: aedes asks, per subscriber, whether to send it a message. A subscriber that
// stops reading must not stall the others: aedes waits for a socket to drain before it completes
// a delivery, so while a subscriber's socket is backed up its QoS 0 messages are dropped (counted),
// and once more than maxQueuedBytes wait on it the connection is closed (a persistent session
// keeps its QoS 1/2 messages queued for the next connect).
import type { Writable } from 'node:stream';
import type { AedesOptions, Client } from 'aedes';
import type { Logger } from '@ferry/runtime';
import type { BrokerMetrics } from './metrics.js';

export function forwardHook(maxQueuedBytes: number, metrics: BrokerMetrics, logger: Logger): NonNullable<AedesOptions['authorizeForward']> {
  return (client: Client, packet) => {
    const conn = client.conn as Partial<Writable>;
    const size = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
    if (conn.writableNeedDrain === true) {
      if ((conn.writableLength ?? 0) > maxQueuedBytes) {
        metrics.dropped.inc({ reason: 'slow_subscriber_closed' });
        logger.warn({ event: 'slow_subscriber', clientId: client.id, queuedBytes: conn.writableLength, maxQueuedBytes }, 'subscriber not reading; closing its connection');
        conn.destroy?.();
        return packet.qos === 0 ? null : packet;
      }
      if (packet.qos === 0) {
        metrics.dropped.inc({ reason: 'slow_subscriber' });
        return null;
      }
    }
    metrics.messagesOut.inc({ qos: String(packet.qos) });
    metrics.bytesOut.inc(size);
    return packet;
  };
}
