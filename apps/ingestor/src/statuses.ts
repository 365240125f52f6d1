// The latest status each gateway published (retained, with an offline Last Will), for
// `ferry status` and the ops API. Pure: payloads in, a snapshot out.
import { gatewayStatusSupersedes } from '@ferry/health';
import type { GatewayStatusMark } from '@ferry/health';
import { decodeGatewayStatus, parseUplinkTopic } from '@ferry/protocol';
import type { GatewayStatus } from '@ferry/protocol';

export interface GatewayStatusEntry {
  readonly status: GatewayStatus;
  /** When this ingestor received it, epoch ms. */
  readonly receivedAt: number;
}

/** Told of every status that is kept and every gateway cleared: the gateway's history (gateway-history.ts). */
export interface GatewayStatusObserver {
  record(status: GatewayStatus, receivedAt: number): void;
  forget(gatewayId: string): void;
}

export class GatewayStatuses {
  private readonly latest = new Map<string, GatewayStatusEntry>();

  constructor(private readonly observer?: GatewayStatusObserver) {}
  /** What decides which status wins, per gateway; kept when the entry is replaced. */
  private readonly marks = new Map<string, GatewayStatusMark>();

  /** Applies one message from the status subscription; returns whether it was understood. */
  apply(topic: string, payload: Uint8Array, receivedAt: number): boolean {
    const parsed = parseUplinkTopic(topic);
    if (!parsed || parsed.kind !== 'status') return false;
    // An empty retained message clears the gateway (decommissioned).
    if (payload.byteLength === 0) {
      this.marks.delete(parsed.gatewayId);
      this.observer?.forget(parsed.gatewayId);
      return this.latest.delete(parsed.gatewayId);
    }
    const status = decodeGatewayStatus(payload);
    if (!status || status.gatewayId !== parsed.gatewayId) return false;
    // Retained and live copies can cross, and a Will carries its session's start time: the same
    // rule as the health model decides (by uplink session, then arrival; @ferry/health liveness).
    const mark = this.marks.get(parsed.gatewayId);
    if (!gatewayStatusSupersedes(mark, status)) return true;
    this.marks.set(parsed.gatewayId, {
      epoch: status.epoch,
      state: status.state,
      ts: status.ts,
      offlineTs: status.state === 'offline' ? status.ts : mark?.offlineTs,
    });
    this.latest.set(parsed.gatewayId, { status, receivedAt });
    this.observer?.record(status, receivedAt);
    return true;
  }

  get(gatewayId: string): GatewayStatusEntry | undefined {
    return this.latest.get(gatewayId);
  }

  snapshot(): Record<string, GatewayStatusEntry> {
    return Object.fromEntries([...this.latest].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
}
