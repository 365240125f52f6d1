// The broker's Prometheus metrics, all prefixed ferry_broker_.
import { Counter, Gauge } from '@ferry/runtime';
import type { Registry } from '@ferry/runtime';

export interface BrokerMetrics {
  readonly connects: Counter;
  readonly authFailures: Counter;
  readonly messagesIn: Counter<'qos'>;
  readonly bytesIn: Counter;
  readonly refused: Counter<'reason'>;
}

export function createBrokerMetrics(registry: Registry, connections: () => number): BrokerMetrics {
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
  };
}
