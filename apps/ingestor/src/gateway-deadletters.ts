// Gateway dead letters, held centrally. Gateways report the messages they refused on
// ferry/v1/gw/<id>/deadletters; each report's letters go into this ingestor's dead-letter store
// once (keyed by gateway id and the gateway's letter id, in the schema), and only then is the
// report acked on .../deadletters-ctl, so the gateway moves its watermark only past what is kept
// here. A replay of such a letter is the gateway's to do: the request travels down the same
// control topic (waiting in the gateway's broker session while it is offline) and the result
// comes back as a message that updates the central copy.
import {
  DEAD_LETTER_REPORT_VERSION,
  decodeGatewayDeadLetterMessage,
  newBatchNonce,
  parseUplinkTopic,
  reportedPayloadBytes,
} from '@ferry/protocol';
import type { DeadLetterControl, DeadLetterCountsReport, DeadLetterReport, ErrorCode, GatewayReplayOutcome, ReplayResult } from '@ferry/protocol';
import { Counter } from '@ferry/runtime';
import type { Clock, Logger, Registry } from '@ferry/runtime';
import type { DeadLetter, DeadLetterStore, NewDeadLetter } from '@ferry/deadletter';

/** What a replay of a gateway's letter came to, as the ops API answers it. */
export type GatewayReplayAnswer = { readonly id: number; readonly gatewayId: string; readonly gatewayLetterId: number } & (
  | { readonly outcome: 'committed'; readonly readings: number }
  | { readonly outcome: 'already-replayed' }
  | { readonly outcome: 'rejected'; readonly code: ErrorCode; readonly reason: string }
  /** Sent; no result within the wait (the gateway is offline or busy): the request waits for it, the result updates the entry. */
  | { readonly outcome: 'pending'; readonly requestId: string; readonly reason: string }
  | { readonly outcome: Exclude<GatewayReplayOutcome, 'committed' | 'already-replayed' | 'rejected'>; readonly reason: string }
);

/** The latest counts a gateway reported: held, discarded by its bound, by code, by device. */
export interface GatewayDeadLetterCounts extends DeadLetterCountsReport {
  readonly reportedAt: number;
  /** The highest of its letter ids this ingestor holds everything up to. */
  readonly through: number;
}

export interface GatewayDeadLettersOptions {
  readonly store: DeadLetterStore;
  /** QoS 1 to uplinkTopics.deadLetterControl(gatewayId). */
  readonly publish: (gatewayId: string, message: DeadLetterControl, done: (err?: Error) => void) => void;
  /** Whether this ingestor takes the gateway (partitions). */
  readonly owns: (gatewayId: string) => boolean;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly registry: Registry;
}

export interface GatewayDeadLetters {
  /** A message on uplinkTopics.deadLetters(gatewayId). */
  receive(topic: string, payload: Buffer): void;
  /** Asks the letter's gateway to replay it; answers with the result, or `pending` after waitMs. */
  replay(entry: DeadLetter, waitMs: number): Promise<GatewayReplayAnswer>;
  /** The latest counts each gateway reported (since this ingestor started). */
  counts(): Record<string, GatewayDeadLetterCounts>;
  /** Replays waiting for a result are answered `pending`. */
  close(): void;
}

/** Pure: a report's letters as entries of the central store. Letters whose payload is over the bound are left out. */
export function reportedEntries(report: DeadLetterReport): NewDeadLetter[] {
  const entries: NewDeadLetter[] = [];
  for (const letter of report.letters) {
    const payload = reportedPayloadBytes(letter);
    if (!payload) continue;
    entries.push({
      source: {
        gatewayId: report.gatewayId,
        gatewayLetterId: letter.id,
        ...(letter.deviceId !== undefined ? { deviceId: letter.deviceId } : {}),
        ...(letter.topic !== undefined ? { topic: letter.topic } : {}),
      },
      code: letter.code,
      reason: letter.reason,
      ...(letter.issues !== undefined ? { issues: letter.issues } : {}),
      payload,
      ...(letter.truncated || letter.payloadBytes > payload.byteLength ? { payloadBytes: letter.payloadBytes } : {}),
      at: letter.at,
    });
  }
  return entries;
}

/** Pure: the answer for a gateway's replay result. */
export function replayAnswer(entry: { id: number; gatewayId: string; gatewayLetterId: number }, result: ReplayResult): GatewayReplayAnswer {
  switch (result.outcome) {
    case 'committed':
      return { ...entry, outcome: 'committed', readings: result.readings ?? 0 };
    case 'already-replayed':
      return { ...entry, outcome: 'already-replayed' };
    case 'rejected':
      return { ...entry, outcome: 'rejected', code: result.code ?? 'FERRY_ERR_PAYLOAD_SCHEMA', reason: result.reason ?? 'refused again' };
    case 'not-found':
    case 'unreplayable':
    case 'failed':
      return { ...entry, outcome: result.outcome, reason: result.reason ?? result.outcome };
  }
}

interface Waiter {
  readonly resolve: (answer: GatewayReplayAnswer) => void;
  readonly entry: { id: number; gatewayId: string; gatewayLetterId: number };
}

export function createGatewayDeadLetters(options: GatewayDeadLettersOptions): GatewayDeadLetters {
  const { store, clock, logger } = options;
  const registers = [options.registry];
  const received = new Counter({
    name: 'ferry_ingestor_gateway_deadletters_received_total',
    help: 'Dead letters gateways reported, per gateway: added (new here) or duplicate (a report sent again)',
    labelNames: ['gateway', 'result'],
    registers,
  });
  const messages = new Counter({
    name: 'ferry_ingestor_gateway_deadletter_messages_total',
    help: 'Messages on gateways\' dead-letter topics: report, replay-result, invalid, not-owned, failed (not stored, not acked)',
    labelNames: ['result'],
    registers,
  });
  const latest = new Map<string, GatewayDeadLetterCounts>();
  const waiters = new Map<string, Waiter>();
  let closed = false;

  function applyReport(report: DeadLetterReport): void {
    const entries = reportedEntries(report);
    let added: number;
    let duplicates: number;
    try {
      ({ added, duplicates } = store.addReported(entries));
      // Letters replayed at the gateway before they were reported arrive marked.
      const replayed = report.letters.filter((l) => l.replayedAt !== null);
      for (const letter of replayed) {
        const held = store.getReported(report.gatewayId, letter.id);
        if (held && held.replayedAt === null) store.markReplayed([held.id], letter.replayedAt ?? clock.now());
      }
    } catch (err) {
      // Not acked: the gateway sends the report again.
      messages.inc({ result: 'failed' });
      logger.error({ err, gatewayId: report.gatewayId }, 'gateway dead-letter report not stored; the gateway will send it again');
      return;
    }
    if (added > 0) received.inc({ gateway: report.gatewayId, result: 'added' }, added);
    if (duplicates > 0) received.inc({ gateway: report.gatewayId, result: 'duplicate' }, duplicates);
    latest.set(report.gatewayId, { ...report.counts, reportedAt: clock.now(), through: report.through });
    messages.inc({ result: 'report' });
    const ack: DeadLetterControl = {
      v: DEAD_LETTER_REPORT_VERSION,
      type: 'report-ack',
      gatewayId: report.gatewayId,
      reportId: report.reportId,
      through: report.through,
      added,
      duplicates,
      ackedAt: Math.floor(clock.now()),
    };
    options.publish(report.gatewayId, ack, (err) => {
      if (err) logger.warn({ err: err.message, gatewayId: report.gatewayId }, 'dead-letter report ack not published; the gateway will send the report again');
    });
    if (added > 0) logger.info({ gatewayId: report.gatewayId, added, duplicates, through: report.through }, 'gateway dead letters received');
  }

  function applyResult(result: ReplayResult): void {
    messages.inc({ result: 'replay-result' });
    try {
      const held = store.getReported(result.gatewayId, result.letterId);
      if (held) {
        if (result.outcome === 'committed' || result.outcome === 'already-replayed') {
          if (held.replayedAt === null) store.markReplayed([held.id], result.at);
        } else if (result.outcome === 'rejected' && result.code !== undefined) {
          store.amend(held.id, { code: result.code, reason: result.reason ?? held.reason, ...(result.issues !== undefined ? { issues: result.issues } : {}) });
        }
      }
    } catch (err) {
      logger.error({ err, gatewayId: result.gatewayId, letterId: result.letterId }, 'gateway replay result not applied to the central copy');
    }
    const waiter = waiters.get(result.requestId);
    if (waiter && waiter.entry.gatewayId === result.gatewayId && waiter.entry.gatewayLetterId === result.letterId) {
      waiters.delete(result.requestId);
      waiter.resolve(replayAnswer(waiter.entry, result));
    }
    logger.info({ gatewayId: result.gatewayId, letterId: result.letterId, outcome: result.outcome }, 'gateway replayed a dead letter');
  }

  return {
    receive(topic, payload) {
      const parsed = parseUplinkTopic(topic);
      if (closed || parsed?.kind !== 'deadletters') return;
      if (!options.owns(parsed.gatewayId)) {
        messages.inc({ result: 'not-owned' });
        return;
      }
      const decoded = decodeGatewayDeadLetterMessage(payload);
      // The broker's ACL binds the topic to the gateway's login; the message must name the same gateway.
      if (!decoded.ok || decoded.value.gatewayId !== parsed.gatewayId) {
        messages.inc({ result: 'invalid' });
        logger.warn({ gatewayId: parsed.gatewayId, reason: decoded.ok ? 'names another gateway' : decoded.reason }, 'gateway dead-letter message ignored');
        return;
      }
      if (decoded.value.type === 'report') applyReport(decoded.value);
      else applyResult(decoded.value);
    },

    replay(entry, waitMs) {
      const { gatewayId, gatewayLetterId } = entry.source;
      if (gatewayId === undefined || gatewayLetterId === undefined) {
        return Promise.reject(new Error(`dead letter ${entry.id} was not reported by a gateway`));
      }
      const ref = { id: entry.id, gatewayId, gatewayLetterId };
      if (entry.replayedAt !== null) return Promise.resolve({ ...ref, outcome: 'already-replayed' });
      const requestId = newBatchNonce();
      const pending: GatewayReplayAnswer = {
        ...ref,
        outcome: 'pending',
        requestId,
        reason: `asked gateway ${gatewayId} to replay its letter ${gatewayLetterId}; no result yet (offline or busy): the request waits for it and the entry is updated when the result arrives`,
      };
      return new Promise<GatewayReplayAnswer>((resolve) => {
        const timer = setTimeout(() => {
          waiters.delete(requestId);
          resolve(pending);
        }, waitMs);
        waiters.set(requestId, {
          entry: ref,
          resolve: (answer) => {
            clearTimeout(timer);
            resolve(answer);
          },
        });
        const request: DeadLetterControl = {
          v: DEAD_LETTER_REPORT_VERSION,
          type: 'replay',
          gatewayId,
          requestId,
          letterId: gatewayLetterId,
          requestedAt: Math.floor(clock.now()),
        };
        options.publish(gatewayId, request, (err) => {
          if (err) logger.warn({ err: err.message, gatewayId }, 'replay request not published yet');
        });
      });
    },

    counts() {
      return Object.fromEntries(latest);
    },

    close() {
      closed = true;
      for (const [requestId, waiter] of waiters) {
        waiters.delete(requestId);
        waiter.resolve({ ...waiter.entry, outcome: 'pending', requestId, reason: 'the ingestor closed before the gateway answered' });
      }
    },
  };
}
