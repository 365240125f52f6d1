// The path of readings from devices that publish directly, up to the writer: a journaled message
// is decoded (direct.ts), put through the skew policy (skew.ts) and device dedupe, its refusals
// filed as dead letters, and its new readings handed to the writer like a gateway's. The journal
// row goes once every reading of its message is settled.
import type { ErrorCode, Limits, Reading, Rejection } from '@ferry/protocol';
import { FerryError } from '@ferry/protocol';
import type { Point } from '@ferry/sinks';
import type { DeadLetterStore, NewDeadLetter } from '@ferry/deadletter';
import type { Accounting } from './accounting.js';
import type { Classifier } from './classify.js';
import { contentHash } from './content-hash.js';
import { contentPointSeq, deviceIdentity } from './device-dedupe.js';
import { decodeDirect } from './direct.js';
import type { DirectEntry } from './direct.js';
import { applySkewPolicy } from './skew.js';
import type { SkewPolicy } from './skew.js';
import type { RecordIn } from './confirm.js';
import type { DirectOptions, DirectUnit, Party, PendingWrite, PipelineEvents } from './pipeline.js';

/** The accounting source of readings from devices that publish directly: a '/' is never in a gateway id. */
export const DIRECT_SOURCE = '/direct';

/** A direct message's dead letter: the message as received, its topic, and its receive time (a replay decodes it as it was). */
export function directLetter(entry: DirectEntry, r: Rejection, deviceId: string | undefined): NewDeadLetter {
  return {
    source: { topic: entry.topic, ...(deviceId !== undefined ? { deviceId } : {}) },
    code: r.code,
    reason: r.reason,
    ...(r.issues ? { issues: r.issues } : {}),
    payload: entry.payload,
    at: entry.receivedAt,
  };
}

/** Files dead letters and reports them per code; throws (nothing else done) when the store fails. */
export function fileLetters(letters: readonly NewDeadLetter[], deadLetters: DeadLetterStore, recordIn: RecordIn, events: PipelineEvents): void {
  if (letters.length === 0) return;
  recordIn('deadletters', () => deadLetters.addMany(letters));
  const byCode = new Map<ErrorCode, number>();
  for (const l of letters) byCode.set(l.code, (byCode.get(l.code) ?? 0) + 1);
  for (const [code, n] of byCode) events.deadLettered?.(code, n);
}

export interface DirectPathOptions {
  readonly direct: DirectOptions | undefined;
  readonly limits: Limits;
  /** The limits without the skew check: the skew policy judges the device time (skew.ts). */
  readonly looseLimits: Limits;
  readonly skewPolicy: SkewPolicy;
  readonly classifyDevice: Classifier['classifyDevice'];
  readonly build: (reading: Reading, gatewayTag: string) => { point: Point | null; rolled: Reading | undefined };
  readonly deadLetters: DeadLetterStore;
  readonly accounting: Accounting;
  readonly recordIn: RecordIn;
  readonly events: PipelineEvents;
  /** Registers the readings as being written and hands them to the writer (pipeline.ts). */
  readonly write: (items: PendingWrite[]) => void;
}

export interface DirectPath {
  /**
   * Decode, skew policy and device dedupe for one direct message: one unit per reading (or one
   * refusal for a message that could not be read), each with its own party. No side effects yet
   * but the skew events: the caller files the dead letters first.
   */
  plan(
    entry: DirectEntry,
    direct: DirectOptions,
    partyFor: () => Party,
    deadLetterOnRefusal: boolean,
  ): { units: DirectUnit[]; dropped: readonly Rejection[]; deviceId: string | undefined };
  /** Takes one journaled message; `settled` runs once every reading of it is settled. Throws only when local storage failed. */
  accept(entry: DirectEntry, settled: () => void): void;
  /** Direct readings taken and not settled yet. */
  readonly pending: number;
}

export function createDirectPath(options: DirectPathOptions): DirectPath {
  const { events, accounting } = options;
  let pending = 0;

  function plan(entry: DirectEntry, direct: DirectOptions, partyFor: () => Party, deadLetterOnRefusal: boolean): ReturnType<DirectPath['plan']> {
    const decoded = decodeDirect(entry, direct.topics, options.looseLimits);
    const { deviceId } = decoded;
    if (!decoded.ok) return { units: [{ kind: 'refused', rejection: decoded.rejection, deviceId, party: partyFor() }], dropped: [], deviceId };
    // Readings of one message (two identical lines of line protocol) dedupe against each other too.
    const messageDevices = new Map<string, PendingWrite>();
    const units = decoded.readings.map((decodedReading): DirectUnit => {
      const party = partyFor();
      const verdict = applySkewPolicy(decodedReading, options.limits, options.skewPolicy, entry.receivedAt);
      if (!verdict.ok) return { kind: 'refused', rejection: verdict.rejection, deviceId: decodedReading.deviceId, party };
      if (verdict.skewed) events.skewed?.(verdict.skewed);
      const reading = verdict.reading;
      // Always defined for a direct reading: at worst (receive time, content).
      const device = deviceIdentity(reading, 'direct', direct.gatewayTag);
      const byDevice = options.classifyDevice(device, messageDevices);
      switch (byDevice.kind) {
        case 'conflict':
          return { kind: 'refused', rejection: { code: 'FERRY_ERR_DUPLICATE_CONFLICT', reason: byDevice.reason }, deviceId: reading.deviceId, party };
        case 'duplicate':
          return { kind: 'duplicate', party };
        case 'copy':
          return { kind: 'copy', of: byDevice.of, party };
        case 'new': {
          const hash = device?.hash ?? contentHash(reading);
          // The point's sub-millisecond part: the deviceSeq when sent, else from the content, so a
          // republish maps to the very same point (an overwrite, never a second point).
          const pointSeq = reading.deviceSeq ?? (device ? contentPointSeq(device) : Number.parseInt(hash.slice(1, 9), 16));
          const item: PendingWrite = {
            origin: 'direct',
            gatewayId: direct.gatewayTag,
            seq: entry.id,
            device,
            hash,
            ...options.build({ ...reading, seq: pointSeq }, direct.gatewayTag),
            deviceId: reading.deviceId,
            raw: reading,
            owner: party,
            deadLetterOnRefusal,
            copies: [],
            message: entry,
          };
          if (device) messageDevices.set(device.slot, item);
          return { kind: 'write', item };
        }
      }
    });
    return { units, dropped: decoded.dropped, deviceId };
  }

  function accept(entry: DirectEntry, settled: () => void): void {
    const direct = options.direct;
    if (!direct) throw new FerryError('FERRY_ERR_NOT_READY', 'direct devices are not configured');
    // The journal row goes once every reading of its message is settled.
    let open = 0;
    const partyFor = (): Party => {
      let settledOnce = false;
      return {
        settle(_seq, outcome) {
          if (settledOnce) return;
          settledOnce = true;
          pending--;
          accounting.settle(DIRECT_SOURCE, outcome.kind === 'rejected' ? { rejected: outcome.code } : outcome.kind);
          if (--open === 0) settled();
        },
      };
    };
    const { units, dropped, deviceId } = plan(entry, direct, partyFor, true);

    // Kept first: the journal row goes only once its dead letters are safe. If this throws the row stays.
    fileLetters(
      [
        ...dropped.map((r) => directLetter(entry, { ...r, reason: `${r.reason}; the rest of the reading was kept` }, deviceId)),
        ...units.flatMap((u) => (u.kind === 'refused' ? [directLetter(entry, u.rejection, u.deviceId)] : [])),
      ],
      options.deadLetters,
      options.recordIn,
      events,
    );

    if (units.length === 0) {
      // Nothing to write (a command topic, a Sparkplug BIRTH that only defines aliases).
      settled();
      return;
    }
    open = units.length;
    pending += units.length;
    accounting.received(DIRECT_SOURCE, units.length);
    const toWrite: PendingWrite[] = [];
    for (const unit of units) {
      switch (unit.kind) {
        case 'refused':
          unit.party.settle(null, { kind: 'rejected', code: unit.rejection.code, reason: unit.rejection.reason });
          break;
        case 'duplicate':
          events.deviceDuplicate?.('direct');
          unit.party.settle(null, { kind: 'duplicate' });
          break;
        case 'copy':
          events.deviceDuplicate?.('direct');
          unit.of.copies.push(unit.party);
          break;
        case 'write':
          toWrite.push(unit.item);
          break;
      }
    }
    options.write(toWrite);
  }

  return {
    plan,
    accept,
    get pending() {
      return pending;
    },
  };
}
