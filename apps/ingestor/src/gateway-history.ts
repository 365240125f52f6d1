// Each gateway's backlog, drops and disk over time, from the statuses it publishes (about one per
// 10 s), for the gateway page's chart. Bounded: per gateway at most `maxSamples`, none older than
// `spanMs`; when full, the older half is merged pairwise, so the recent past keeps the status
// interval and older hours get coarser (each merge halves their resolution). Pure; times are passed in.
import type { GatewayStatus } from '@ferry/protocol';

/** One point of a gateway's history: one status, or several merged. */
export interface GatewaySample {
  /** When the (last merged) status was received, epoch ms. */
  readonly at: number;
  /** Readings in the outbox (the largest of those merged); null when the status did not say. */
  readonly backlog: number | null;
  readonly outboxBytes: number | null;
  /** Age of the oldest unsent reading at `at`, ms (the largest merged). */
  readonly oldestUnsentMs: number | null;
  /** Readings dropped at the gateway since its outbox was created, all reasons (a counter: the last merged). */
  readonly droppedTotal: number | null;
  readonly diskFreeBytes: number | null;
  readonly diskTotalBytes: number | null;
  readonly state: 'online' | 'offline';
  /** Statuses this point stands for. */
  readonly statuses: number;
}

export interface GatewayHistoryOptions {
  /** How far back a gateway's history goes. Default 24 h. */
  readonly spanMs?: number;
  /** Points kept per gateway. Default 1440 (a minute each over 24 h once all is merged). */
  readonly maxSamples?: number;
  /** Gateways kept; beyond, the one heard from longest ago is forgotten (counted). Default 10,000. */
  readonly maxGateways?: number;
}

export interface GatewayHistoryCounts {
  readonly gateways: number;
  readonly samples: number;
  /** Statuses folded into a neighbour to stay within maxSamples. */
  readonly merged: number;
  /** Points older than spanMs let go. */
  readonly expired: number;
  /** Gateways forgotten to stay within maxGateways. */
  readonly gatewaysEvicted: number;
}

export const DEFAULT_HISTORY_SPAN_MS = 86_400_000;
export const DEFAULT_HISTORY_SAMPLES = 1440;

/** A status reduced to what the chart shows. */
export function sampleOf(status: GatewayStatus, receivedAt: number): GatewaySample {
  const dropped = status.dropped ? Object.values(status.dropped).reduce((a, b) => a + b, 0) : null;
  return {
    at: receivedAt,
    backlog: status.outbox?.depth ?? null,
    outboxBytes: status.outbox?.bytes ?? null,
    oldestUnsentMs: status.outbox?.oldestTs == null ? null : Math.max(0, receivedAt - status.outbox.oldestTs),
    droppedTotal: dropped,
    diskFreeBytes: status.disk?.freeBytes ?? null,
    diskTotalBytes: status.disk?.totalBytes ?? null,
    state: status.state,
    statuses: 1,
  };
}

const maxOf = (a: number | null, b: number | null): number | null => (a === null ? b : b === null ? a : Math.max(a, b));
const minOf = (a: number | null, b: number | null): number | null => (a === null ? b : b === null ? a : Math.min(a, b));

/** Two neighbours as one point: the worst backlog and disk, the later counter and state. */
export function mergeSamples(older: GatewaySample, newer: GatewaySample): GatewaySample {
  return {
    at: newer.at,
    backlog: maxOf(older.backlog, newer.backlog),
    outboxBytes: maxOf(older.outboxBytes, newer.outboxBytes),
    oldestUnsentMs: maxOf(older.oldestUnsentMs, newer.oldestUnsentMs),
    droppedTotal: newer.droppedTotal ?? older.droppedTotal,
    diskFreeBytes: minOf(older.diskFreeBytes, newer.diskFreeBytes),
    diskTotalBytes: newer.diskTotalBytes ?? older.diskTotalBytes,
    state: newer.state,
    statuses: older.statuses + newer.statuses,
  };
}

export class GatewayHistory {
  private readonly spanMs: number;
  private readonly maxSamples: number;
  private readonly maxGateways: number;
  /** Per gateway, oldest first; Map order is the order gateways were last heard from. */
  private readonly byGateway = new Map<string, GatewaySample[]>();
  private counts = { merged: 0, expired: 0, gatewaysEvicted: 0 };

  constructor(options: GatewayHistoryOptions = {}) {
    this.spanMs = options.spanMs ?? DEFAULT_HISTORY_SPAN_MS;
    this.maxSamples = Math.max(4, options.maxSamples ?? DEFAULT_HISTORY_SAMPLES);
    this.maxGateways = Math.max(1, options.maxGateways ?? 10_000);
  }

  /** Adds a gateway's status as received (call it for the statuses that are kept, statuses.ts). */
  record(status: GatewayStatus, receivedAt: number): void {
    const id = status.gatewayId;
    const samples = this.byGateway.get(id) ?? [];
    this.byGateway.delete(id);
    this.byGateway.set(id, samples);
    const sample = sampleOf(status, receivedAt);
    // A status received out of order (a retained copy after a live one) goes where it belongs.
    let i = samples.length;
    while (i > 0 && samples[i - 1]!.at > sample.at) i--;
    samples.splice(i, 0, sample);
    this.expire(samples, receivedAt);
    if (samples.length > this.maxSamples) this.compact(samples);
    while (this.byGateway.size > this.maxGateways) {
      const oldest = this.byGateway.keys().next().value as string;
      this.byGateway.delete(oldest);
      this.counts.gatewaysEvicted++;
    }
  }

  /** A gateway's points from `since` (epoch ms) on, oldest first; undefined when it has none. */
  samples(gatewayId: string, since: number): readonly GatewaySample[] | undefined {
    const samples = this.byGateway.get(gatewayId);
    if (!samples) return undefined;
    return samples.filter((s) => s.at >= since);
  }

  /** Forgets a gateway (decommissioned: its retained status cleared). */
  forget(gatewayId: string): void {
    this.byGateway.delete(gatewayId);
  }

  stats(): GatewayHistoryCounts {
    let samples = 0;
    for (const s of this.byGateway.values()) samples += s.length;
    return { gateways: this.byGateway.size, samples, ...this.counts };
  }

  private expire(samples: GatewaySample[], now: number): void {
    let n = 0;
    while (n < samples.length && samples[n]!.at < now - this.spanMs) n++;
    if (n > 0) {
      samples.splice(0, n);
      this.counts.expired += n;
    }
  }

  /** Merges the older half pairwise: the newest half keeps its resolution. */
  private compact(samples: GatewaySample[]): void {
    const half = Math.floor(samples.length / 2);
    const merged: GatewaySample[] = [];
    for (let i = 0; i + 1 < half; i += 2) merged.push(mergeSamples(samples[i]!, samples[i + 1]!));
    if (half % 2 === 1) merged.push(samples[half - 1]!);
    this.counts.merged += half - merged.length;
    samples.splice(0, half, ...merged);
  }
}

/** A gateway's history as GET /api/gateways/:id/history answers: drops per point from the counter. */
export interface GatewayHistoryPoint extends GatewaySample {
  /** Readings dropped since the previous point (0 after a counter reset); null when unknown. */
  readonly drops: number | null;
}

export function withDrops(samples: readonly GatewaySample[], before?: GatewaySample): GatewayHistoryPoint[] {
  let prev = before?.droppedTotal ?? null;
  return samples.map((s) => {
    const drops = s.droppedTotal === null || prev === null ? (s.droppedTotal === null ? null : 0) : s.droppedTotal >= prev ? s.droppedTotal - prev : s.droppedTotal;
    if (s.droppedTotal !== null) prev = s.droppedTotal;
    return { ...s, drops };
  });
}
