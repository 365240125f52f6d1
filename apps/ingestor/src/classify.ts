// Stage 2-3 of a gateway batch, per reading: validate (validate.ts) and the skew policy (skew.ts),
// then dedupe: by gateway seq (dedupe.ts) against what is being written and what was recorded, and
// by the device's own identity (device-dedupe.ts). Pure decisions over the stores' lookups: what
// to refuse, what is a duplicate or a copy of a reading in flight, what to write. The pipeline
// (pipeline.ts) files, settles and writes what this decides.
import type { Limits, Reading, Rejection } from '@ferry/protocol';
import type { NewDeadLetter } from '@ferry/deadletter';
import type { Point } from '@ferry/sinks';
import { deviceIdOf, seqOf, validateReading } from './validate.js';
import type { ValidatedReading, ValidationContext } from './validate.js';
import { applySkewPolicy } from './skew.js';
import type { SkewPolicy } from './skew.js';
import { deviceIdentity, judgeDevice } from './device-dedupe.js';
import type { DeviceDedupeStore, DeviceIdentity } from './device-dedupe.js';
import { judge } from './dedupe.js';
import type { DedupeEntry, DedupeStore } from './dedupe.js';
import { contentHash, readingContentHash, sameContent } from './content-hash.js';
import type { Party, PendingWrite, PipelineEvents } from './pipeline.js';

export type Classified =
  | { readonly kind: 'refused'; readonly seq: number | null; readonly rejection: Rejection; readonly letter?: NewDeadLetter; readonly record?: DedupeEntry }
  /** `device`: recognised by the device's own identity, not the gateway seq (a device's republish). */
  | { readonly kind: 'duplicate'; readonly seq: number; readonly device?: true }
  /** `seq`: the copy's own gateway seq, when it differs from the original's (a device's republish). */
  | { readonly kind: 'copy'; readonly of: PendingWrite; readonly seq?: number }
  | { readonly kind: 'write'; readonly item: PendingWrite };

export type DeviceClassified = { kind: 'new' } | { kind: 'duplicate' } | { kind: 'conflict'; reason: string } | { kind: 'copy'; of: PendingWrite };

/** What a batch's refusals file: new dead letters, and the seqs to remember as refused. A loop, not two flatMaps (an empty array per reading that is not refused). */
export function refusalsOf(classified: readonly Classified[]): { letters: NewDeadLetter[]; records: DedupeEntry[] } {
  const letters: NewDeadLetter[] = [];
  const records: DedupeEntry[] = [];
  for (const c of classified) {
    if (c.kind !== 'refused') continue;
    if (c.letter) letters.push(c.letter);
    if (c.record) records.push(c.record);
  }
  return { letters, records };
}

export function rawJson(raw: unknown): Buffer {
  return Buffer.from(JSON.stringify(raw) ?? 'null');
}

export interface ClassifierContext {
  readonly limits: Limits;
  readonly skewPolicy: SkewPolicy;
  readonly dedupe: DedupeStore;
  readonly deviceDedupe: DeviceDedupeStore;
  /** Readings being written, per gateway and seq. */
  readonly inMemory: ReadonlyMap<string, ReadonlyMap<number, PendingWrite>>;
  /** Readings being written, by device identity slot. */
  readonly inMemoryDevice: ReadonlyMap<string, PendingWrite>;
  /** A new reading's raw point and what the rollups take (pipeline.ts). */
  readonly build: (reading: Reading, gatewayTag: string) => { point: Point | null; rolled: Reading | undefined };
  readonly events: Pick<PipelineEvents, 'skewed'>;
}

export interface Classifier {
  readonly check: (raw: unknown, ctx: ValidationContext) => ValidatedReading;
  readonly classifyDevice: (device: DeviceIdentity | undefined, batchDevices: ReadonlyMap<string, PendingWrite>) => DeviceClassified;
  readonly classify: (
    raw: unknown,
    validated: ValidatedReading,
    gatewayId: string,
    sameGateway: boolean,
    owner: Party,
    batchWrites: Map<number, PendingWrite>,
    batchDevices: Map<string, PendingWrite>,
  ) => Classified;
}

/** A valid reading refused because its seq or device identity was taken with other content. */
function conflictOf(gatewayId: string, reading: Reading, raw: unknown, reason: string): Classified {
  return {
    kind: 'refused',
    seq: reading.seq,
    rejection: { code: 'FERRY_ERR_DUPLICATE_CONFLICT', reason },
    letter: {
      source: { gatewayId, deviceId: reading.deviceId, seq: reading.seq },
      code: 'FERRY_ERR_DUPLICATE_CONFLICT',
      reason,
      payload: rawJson(raw),
    },
  };
}

export function createClassifier(ctx0: ClassifierContext): Classifier {
  /**
   * Validate (schema, limits), then the skew policy: a skew the policy refuses is a refusal like any
   * other. `ctx` is built once per batch with the limits minus the skew check (`looseLimits`).
   */
  function check(raw: unknown, ctx: ValidationContext): ValidatedReading {
    const validated = validateReading(raw, ctx);
    if (!validated.ok) return validated;
    const verdict = applySkewPolicy(validated.reading, ctx0.limits, ctx0.skewPolicy, ctx.now);
    if (!verdict.ok) return { ok: false, rejection: verdict.rejection, seq: seqOf(raw), deviceId: deviceIdOf(raw) };
    if (verdict.skewed) ctx0.events.skewed?.(verdict.skewed);
    return verdict.reading === validated.reading ? validated : { ok: true, reading: verdict.reading };
  }

  /** Device dedupe for a reading whose gateway seq (if any) is new: a device's republish, or a new reading. */
  function classifyDevice(device: DeviceIdentity | undefined, batchDevices: ReadonlyMap<string, PendingWrite>): DeviceClassified {
    if (!device) return { kind: 'new' };
    const key = device.slot;
    const writing = batchDevices.get(key) ?? ctx0.inMemoryDevice.get(key);
    if (writing) {
      const verdict = judgeDevice(writing.device?.hash, device);
      if (verdict.kind === 'duplicate') return { kind: 'copy', of: writing };
      return verdict;
    }
    return judgeDevice(ctx0.deviceDedupe.lookup(device), device);
  }

  /** Validate and dedupe one reading; no side effects yet (those follow once the dead letters are safe). */
  function classify(
    raw: unknown,
    validated: ValidatedReading,
    gatewayId: string,
    sameGateway: boolean,
    owner: Party,
    batchWrites: Map<number, PendingWrite>,
    batchDevices: Map<string, PendingWrite>,
  ): Classified {
    if (!validated.ok) {
      const { rejection, seq, deviceId } = validated;
      const hash = contentHash(raw);
      if (seq !== null && sameGateway) {
        const seen = ctx0.dedupe.lookup(gatewayId, seq);
        if (seen?.outcome === 'rejected' && sameContent(seen.hash, hash, raw)) {
          return { kind: 'refused', seq, rejection: { code: seen.code, reason: seen.reason } };
        }
      }
      return {
        kind: 'refused',
        seq,
        rejection,
        letter: {
          source: { gatewayId, ...(deviceId !== undefined ? { deviceId } : {}), ...(seq !== null ? { seq } : {}) },
          code: rejection.code,
          reason: rejection.reason,
          ...(rejection.issues ? { issues: rejection.issues } : {}),
          payload: rawJson(raw),
        },
        // Remember the refusal so a resend is refused again without a second dead letter.
        ...(seq !== null && sameGateway ? { record: { gatewayId, seq, hash, outcome: 'rejected' as const, code: rejection.code, reason: rejection.reason } } : {}),
      };
    }
    const reading = validated.reading;
    const hash = readingContentHash(raw as Record<string, unknown>); // raw passed the strict schema
    const writing = batchWrites.get(reading.seq) ?? ctx0.inMemory.get(gatewayId)?.get(reading.seq);
    if (writing) {
      return writing.hash === hash
        ? { kind: 'copy', of: writing }
        : conflictOf(gatewayId, reading, raw, `seq is being written with different content (hash ${writing.hash}, now ${hash})`);
    }
    const verdict = judge(ctx0.dedupe.lookup(gatewayId, reading.seq), hash, raw);
    switch (verdict.kind) {
      case 'duplicate':
        return { kind: 'duplicate', seq: reading.seq };
      case 'conflict':
        return conflictOf(gatewayId, reading, raw, verdict.reason);
      case 'rejected-before':
        return { kind: 'refused', seq: reading.seq, rejection: { code: verdict.code, reason: verdict.reason } };
      case 'new': {
        const device = deviceIdentity(reading, 'gateway', gatewayId);
        const byDevice = classifyDevice(device, batchDevices);
        switch (byDevice.kind) {
          case 'copy':
            return { kind: 'copy', of: byDevice.of, seq: reading.seq };
          case 'duplicate':
            return { kind: 'duplicate', seq: reading.seq, device: true };
          case 'conflict':
            return conflictOf(gatewayId, reading, raw, byDevice.reason);
          case 'new': {
            // Every property written out (no spread of build's answer): one shape for every reading.
            const built = ctx0.build(reading, gatewayId);
            const item: PendingWrite = {
              origin: 'gateway',
              gatewayId,
              seq: reading.seq,
              device,
              hash,
              point: built.point,
              rolled: built.rolled,
              deviceId: reading.deviceId,
              raw,
              owner,
              deadLetterOnRefusal: true,
              copies: [],
            };
            return { kind: 'write', item };
          }
        }
      }
    }
  }

  return { check, classifyDevice, classify };
}
