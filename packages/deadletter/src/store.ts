// The DeadLetterStore seam: every reading or message Ferry refuses is kept here with its
// reason and raw payload, so an operator can inspect it and replay it after a fix.
import type { ErrorCode } from '@ferry/protocol';

export interface DeadLetterSource {
  readonly gatewayId?: string;
  readonly deviceId?: string;
  readonly topic?: string;
  /** The gateway sequence number, for readings refused inside a batch. */
  readonly seq?: number;
}

export interface NewDeadLetter {
  readonly source: DeadLetterSource;
  readonly code: ErrorCode;
  readonly reason: string;
  /** Structured validation detail (zod issues, the database's message). */
  readonly issues?: readonly unknown[];
  /** The raw bytes as received. */
  readonly payload: Uint8Array;
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

export interface DeadLetterStore {
  /** Synchronous and durable on return. Never throws on a full bound: the oldest entry is discarded and counted. */
  add(entry: NewDeadLetter): DeadLetter;
  addMany(entries: readonly NewDeadLetter[]): void;
  list(filter?: DeadLetterFilter): DeadLetter[];
  get(id: number): DeadLetter | undefined;
  counts(): DeadLetterCounts;
  markReplayed(ids: readonly number[], at?: number): void;
  /** Removes matching entries; returns how many. */
  purge(filter?: DeadLetterFilter): number;
  close(): void;
}
