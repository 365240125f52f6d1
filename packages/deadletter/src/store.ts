// The DeadLetterStore seam: every reading or message Ferry refuses is kept here with its
// reason and raw payload, so an operator can inspect it and replay it after a fix.
import type { ErrorCode } from '@ferry/protocol';

export interface DeadLetterSource {
  readonly gatewayId?: string;
  readonly deviceId?: string;
  readonly topic?: string;
  /** The gateway sequence number, for readings refused inside a batch. */
  readonly seq?: number;
  /**
   * Set on letters a gateway refused and reported upstream: the letter's id in that gateway's own
   * store. With gatewayId it is the letter's identity, so a report sent twice is kept once.
   */
  readonly gatewayLetterId?: number;
}

export interface NewDeadLetter {
  readonly source: DeadLetterSource;
  readonly code: ErrorCode;
  readonly reason: string;
  /** Structured validation detail (zod issues, the database's message). */
  readonly issues?: readonly unknown[];
  /** The raw bytes as received (or their prefix: see payloadBytes). */
  readonly payload: Uint8Array;
  /** Size of the raw payload when `payload` holds only its first bytes; absent when it is whole. */
  readonly payloadBytes?: number;
  /** Epoch ms; the store's clock when omitted. */
  readonly at?: number;
}

export interface DeadLetter extends NewDeadLetter {
  readonly id: number;
  readonly at: number;
  readonly replayedAt: number | null;
  readonly payload: Buffer;
}

export interface DeadLetterFilter {
  readonly code?: ErrorCode;
  readonly deviceId?: string;
  readonly gatewayId?: string;
  /** 'gateway': letters gateways reported (gatewayLetterId set); 'local': letters refused by this process. */
  readonly origin?: 'gateway' | 'local';
  /** Only entries with id greater than this (paging). */
  readonly afterId?: number;
  readonly includeReplayed?: boolean;
  readonly limit?: number;
}

export interface DeadLetterCounts {
  /** Entries held now. */
  readonly held: number;
  /** Entries ever added, by code (survives restarts). */
  readonly byCode: Readonly<Partial<Record<ErrorCode, number>>>;
  /** Entries the bound discarded (oldest first). */
  readonly discarded: number;
}

/** Entries held and not replayed, by where they came from and why. */
export interface HeldGroup {
  readonly gatewayId: string | null;
  readonly deviceId: string | null;
  readonly code: ErrorCode;
  readonly held: number;
}

/** What a new reason for an entry replaces (a replay that was refused again). */
export interface DeadLetterAmendment {
  readonly code: ErrorCode;
  readonly reason: string;
  readonly issues?: readonly unknown[];
}

export interface DeadLetterStore {
  /** Synchronous and durable on return. Never throws on a full bound: the oldest entry is discarded and counted. */
  add(entry: NewDeadLetter): DeadLetter;
  addMany(entries: readonly NewDeadLetter[]): void;
  /**
   * Adds letters a gateway reported, once each: an entry whose (gatewayId, gatewayLetterId) is
   * already held is left as it is. Returns how many were new. Entries must name both.
   */
  addReported(entries: readonly NewDeadLetter[]): { added: number; duplicates: number };
  /** The entry a gateway reported under its own id, if held. */
  getReported(gatewayId: string, gatewayLetterId: number): DeadLetter | undefined;
  /** Held, not replayed entries grouped by gateway, device and code, the largest groups first. */
  heldBy(limit?: number): HeldGroup[];
  /** Replaces an entry's code, reason and issues; false when no such entry is held. */
  amend(id: number, amendment: DeadLetterAmendment): boolean;
  list(filter?: DeadLetterFilter): DeadLetter[];
  get(id: number): DeadLetter | undefined;
  counts(): DeadLetterCounts;
  markReplayed(ids: readonly number[], at?: number): void;
  /** Removes matching entries; returns how many. */
  purge(filter?: DeadLetterFilter): number;
  close(): void;
}
