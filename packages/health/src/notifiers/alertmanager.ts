// The Alertmanager webhook payload (version 4), so receivers written for Prometheus accept ours.
import { createHash } from 'node:crypto';
import type { Alert } from '../alerts.js';
import type { AlertNotification } from '../alerts.js';

/** Alertmanager's "no end time" marker. */
const ZERO_TIME = '0001-01-01T00:00:00Z';

export interface AlertmanagerAlert {
  readonly status: 'firing' | 'resolved';
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
  readonly startsAt: string;
  readonly endsAt: string;
  readonly generatorURL: string;
  readonly fingerprint: string;
}

export interface AlertmanagerPayload {
  readonly version: '4';
  readonly groupKey: string;
  readonly truncatedAlerts: number;
  readonly status: 'firing' | 'resolved';
  readonly receiver: string;
  readonly groupLabels: Record<string, string>;
  readonly commonLabels: Record<string, string>;
  readonly commonAnnotations: Record<string, string>;
  readonly externalURL: string;
  readonly alerts: readonly AlertmanagerAlert[];
}

export function alertmanagerAlert(status: 'firing' | 'resolved', alert: Alert, externalURL = ''): AlertmanagerAlert {
  const labels = { ...alert.labels, alertname: alert.rule, severity: alert.severity };
  return {
    status,
    labels,
    annotations: { summary: alert.summary, ...(alert.value !== undefined ? { value: String(alert.value) } : {}) },
    startsAt: new Date(alert.firingAt ?? alert.startsAt).toISOString(),
    endsAt: status === 'resolved' && alert.endsAt !== undefined ? new Date(alert.endsAt).toISOString() : ZERO_TIME,
    generatorURL: externalURL ? `${externalURL.replace(/\/$/, '')}/#/alerts/${alert.id}` : '',
    fingerprint: createHash('sha256').update(alert.key).digest('hex').slice(0, 16),
  };
}

function common(maps: readonly Record<string, string>[]): Record<string, string> {
  const [first, ...rest] = maps;
  if (!first) return {};
  return Object.fromEntries(Object.entries(first).filter(([k, v]) => rest.every((m) => m[k] === v)));
}

export function alertmanagerPayload(batch: readonly AlertNotification[], options: { receiver?: string; externalURL?: string } = {}): AlertmanagerPayload {
  const alerts = batch.map((n) => alertmanagerAlert(n.status, n.alert, options.externalURL));
  return {
    version: '4',
    groupKey: '{}:{}',
    truncatedAlerts: 0,
    status: alerts.some((a) => a.status === 'firing') ? 'firing' : 'resolved',
    receiver: options.receiver ?? 'ferry',
    groupLabels: {},
    commonLabels: common(alerts.map((a) => a.labels)),
    commonAnnotations: common(alerts.map((a) => a.annotations)),
    externalURL: options.externalURL ?? '',
    alerts,
  };
}
