// Accounting: every reading received is, at any moment, exactly one of written, rejected,
// duplicate or in flight, per gateway. Pure; the metrics are read from here.
import type { ErrorCode } from '@ferry/protocol';

export interface GatewayAccount {
  readonly received: number;
  readonly written: number;
  readonly duplicates: number;
  readonly rejected: number;
  readonly rejectedByCode: Readonly<Partial<Record<ErrorCode, number>>>;
  /** Received, not settled yet: queued, being written, or waiting for the sink to come back. */
  readonly inFlight: number;
}

export type Settlement = 'written' | 'duplicate' | { readonly rejected: ErrorCode };

interface MutableAccount {
  received: number;
  written: number;
  duplicates: number;
  rejected: number;
  rejectedByCode: Partial<Record<ErrorCode, number>>;
  inFlight: number;
}

export class Accounting {
  private readonly gateways = new Map<string, MutableAccount>();

  private account(gatewayId: string): MutableAccount {
    let account = this.gateways.get(gatewayId);
    if (!account) {
      account = { received: 0, written: 0, duplicates: 0, rejected: 0, rejectedByCode: {}, inFlight: 0 };
      this.gateways.set(gatewayId, account);
    }
    return account;
  }

  received(gatewayId: string, count: number): void {
    const a = this.account(gatewayId);
    a.received += count;
    a.inFlight += count;
  }

  settle(gatewayId: string, settlement: Settlement, count = 1): void {
    const a = this.account(gatewayId);
    if (a.inFlight < count) throw new Error(`accounting: ${gatewayId} settles ${count} readings with ${a.inFlight} in flight`);
    a.inFlight -= count;
    if (settlement === 'written') a.written += count;
    else if (settlement === 'duplicate') a.duplicates += count;
    else {
      a.rejected += count;
      a.rejectedByCode[settlement.rejected] = (a.rejectedByCode[settlement.rejected] ?? 0) + count;
    }
  }

  byGateway(): ReadonlyMap<string, GatewayAccount> {
    return this.gateways;
  }

  totals(): GatewayAccount {
    const t: MutableAccount = { received: 0, written: 0, duplicates: 0, rejected: 0, rejectedByCode: {}, inFlight: 0 };
    for (const a of this.gateways.values()) {
      t.received += a.received;
      t.written += a.written;
      t.duplicates += a.duplicates;
      t.rejected += a.rejected;
      t.inFlight += a.inFlight;
      for (const [code, n] of Object.entries(a.rejectedByCode) as [ErrorCode, number][]) {
        t.rejectedByCode[code] = (t.rejectedByCode[code] ?? 0) + n;
      }
    }
    return t;
  }
}

/** Pure: gateways whose books do not balance (received != written + rejected + duplicates + inFlight). */
export function imbalances(accounts: ReadonlyMap<string, GatewayAccount>): string[] {
  const out: string[] = [];
  for (const [gatewayId, a] of accounts) {
    const byCode = Object.values(a.rejectedByCode).reduce((s, n) => s + n, 0);
    if (a.received !== a.written + a.rejected + a.duplicates + a.inFlight || byCode !== a.rejected || a.inFlight < 0) out.push(gatewayId);
  }
  return out;
}
