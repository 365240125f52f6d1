// The latest status each gateway published (retained, with an offline Last Will), for
// `ferry status` and the ops API. Pure: payloads in, a snapshot out.
import { decodeGatewayStatus, parseUplinkTopic } from '@ferry/protocol';
import type { GatewayStatus } from '@ferry/protocol';

export interface GatewayStatusEntry {
  readonly status: GatewayStatus;
  /** When this ingestor received it, epoch ms. */
  readonly receivedAt: number;
}

export class GatewayStatuses {
  private readonly latest = new Map<string, GatewayStatusEntry>();

  /** Applies one message from the status subscription; returns whether it was understood. */
  apply(topic: string, payload: Uint8Array, receivedAt: number): boolean {
    const parsed = parseUplinkTopic(topic);
    if (!parsed || parsed.kind !== 'status') return false;
    // An empty retained message clears the gateway (decommissioned).
    if (payload.byteLength === 0) return this.latest.delete(parsed.gatewayId);
    const status = decodeGatewayStatus(payload);
    if (!status || status.gatewayId !== parsed.gatewayId) return false;
    const previous = this.latest.get(parsed.gatewayId);
    // Retained and live copies can cross; keep the newest by the gateway's own time.
    if (previous && previous.status.ts > status.ts) return true;
    this.latest.set(parsed.gatewayId, { status, receivedAt });
    return true;
  }

  snapshot(): Record<string, GatewayStatusEntry> {
    return Object.fromEntries([...this.latest].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
}
