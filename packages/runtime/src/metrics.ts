// Prometheus metrics: each component registers on a Registry it is given, so several
// components in one process (the demo) can share one /metrics without name clashes.
import { Registry, collectDefaultMetrics } from 'prom-client';

export { Registry, Counter, Gauge, Histogram } from 'prom-client';

export function createRegistry(options: { defaultMetrics?: boolean; prefix?: string } = {}): Registry {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: options.prefix ?? 'ferry_' });
  return registry;
}
