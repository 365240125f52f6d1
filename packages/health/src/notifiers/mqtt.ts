// MQTT notifier: each alert change as JSON (the Alertmanager alert shape) on `<topic>/<rule>/<subject>`,
// at QoS 1. It takes an already connected client (MQTT.js's fits) so it adds no connection of its own.
import { alertmanagerAlert } from './alertmanager.js';
import type { Notifier } from './notifier.js';

export interface AlertPublisher {
  publishAsync(topic: string, message: string | Buffer, options: { qos: 0 | 1 | 2; retain?: boolean }): Promise<unknown>;
}

export interface MqttNotifierOptions {
  readonly client: AlertPublisher;
  /** Topic prefix, e.g. `ferry/alerts`. */
  readonly topic: string;
  /** Retained: a subscriber joining later sees the latest state of each alert. */
  readonly retain?: boolean;
}

/** MQTT topic levels cannot carry wildcards; device ids may hold `/`, which is kept as levels. */
function level(text: string): string {
  return text.replace(/[#+]/g, '_');
}

export function createMqttNotifier(options: MqttNotifierOptions): Notifier {
  return {
    name: 'mqtt',
    async notify(batch) {
      for (const { status, alert } of batch) {
        const topic = `${options.topic}/${level(alert.rule)}/${level(alert.subject.id)}`;
        await options.client.publishAsync(topic, JSON.stringify(alertmanagerAlert(status, alert)), { qos: 1, retain: options.retain ?? false });
      }
    },
  };
}
