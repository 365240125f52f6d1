// Stage 6, ack: a batch is acked only once every one of its readings is settled (written,
// duplicate or refused for good); the ack is what lets the gateway delete them from its outbox.
import type { Ack, ErrorCode } from '@ferry/protocol';
import { BATCH_VERSION, LEGACY_BATCH_VERSION } from '@ferry/protocol';

export type ReadingOutcome =
  | { readonly kind: 'written' }
  | { readonly kind: 'duplicate' }
  | { readonly kind: 'rejected'; readonly code: ErrorCode; readonly reason: string };

/** Pure: the settlement state of one received batch. */
export class BatchTracker {
  private accepted = 0;
  private duplicates = 0;
  private readonly rejected: Ack['rejected'][number][] = [];
  private settledCount = 0;

  constructor(
    readonly gatewayId: string,
    readonly batchId: number,
    /** Readings in the batch. */
    readonly size: number,
    /** The batch's nonce, echoed in the ack; undefined for a v1 batch (accepted during a transition). */
    readonly nonce: string | undefined,
  ) {}

  settle(seq: number | null, outcome: ReadingOutcome): void {
    if (this.settledCount >= this.size) throw new Error(`batch ${this.gatewayId}/${this.batchId}: more outcomes than readings`);
    this.settledCount++;
    switch (outcome.kind) {
      case 'written':
        this.accepted++;
        break;
      case 'duplicate':
        this.duplicates++;
        break;
      case 'rejected':
        this.rejected.push({ seq, code: outcome.code, reason: outcome.reason });
        break;
    }
  }

  get pending(): number {
    return this.size - this.settledCount;
  }

  get complete(): boolean {
    return this.settledCount === this.size;
  }

  toAck(ackedAt: number): Ack {
    if (!this.complete) throw new Error(`batch ${this.gatewayId}/${this.batchId} acked with ${this.pending} readings unsettled`);
    return {
      ...ackVersion(this.nonce),
      gatewayId: this.gatewayId,
      batchId: this.batchId,
      accepted: this.accepted,
      duplicates: this.duplicates,
      rejected: [...this.rejected],
      ackedAt,
    };
  }
}

/** The ack for an envelope whose readings could not be read at all: nothing accepted, one refusal without seq. */
export function envelopeRejectionAck(
  gatewayId: string,
  batchId: number,
  nonce: string | undefined,
  code: ErrorCode,
  reason: string,
  ackedAt: number,
): Ack {
  return { ...ackVersion(nonce), gatewayId, batchId, accepted: 0, duplicates: 0, rejected: [{ seq: null, code, reason }], ackedAt };
}

/** An ack answers in its batch's version: v2 echoes the nonce; v1 (no nonce) is all an old gateway reads. */
function ackVersion(nonce: string | undefined): Pick<Ack, 'v' | 'nonce'> {
  return nonce === undefined ? { v: LEGACY_BATCH_VERSION } : { v: BATCH_VERSION, nonce };
}
