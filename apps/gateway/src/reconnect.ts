// Reconnect pacing for MQTT.js clients: MQTT.js retries at a fixed period, so the period is
// moved before each attempt to an exponential backoff with jitter, and reset once connected.
import { backoffDelay } from '@ferry/runtime';
import type { BackoffPolicy } from '@ferry/runtime';
import type { MqttClient } from 'mqtt';

export function reconnectPolicy(minMs: number, maxMs: number): BackoffPolicy {
  return { initialMs: minMs, maxMs: Math.max(minMs, maxMs), factor: 2 };
}

/** Installs the backoff on a client: growing, jittered delays while down, reset once connected. */
export function paceReconnects(client: MqttClient, policy: BackoffPolicy): void {
  let attempt = 0;
  client.options.reconnectPeriod = backoffDelay(attempt, policy);
  // 'reconnect' fires as an attempt starts; the period set here paces the retry after it fails.
  client.on('reconnect', () => {
    attempt += 1;
    client.options.reconnectPeriod = backoffDelay(attempt, policy);
  });
  client.on('connect', () => {
    attempt = 0;
    client.options.reconnectPeriod = backoffDelay(attempt, policy);
  });
}
