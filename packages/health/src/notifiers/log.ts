// Log notifier: one structured line per alert change, for whoever tails the logs.
import type { Logger } from '@ferry/runtime';
import type { Notifier } from './notifier.js';

export function createLogNotifier(logger: Logger): Notifier {
  return {
    name: 'log',
    notify(batch) {
      for (const { status, alert } of batch) {
        const fields = { alertId: alert.id, rule: alert.rule, severity: alert.severity, subject: alert.subject, value: alert.value, status };
        if (status === 'firing') logger.warn(fields, `alert firing: ${alert.summary}`);
        else logger.info(fields, `alert resolved: ${alert.summary}`);
      }
      return Promise.resolve();
    },
  };
}
