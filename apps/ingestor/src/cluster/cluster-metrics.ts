// Prometheus metrics of the shared state, ferry_ingestor_cluster_*, read from the cluster's
// counters at scrape time (cluster-state.ts). Fleet-wide counts (readings written across every
// ingestor) are not here: each ingestor would export the same totals and a sum over the scrape
// targets would count them N times; they are in GET /api/fleet/counts.
import { Counter, Gauge } from '@ferry/runtime';
import type { Registry } from '@ferry/runtime';
import type { ClusterStats } from './cluster-state.js';

export function registerClusterMetrics(registry: Registry, stats: () => ClusterStats): void {
  new Gauge({
    name: 'ferry_ingestor_cluster_members',
    help: 'Ingestors of the deployment alive in Redis, as this one last heard (itself included)',
    registers: [registry],
    collect() {
      this.set(stats().members.length);
    },
  });
  new Gauge({
    name: 'ferry_ingestor_cluster_gateways_held',
    help: 'Gateways whose lease this ingestor holds now (it writes their batches)',
    registers: [registry],
    collect() {
      this.set(stats().gatewaysHeld);
    },
  });
  new Gauge({
    name: 'ferry_ingestor_cluster_batches_waiting',
    help: 'Batches waiting for their gateway lease',
    registers: [registry],
    collect() {
      this.set(stats().waiting);
    },
  });
  new Counter({
    name: 'ferry_ingestor_cluster_batches_left_total',
    help: 'Batches left unread to another ingestor, by reason (not-preferred: another one is the gateway\'s; lease-busy: another held it past the wait; closing); their gateways resend them',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(stats().dropped)) this.inc({ reason }, n);
    },
  });
  new Counter({
    name: 'ferry_ingestor_cluster_acks_withheld_total',
    help: 'Acks not sent because their dedupe records did not reach Redis (the gateways resend)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats().acksWithheld);
    },
  });
}
