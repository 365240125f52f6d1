// The gateway's dead letters, reported to the centre. Beside the data path, not on it: letters
// with an id above the `reported` watermark go out in reports on ferry/v1/gw/<id>/deadletters; the
// ingestor's report ack moves the watermark, which lives in deadletters.db beside the letters. So a
// report lost with the uplink is sent again (at least once; the ingestor keeps each letter once by
// gateway id and letter id), and a letter refused while the uplink is down waits like a reading.
// The centre may ask for a letter to be replayed: it is decoded again under the current patterns
// and committed to the outbox, or kept with its new reason; the result goes back upstream.
import type Database from 'better-sqlite3';
import {
  DEAD_LETTER_REPORT_VERSION,
  decodeDeadLetterControl,
  encodeDeadLetterMessage,
  MAX_COUNT_GROUPS_PER_REPORT,
  MAX_LETTERS_PER_REPORT,
  MAX_REPORTED_REASON_CHARS,
  newBatchNonce,
  reportedPayload,
  uplinkTopics,
} from '@ferry/protocol';
import type { DeadLetterReport, DeviceReading, Rejection, ReplayRequest, ReplayResult, ReportedLetter } from '@ferry/protocol';
import { Counter, openSqlite } from '@ferry/runtime';
import type { Clock, Logger, Registry } from '@ferry/runtime';
import type { DeadLetter, DeadLetterCounts, DeadLetterStore, HeldGroup, NewDeadLetter } from '@ferry/deadletter';
import type { DeviceMessageValidator } from './validate.js';
import type { GroupCommitter } from './commit.js';

/** Largest raw payload kept in a dead letter, in bytes (a payload within the size limit is kept whole, to be replayed). */
export const DEAD_LETTER_PAYLOAD_CAP = 1024 * 1024;
/**
 * What a dead letter keeps of a payload over the size limit (FERRY_ERR_PAYLOAD_TOO_LARGE): its first
 * 64 KiB, enough to see what the device sent; it cannot be replayed whole anyway.
 */
export const OVERSIZED_PAYLOAD_PREFIX = 64 * 1024;
/** Ends the reason of a letter for values set aside while the rest of the reading was committed. */
export const PARTIAL_LETTER_SUFFIX = '; the rest of the reading was kept';
/** A report's encoded size is kept under this by sending fewer letters. */
const MAX_REPORT_BYTES = 1024 * 1024;
/** Acks of this many recent reports are still taken (an ack that arrives after its report was resent). */
const RECENT_REPORTS = 8;

/** A device message refused at the gateway, as its dead letter; the payload is capped (MQTT allows 256 MB). */
export function deviceDeadLetter(gatewayId: string, rejection: Rejection, topic: string, deviceId: string | undefined, payload: Buffer, now: number): NewDeadLetter {
  const cap = rejection.code === 'FERRY_ERR_PAYLOAD_TOO_LARGE' ? OVERSIZED_PAYLOAD_PREFIX : DEAD_LETTER_PAYLOAD_CAP;
  const kept = payload.byteLength > cap ? payload.subarray(0, cap) : payload;
  const truncated = kept.byteLength < payload.byteLength;
  return {
    source: { gatewayId, topic, ...(deviceId !== undefined ? { deviceId } : {}) },
    code: rejection.code,
    reason: truncated ? `${rejection.reason} (first ${kept.byteLength} bytes kept)` : rejection.reason,
    ...(rejection.issues !== undefined ? { issues: rejection.issues } : {}),
    payload: kept,
    ...(truncated ? { payloadBytes: payload.byteLength } : {}),
    at: Math.floor(now),
  };
}

/** One letter as a report carries it: payload cut to REPORTED_PAYLOAD_BYTES and marked when cut. */
export function reportedLetter(letter: DeadLetter): ReportedLetter {
  const issues = letter.issues;
  return {
    id: letter.id,
    at: letter.at,
    code: letter.code,
    reason: letter.reason.slice(0, MAX_REPORTED_REASON_CHARS),
    ...(issues !== undefined ? { issues: issues.slice(0, 100) } : {}),
    ...(letter.source.deviceId !== undefined ? { deviceId: letter.source.deviceId.slice(0, 256) } : {}),
    ...(letter.source.topic !== undefined ? { topic: letter.source.topic } : {}),
    replayedAt: letter.replayedAt,
    ...reportedPayload(letter.payload),
    // A letter whose payload the gateway itself capped: the size the device sent.
    ...(letter.payloadBytes !== undefined ? { payloadBytes: letter.payloadBytes, truncated: true } : {}),
  };
}

export interface ReportInput {
  readonly gatewayId: string;
  readonly reportId: string;
  readonly sentAt: number;
  /** The watermark: the highest letter id the centre acknowledged. */
  readonly after: number;
  /** Letters with id > after, in id order. */
  readonly letters: readonly DeadLetter[];
  readonly counts: DeadLetterCounts;
  readonly groups: readonly HeldGroup[];
}

/** Pure: the report for these letters and counts; `through` is the last letter's id (or the watermark). */
export function buildReport(input: ReportInput): DeadLetterReport {
  const last = input.letters[input.letters.length - 1];
  const byCode: Record<string, number> = {};
  for (const [code, n] of Object.entries(input.counts.byCode)) if (n !== undefined) byCode[code] = n;
  return {
    v: DEAD_LETTER_REPORT_VERSION,
    type: 'report',
    gatewayId: input.gatewayId,
    reportId: input.reportId,
    sentAt: Math.floor(input.sentAt),
    after: input.after,
    through: last ? Math.max(last.id, input.after) : input.after,
    letters: input.letters.map(reportedLetter),
    counts: {
      held: input.counts.held,
      discarded: input.counts.discarded,
      byCode,
      byDevice: input.groups.slice(0, MAX_COUNT_GROUPS_PER_REPORT).map((g) => ({ deviceId: g.deviceId, code: g.code, held: g.held })),
    },
  };
}

/** Why a letter must not be replayed, or undefined when it may be. */
export function unreplayableReason(letter: DeadLetter): string | undefined {
  if (letter.code === 'FERRY_ERR_DEVICE_NOT_AUTHORIZED') {
    return 'it was published under another device\'s login; replaying it would bypass devices.listen.deviceMustMatchUser';
  }
  if (letter.reason.endsWith(PARTIAL_LETTER_SUFFIX)) return 'only some values were set aside; the rest of its reading is already in the outbox';
  if (letter.payloadBytes !== undefined) return `only the first ${letter.payload.byteLength} of its ${letter.payloadBytes} bytes were kept`;
  if (letter.source.topic === undefined) return 'its topic is unknown';
  return undefined;
}

/** The watermark: the highest letter id the centre acknowledged, in deadletters.db so a new file starts from 0. */
export interface ReportWatermark {
  readonly through: number;
  advance(through: number, at: number): void;
  close(): void;
}

export function openReportWatermark(path: string): ReportWatermark {
  const db: Database.Database = openSqlite({
    path,
    what: 'dead-letter report watermark',
    synchronous: 'full',
    setup: (d) =>
      d.exec(`
        CREATE TABLE IF NOT EXISTS dead_letter_reports (
          id INTEGER PRIMARY KEY CHECK (id = 1),
          reported_through INTEGER NOT NULL,
          acked_at INTEGER
        );
        INSERT OR IGNORE INTO dead_letter_reports (id, reported_through, acked_at) VALUES (1, 0, NULL);
      `),
  });
  const read = db.prepare<[], { reported_through: number }>('SELECT reported_through FROM dead_letter_reports WHERE id = 1');
  // Never backwards: an ack of an older report arriving late moves nothing.
  const write = db.prepare<[number, number]>('UPDATE dead_letter_reports SET reported_through = MAX(reported_through, ?), acked_at = ? WHERE id = 1');
  let through = read.get()?.reported_through ?? 0;
  return {
    get through() {
      return through;
    },
    advance(to, at) {
      write.run(to, Math.floor(at));
      through = Math.max(through, to);
    },
    close() {
      if (db.open) db.close();
    },
  };
}

/** What the reporter needs of the uplink: QoS 1 publishes, `done` on PUBACK or failure. */
export interface ReportUplink {
  readonly connected: boolean;
  publish(topic: string, payload: Buffer, options: { retain?: boolean }, done?: (err?: Error) => void): void;
}

export interface DeadLetterReporterOptions {
  readonly gatewayId: string;
  readonly store: DeadLetterStore;
  /** The store's file (deadletters.db): the watermark is kept in it. */
  readonly path: string;
  /** The uplink once it exists. */
  readonly uplink: () => ReportUplink | undefined;
}

export interface DeadLetterReporterDeps {
  /** Stage 2 again, under the patterns configured now. */
  readonly validator: Pick<DeviceMessageValidator, 'validate'>;
  /** Stage 3: the readings of a replayed letter are committed like a device's. */
  readonly committer: Pick<GroupCommitter, 'add'>;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly registry: Registry;
  /** A report not acked within this is sent again. */
  readonly ackTimeoutMs: number;
  /** How often unsent letters are looked for, and counts re-sent while letters are held. */
  readonly intervalMs: number;
  readonly maxLettersPerReport?: number;
}

export interface DeadLetterReporter {
  /** The topics the uplink subscribes to for this reporter. */
  readonly topics: readonly string[];
  /** Letters were added or changed: report soon. */
  changed(): void;
  /** The uplink granted (or refused) the control subscription at this connect. */
  subscribed(granted: boolean): void;
  uplinkDown(): void;
  /** A message on the control topic. */
  receive(topic: string, payload: Buffer): void;
  /** The highest letter id the centre acknowledged. */
  readonly reportedThrough: number;
  close(): void;
}

interface SentReport {
  readonly reportId: string;
  readonly through: number;
  readonly letters: number;
  readonly fingerprint: string;
}

export function createDeadLetterReporter(where: DeadLetterReporterOptions, deps: DeadLetterReporterDeps): DeadLetterReporter {
  const { gatewayId, store } = where;
  const { clock, logger } = deps;
  const options = { ...where, ...deps };
  const publish = (topic: string, payload: Buffer, done: (err?: Error) => void): void => {
    const uplink = where.uplink();
    if (uplink) uplink.publish(topic, payload, {}, done);
    else done(new Error('uplink not started'));
  };
  const commit = (readings: readonly DeviceReading[]): Promise<void> =>
    new Promise((resolve, reject) => deps.committer.add(readings, (err) => (err ? reject(err) : resolve())));
  const maxLetters = Math.min(options.maxLettersPerReport ?? MAX_LETTERS_PER_REPORT, MAX_LETTERS_PER_REPORT);
  const reportTopic = uplinkTopics.deadLetters(gatewayId);
  const controlTopic = uplinkTopics.deadLetterControl(gatewayId);
  const watermark = openReportWatermark(options.path);
  const registers = [options.registry];
  const reported = new Counter({
    name: 'ferry_gateway_deadletters_reported_total',
    help: 'Dead letters the centre acknowledged receiving (each once; resent reports not counted again)',
    registers,
  });
  const reports = new Counter({
    name: 'ferry_gateway_deadletter_reports_total',
    help: 'Dead-letter reports by outcome: acked, failed (publish), timeout (no ack; sent again)',
    labelNames: ['outcome'],
    registers,
  });
  const replays = new Counter({
    name: 'ferry_gateway_deadletter_replays_total',
    help: 'Replays of dead letters the centre asked for, by outcome',
    labelNames: ['outcome'],
    registers,
  });

  let closed = false;
  let permitted = false;
  let refusedLogged = false;
  let inFlight: SentReport | undefined;
  let ackTimer: NodeJS.Timeout | undefined;
  let soon: NodeJS.Immediate | undefined;
  const recent: SentReport[] = [];
  /** What the centre last acknowledged of the counts; a report goes out when they differ. */
  let ackedFingerprint: string | undefined;
  let lastSentAt = Number.NEGATIVE_INFINITY;
  const replaying = new Set<number>();
  const timer = setInterval(() => pump(), options.intervalMs);
  timer.unref();

  function clearInFlight(): void {
    if (ackTimer) clearTimeout(ackTimer);
    ackTimer = undefined;
    inFlight = undefined;
  }

  function schedule(): void {
    if (closed || soon) return;
    soon = setImmediate(() => {
      soon = undefined;
      pump();
    });
  }

  function pump(): void {
    if (closed || !permitted || inFlight || !(where.uplink()?.connected ?? false)) return;
    let report: DeadLetterReport;
    let fingerprint: string;
    let payload: Buffer;
    try {
      const after = watermark.through;
      let letters = store.list({ afterId: after, includeReplayed: true, limit: maxLetters });
      const counts = store.counts();
      const groups = store.heldBy(MAX_COUNT_GROUPS_PER_REPORT);
      fingerprint = JSON.stringify([counts, groups]);
      const due = letters.length > 0 || fingerprint !== ackedFingerprint || (counts.held > 0 && clock.now() - lastSentAt >= options.intervalMs);
      if (!due) return;
      const reportId = newBatchNonce();
      for (;;) {
        report = buildReport({ gatewayId, reportId, sentAt: clock.now(), after, letters, counts, groups });
        payload = encodeDeadLetterMessage(report);
        if (payload.byteLength <= MAX_REPORT_BYTES || letters.length <= 1) break;
        letters = letters.slice(0, Math.ceil(letters.length / 2));
      }
    } catch (err) {
      // Closed or failing storage: the letters stay, the next tick tries again.
      logger.warn({ err }, 'dead-letter report could not be built; trying again later');
      return;
    }
    const sent: SentReport = { reportId: report.reportId, through: report.through, letters: report.letters.length, fingerprint };
    inFlight = sent;
    lastSentAt = clock.now();
    recent.push(sent);
    if (recent.length > RECENT_REPORTS) recent.shift();
    ackTimer = setTimeout(() => {
      if (inFlight !== sent) return;
      reports.inc({ outcome: 'timeout' });
      clearInFlight();
      schedule();
    }, options.ackTimeoutMs);
    publish(reportTopic, payload, (err) => {
      if (!err || inFlight !== sent) return;
      reports.inc({ outcome: 'failed' });
      logger.debug({ err: err.message }, 'dead-letter report not published; it is sent again once the uplink is back');
      clearInFlight();
    });
  }

  function onAck(reportId: string): void {
    const sent = recent.find((r) => r.reportId === reportId);
    if (!sent) return;
    recent.splice(recent.indexOf(sent), 1);
    const before = watermark.through;
    try {
      watermark.advance(sent.through, clock.now());
    } catch (err) {
      // The letters are sent again; the centre keeps each once.
      logger.warn({ err }, 'dead-letter report watermark not saved; those letters will be reported again');
      return;
    }
    if (sent.through > before) reported.inc(sent.letters);
    reports.inc({ outcome: 'acked' });
    if (inFlight === sent) {
      ackedFingerprint = sent.fingerprint;
      clearInFlight();
    }
    schedule();
  }

  async function replay(request: ReplayRequest): Promise<Omit<ReplayResult, 'v' | 'type' | 'gatewayId' | 'requestId' | 'at'>> {
    const letterId = request.letterId;
    const letter = store.get(letterId);
    if (!letter) return { letterId, outcome: 'not-found', reason: `no dead letter ${letterId} is held here (purged, or discarded by the bound)` };
    if (letter.replayedAt !== null) return { letterId, outcome: 'already-replayed' };
    const why = unreplayableReason(letter);
    if (why !== undefined) return { letterId, outcome: 'unreplayable', reason: why };
    if (replaying.has(letterId)) return { letterId, outcome: 'failed', reason: 'a replay of this letter is under way' };
    replaying.add(letterId);
    try {
      const topic = letter.source.topic ?? '';
      const verdict = deps.validator.validate(topic, letter.payload, Math.floor(clock.now()));
      if (!verdict.ok) {
        const { code, reason, issues } = verdict.rejection;
        store.amend(letterId, { code, reason, ...(issues !== undefined ? { issues } : {}) });
        return { letterId, outcome: 'rejected', code, reason, ...(issues !== undefined ? { issues: issues.slice(0, 100) } : {}) };
      }
      try {
        await commit(verdict.readings);
      } catch (err) {
        return { letterId, outcome: 'failed', reason: `the outbox did not take its readings: ${(err as Error).message}` };
      }
      store.markReplayed([letterId], clock.now());
      if (verdict.dropped.length > 0) {
        store.addMany(
          verdict.dropped.map((r) =>
            deviceDeadLetter(gatewayId, { ...r, reason: `${r.reason}${PARTIAL_LETTER_SUFFIX}` }, topic, verdict.deviceId, letter.payload, clock.now()),
          ),
        );
      }
      return { letterId, outcome: 'committed', readings: verdict.readings.length };
    } finally {
      replaying.delete(letterId);
    }
  }

  function onReplay(request: ReplayRequest): void {
    replay(request)
      .catch((err: unknown) => ({ letterId: request.letterId, outcome: 'failed' as const, reason: (err as Error).message }))
      .then((result) => {
        replays.inc({ outcome: result.outcome });
        logger.info({ ...result, requestId: request.requestId }, 'dead letter replayed at the centre\'s request');
        const message: ReplayResult = { v: DEAD_LETTER_REPORT_VERSION, type: 'replay-result', gatewayId, requestId: request.requestId, at: Math.floor(clock.now()), ...result };
        // Lost with the uplink, the centre asks again: the letter's state here answers the same.
        if (!closed) publish(reportTopic, encodeDeadLetterMessage(message), (err) => err && logger.warn({ err: err.message }, 'replay result not published'));
        schedule();
      })
      .catch((err: unknown) => logger.error({ err }, 'replay result not sent'));
  }

  return {
    topics: [controlTopic],
    changed: schedule,
    subscribed(granted) {
      permitted = granted;
      if (!granted && !refusedLogged) {
        refusedLogged = true;
        logger.warn(
          { topic: controlTopic },
          'the broker refused the dead-letter control subscription: dead letters stay unreported until its ACL grants role gateway (docs/broker.md)',
        );
      }
      // A fresh connection: the centre may have restarted, so the counts go once more.
      ackedFingerprint = undefined;
      schedule();
    },
    uplinkDown() {
      permitted = false;
      clearInFlight();
    },
    receive(topic, payload) {
      if (closed || topic !== controlTopic) return;
      const decoded = decodeDeadLetterControl(payload);
      if (!decoded.ok || decoded.value.gatewayId !== gatewayId) {
        logger.warn({ reason: decoded.ok ? 'another gateway id' : decoded.reason }, 'dead-letter control message ignored');
        return;
      }
      if (decoded.value.type === 'report-ack') onAck(decoded.value.reportId);
      else onReplay(decoded.value);
    },
    get reportedThrough() {
      return watermark.through;
    },
    close() {
      closed = true;
      clearInterval(timer);
      if (soon) clearImmediate(soon);
      clearInFlight();
      watermark.close();
    },
  };
}
