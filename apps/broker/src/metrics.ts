// The broker's Prometheus metrics, all prefixed ferry_broker_.
import { Counter, Gauge } from '@ferry/runtime';
import type { Registry } from '@ferry/runtime';

export interface BrokerMetrics {
  readonly connects: Counter;
  readonly authFailures: Counter;
  readonly messagesIn: Counter<'qos'>;
  readonly bytesIn: Counter;
  readonly refused: Counter<'reason'>;
  readonly denied: Counter<'action'>;
  readonly connectionsRefused: Counter<'reason'>;
  readonly connectionErrors: Counter;
  readonly clusterErrors: Counter;
  readonly messagesOut: Counter<'qos'>;
  readonly bytesOut: Counter;
  readonly dropped: Counter<'reason'>;
  /** Persistence writes that failed because the disk was full. */
  readonly storageFull: Counter;
}

/** Rows held by the SQLite persistence; undefined with memory persistence (the gauges stay absent). */
export type StoredCounts = () => { retained: number; outgoing: number; incoming: number } | undefined;

export function createBrokerMetrics(
  registry: Registry,
  connections: () => number,
  stored: StoredCounts = () => undefined,
  storageFull: () => boolean = () => false,
): BrokerMetrics {
  new Gauge({
    name: 'ferry_broker_storage_full',
    help: '1 while SQLite persistence writes fail for lack of space (and for a few seconds after the last failure); QoS 1 publishes are not PUBACKed meanwhile',
    registers: [registry],
    collect() {
      this.set(storageFull() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'ferry_broker_retained_messages',
    help: 'Retained messages stored (SQLite persistence)',
    registers: [registry],
    collect() {
      const counts = stored();
      if (counts) this.set(counts.retained);
    },
  });
  new Gauge({
    name: 'ferry_broker_inflight_messages',
    help: 'QoS 1/2 messages stored and not yet acknowledged: outgoing (queued or sent to subscribers) and incoming QoS 2 awaiting PUBREL',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      const counts = stored();
      if (!counts) return;
      this.set({ direction: 'outgoing' }, counts.outgoing);
      this.set({ direction: 'incoming' }, counts.incoming);
    },
  });
  new Gauge({
    name: 'ferry_broker_connections',
    help: 'MQTT clients connected now',
    registers: [registry],
    collect() {
      this.set(connections());
    },
  });
  return {
    connects: new Counter({ name: 'ferry_broker_connects_total', help: 'MQTT connections accepted', registers: [registry] }),
    authFailures: new Counter({
      name: 'ferry_broker_auth_failures_total',
      help: 'MQTT connections refused for bad or missing credentials',
      registers: [registry],
    }),
    messagesIn: new Counter({
      name: 'ferry_broker_messages_in_total',
      help: 'PUBLISH packets received from clients, by QoS',
      labelNames: ['qos'],
      registers: [registry],
    }),
    bytesIn: new Counter({ name: 'ferry_broker_bytes_in_total', help: 'Payload bytes received from clients', registers: [registry] }),
    refused: new Counter({
      name: 'ferry_broker_publishes_refused_total',
      help: 'PUBLISH packets refused, by reason',
      labelNames: ['reason'],
      registers: [registry],
    }),
    denied: new Counter({
      name: 'ferry_broker_acl_denied_total',
      help: 'PUBLISH or SUBSCRIBE requests, and deliveries to a subscriber, denied by the ACL, never relayed',
      labelNames: ['action'],
      registers: [registry],
    }),
    connectionsRefused: new Counter({
      name: 'ferry_broker_connections_refused_total',
      help: 'Transport connections closed on accept, by reason',
      labelNames: ['reason'],
      registers: [registry],
    }),
    messagesOut: new Counter({
      name: 'ferry_broker_messages_out_total',
      help: 'PUBLISH packets handed to subscribers, by the QoS they were published with',
      labelNames: ['qos'],
      registers: [registry],
    }),
    bytesOut: new Counter({ name: 'ferry_broker_bytes_out_total', help: 'Payload bytes handed to subscribers', registers: [registry] }),
    dropped: new Counter({
      name: 'ferry_broker_messages_dropped_total',
      help: 'Messages not delivered to a subscriber, by reason (slow_subscriber: QoS 0 to a backed-up socket)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    connectionErrors: new Counter({
      name: 'ferry_broker_connection_errors_total',
      help: 'Connections closed for a protocol error before or during CONNECT (garbage bytes, bad packets)',
      registers: [registry],
    }),
    storageFull: new Counter({
      name: 'ferry_broker_storage_full_total',
      help: 'SQLite persistence writes that failed because the disk was full',
      registers: [registry],
    }),
    clusterErrors: new Counter({
      name: 'ferry_broker_cluster_redis_errors_total',
      help: 'Errors on the cluster emitter\'s Redis connections (each is followed by a reconnect)',
      registers: [registry],
    }),
  };
}
