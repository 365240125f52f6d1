// createGateway: wires the stages in order. receive -> validate -> commit -> batch -> send ->
// await ack -> delete. Rejected device messages go to the dead-letter store instead of commit.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError, uplinkTopics } from '@ferry/protocol';
import { parseDuration } from '@ferry/processing/schema';
import type { GapRecord, GatewayDisk } from '@ferry/protocol';
import { createLogger, createBasicOpsServer, opsTokens, createRegistry, isDiskFull, parseConfig, systemClock } from '@ferry/runtime';
import type { BasicOpsServer, Clock, Logger, Registry } from '@ferry/runtime';
import { createSqliteDeadLetterStore } from '@ferry/deadletter';
import { GATEWAY_SQLITE_CACHE_KIB } from './outbox-file.js';
import type { DeadLetterStore } from '@ferry/deadletter';
import { gatewayConfigSchema } from './config.js';
import type { GatewayConfig, GatewayConfigInput } from './config.js';
import { attachToBroker, listenForDevices } from './receive.js';
import { createDeviceAccess } from './device-access.js';
import type { DeviceAccess } from './device-access.js';
import type { DeviceAttachment, DeviceListener } from './receive.js';
import { createDeviceMessageValidator } from './validate.js';
import { createDeadLetterReporter } from './deadletter-report.js';
import { createDeviceIntake } from './intake.js';
import { MessageAccounting } from './message-accounting.js';
import type { DeviceMessageCounts } from './message-accounting.js';
import type { DeadLetterReporter } from './deadletter-report.js';
import { createGroupCommitter } from './commit.js';
import type { GroupCommitter } from './commit.js';
import { createSqliteOutbox } from './outbox.js';
import type { Outbox } from './outbox.js';
import { createSender } from './send.js';
import type { Sender } from './send.js';
import { createAckHandler, InFlightBatches } from './ack.js';
import { connectUplink } from './uplink.js';
import type { Uplink } from './uplink.js';
import { COMPACTED_IN_STATUS, encodeGatewayStatus, gatewayStatus, GAPS_IN_STATUS } from './status.js';
import { DrainMeter } from './drain.js';
import { MAX_GAP_RECORDS } from './drops.js';
import type { CompactedSpan } from './drops.js';
import type { DrainProgress } from './drain.js';
import { DiskWearMeter } from './disk-wear.js';
import { StorageAlarm } from './storage-alarm.js';
import { createDiskGuard, sizeForDisk } from './disk-guard.js';
import type { DiskGuard } from './disk-guard.js';
import type { DiskReserve } from './disk-space.js';
import { createGatewayMetrics } from './metrics.js';
// Edge processing (and @ferry/processing's operators) is imported in start(), only when pipelines are configured.
import type { EdgeProcessing, EdgeProcessingStats, UplinkSettlement } from './process.js';
import type { GatewayMetrics } from './metrics.js';

export interface GatewayDeps {
  readonly logger?: Logger;
  readonly clock?: Clock;
  readonly registry?: Registry;
}

export interface GatewayStats {
  /** Device messages received (accepted or not). */
  received: number;
  /** Readings committed to the outbox. */
  committed: number;
  /** Device messages refused and dead-lettered. */
  rejected: number;
  outboxDepth: number;
  outboxBytes: number;
  /** When the gateway received the oldest reading still in the outbox. */
  oldestTs: number | null;
  inFlightBatches: number;
  /** Readings published in batches, resends included. */
  sentReadings: number;
  /** Readings deleted from the outbox after an ack. */
  ackedReadings: number;
  /** Readings the outbox discarded, by reason (e.g. outbox_full), since the outbox was created. */
  dropped: Record<string, number>;
  /** With whenFull 'compact': readings replaced by summaries, and summaries written, since the outbox was created. */
  compacted: { readings: number; summaries: number } | null;
  uplinkConnected: boolean;
  /** Entries held in the dead-letter store. */
  deadLetters: number;
  /** Backlog drain progress: readings held, acked per second, seconds left (null while nothing drains). */
  drain: DrainProgress;
  /** True while a backlog drains with live readings sent first. */
  draining: boolean;
  /** Readings refused because the outbox was full (whenFull: refuse-new); devices publish them again. */
  refusedReadings: number;
  /** Group commits that failed (disk full, storage error); their devices were not acknowledged. */
  commitFailures: number;
  /** Bytes written to storage per reading committed since start (SD-card wear); null until measurable. */
  diskWriteBytesPerReading: number | null;
  /** Where a corrupt outbox found at start was moved; null when none was. */
  outboxSetAside: string | null;
  /** Edge processing: readings and bytes in and out, values removed or changed by reason; null without pipelines. */
  processing: EdgeProcessingStats | null;
  /** The disk under the outbox at the last check (every few seconds); null before the first. */
  disk: GatewayDisk | null;
  /** Where device messages went: received = stored + dead_lettered + ignored + deferred, once none is in flight. */
  messages: Readonly<DeviceMessageCounts>;
}

export interface Gateway {
  /** Outbox open, device listener and http bound; the uplink connects in the background. */
  ready(): Promise<void>;
  /** Stops accepting, flushes pending commits, closes the uplink cleanly (offline status), closes the files. */
  close(): Promise<void>;
  readonly deviceUrl: string | undefined;
  readonly httpUrl: string | undefined;
  stats(): GatewayStats;
  /** Available once ready(). */
  readonly deadLetters: DeadLetterStore;
}

export { DEAD_LETTER_PAYLOAD_CAP } from './deadletter-report.js';

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/** Open resources, in the order they were opened, so a failed start or a close undoes them all. */
interface Running {
  readonly outbox: Outbox;
  readonly disk: DiskGuard;
  readonly deadLetters: DeadLetterStore;
  readonly committer: GroupCommitter;
  readonly inFlight: InFlightBatches;
  readonly sender: Sender;
  listener?: DeviceListener;
  /** The device listener's accounts and per-device rule; none for an attached broker. */
  access?: DeviceAccess;
  attachment?: DeviceAttachment;
  ops?: BasicOpsServer;
  uplink?: Uplink;
  reports?: DeadLetterReporter;
  statusTimer?: NodeJS.Timeout;
  drainTimer?: NodeJS.Timeout;
}

export function createGateway(configInput: GatewayConfigInput, deps: GatewayDeps = {}): Gateway {
  const config: GatewayConfig = parseConfig(gatewayConfigSchema, configInput, 'gateway config');
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? createLogger({ level: config.logLevel, name: 'ferry-gateway' });
  // Process metrics too (memory, CPU, event-loop lag, GC), under their standard unprefixed names.
  const registry = deps.registry ?? createRegistry({ defaultMetrics: true, prefix: '' });
  const version = packageVersion();
  const { gatewayId } = config;
  const validator = createDeviceMessageValidator(config.devices.patterns, config.limits);
  /** Set by start() when pipelines are configured. */
  let edge: EdgeProcessing | undefined;

  let state: 'new' | 'starting' | 'ready' | 'closing' | 'closed' = 'new';
  let running: Running | undefined;
  let readyPromise: Promise<void> | undefined;
  let closePromise: Promise<void> | undefined;
  const counts = { received: 0, committed: 0, rejected: 0, sentReadings: 0, ackedReadings: 0, refusedReadings: 0, commitFailures: 0 };
  const drainMeter = new DrainMeter({ clock, aboveReadings: config.drain.aboveReadings, logIntervalMs: config.drain.logIntervalMs });
  const diskWear = new DiskWearMeter();
  const storageAlarm = new StorageAlarm(clock, 10_000);
  // A full outbox under drop-oldest drops at every group commit: one line per 10 s says how many.
  const dropLog = new StorageAlarm(clock, 10_000);
  let droppedSinceLog = 0;

  function drainProgress(): DrainProgress {
    return drainMeter.progress(running?.outbox.stats().depth ?? 0);
  }

  const metrics: GatewayMetrics = createGatewayMetrics(registry, {
    received: () => counts.received,
    messages: () => accounting.totals(),
    outboxDepth: () => running?.outbox.stats().depth ?? 0,
    outboxBytes: () => running?.outbox.stats().bytes ?? 0,
    outboxOldestTs: () => running?.outbox.stats().oldestTs ?? null,
    outboxDropped: () => running?.outbox.stats().dropped ?? {},
    inFlightBatches: () => running?.inFlight.size ?? 0,
    uplinkConnected: () => running?.uplink?.connected ?? false,
    deadLetters: () => heldDeadLetters(),
    diskWriteBytesPerReading: () => diskWear.bytesPerReading(counts.committed),
    drain: () => drainProgress(),
    processing: () => edge?.stats(),
    disk: () => running?.disk.status() ?? null,
    now: () => clock.now(),
  });

  /** Edge processing back to the state saved in the outbox: after a commit that did not happen, or a resend. */
  function rollbackProcessing(outbox: Outbox): void {
    if (!edge) return;
    try {
      edge.restore(outbox.pipelineState());
    } catch (err) {
      // Without its saved state a series starts afresh: a deadband sends its next value, an open window starts over.
      logger.error({ err }, 'edge processing state could not be read back from the outbox; its series start afresh');
      edge.restore([]);
    }
  }

  function heldDeadLetters(): number {
    if (!running || state === 'closed') return 0;
    try {
      return running.deadLetters.counts().held;
    } catch {
      return 0;
    }
  }

  const accounting = new MessageAccounting({ ignored: (reason) => metrics.messagesIgnored.inc({ reason }) });
  const handleDeviceMessage = createDeviceIntake({
    gatewayId,
    validator,
    clock,
    logger,
    metrics,
    accounting,
    counts,
    targets: () => (running && state === 'ready' ? running : undefined),
  });

  function currentStatus(stateName: 'online' | 'offline', uplink: 'connected' | 'closed' | 'lost', epoch = running?.uplink?.epoch): Buffer {
    return encodeGatewayStatus(
      gatewayStatus({
        gatewayId,
        state: stateName,
        now: clock.now(),
        version,
        uplink,
        epoch,
        statusIntervalMs: config.statusIntervalMs,
        ...(running
          ? {
              outbox: running.outbox.stats(),
              deadLetters: heldDeadLetters(),
              gaps: currentGaps(running.outbox),
              drain: drainProgress(),
              ...(config.outbox.whenFull === 'compact' ? { compacted: currentCompacted(running.outbox) } : {}),
            }
          : {}),
        diskWriteBytesPerReading: diskWear.bytesPerReading(counts.committed),
        disk: running?.disk.status() ?? undefined,
        ...(edge ? { processing: edge.stats() } : {}),
      }),
    );
  }

  function currentGaps(outbox: Outbox): GapRecord[] {
    try {
      return outbox.gaps(GAPS_IN_STATUS);
    } catch {
      // Closed or failing storage: the status goes out without them, the records stay in the file.
      return [];
    }
  }

  function currentCompacted(outbox: Outbox): CompactedSpan[] {
    try {
      return outbox.compactedByDevice(COMPACTED_IN_STATUS);
    } catch {
      return [];
    }
  }

  function currentGapsAll(outbox: Outbox): GapRecord[] {
    return outbox.gaps(MAX_GAP_RECORDS);
  }

  function publishStatus(): void {
    const uplink = running?.uplink;
    if (!uplink?.connected) return;
    uplink.publish(uplinkTopics.status(gatewayId), currentStatus('online', 'connected'), { retain: true }, (err) => {
      if (err) logger.debug({ err: err.message }, 'status publish failed');
    });
  }

  /** On a full disk the reserve goes, so acked rows can be deleted and the backlog drains. */
  function releaseReserve(reserve: DiskReserve): boolean {
    if (!reserve.release()) return false;
    metrics.reserveReleased.inc();
    logger.warn({ reserveBytes: reserve.bytes }, 'the disk is full: reserve released so acked readings can be deleted and the backlog drains');
    return true;
  }

  function openFiles(): { outbox: Outbox; deadLetters: DeadLetterStore; disk: DiskGuard } {
    try {
      mkdirSync(config.dataDir, { recursive: true });
    } catch (err) {
      throw new FerryError('FERRY_ERR_STORAGE', `data directory ${config.dataDir} cannot be created: ${(err as Error).message}`, { dataDir: config.dataDir });
    }
    const { reserve, walPages } = sizeForDisk(config.dataDir, config.outbox.reserveBytes);
    const outboxPath = join(config.dataDir, 'outbox.db');
    const outbox = createSqliteOutbox({
      path: outboxPath,
      synchronous: config.outbox.synchronous,
      maxRows: config.outbox.maxRows,
      // auto: set from the free space by the first disk check, before any reading is accepted.
      ...(config.outbox.maxBytes === 'auto' ? {} : { maxBytes: config.outbox.maxBytes }),
      onDiskFull: () => releaseReserve(reserve),
      walAutocheckpointPages: walPages,
      maxAgeMs: config.outbox.maxAgeMs,
      whenFull: config.outbox.whenFull,
      // Validated by the config schema.
      compactIntervalMs: parseDuration(config.outbox.compaction.interval) ?? 60_000,
      summaryLimits: { maxMetricsPerReading: config.limits.maxMetricsPerReading, maxNameLength: config.limits.maxNameLength },
      clock,
    });
    if (outbox.corrupt) {
      const { asidePath, reason, lostByDevice, lostRows } = outbox.corrupt;
      const lost = lostByDevice ? lostByDevice.reduce((n, d) => n + d.count, 0) : (lostRows ?? 'unknown');
      // Loud on purpose: readings were lost, and the file is kept for inspection.
      logger.error(
        { asidePath, reason, lostReadings: lost },
        'the outbox file was corrupt: moved aside, its unsent readings are counted as dropped (corrupt); continuing on a fresh outbox',
      );
    }
    try {
      const deadLetters = createSqliteDeadLetterStore({
        path: join(config.dataDir, 'deadletters.db'),
        maxEntries: config.deadLetters.maxEntries,
        clock,
        cacheKiB: GATEWAY_SQLITE_CACHE_KIB,
      });
      const disk = createDiskGuard({
        dataDir: config.dataDir,
        outboxPath,
        outbox,
        reserve,
        maxBytes: config.outbox.maxBytes,
        diskShare: config.outbox.diskShare,
        logger,
      });
      disk.check();
      return { outbox, deadLetters, disk };
    } catch (err) {
      outbox.close();
      throw err;
    }
  }

  async function start(): Promise<void> {
    state = 'starting';
    let files: { outbox: Outbox; deadLetters: DeadLetterStore; disk: DiskGuard };
    let access: DeviceAccess | undefined;
    /** Before the uplink, the edge pipelines' rows are deleted only as their batches are acked, in order. */
    let settlement: UplinkSettlement | undefined;
    try {
      if (config.processing && config.processing.pipelines.length > 0) {
        const processing = await import('./process.js');
        edge = processing.createEdgeProcessing(config.processing, clock);
        if (edge.before === 'uplink') settlement = new processing.UplinkSettlement();
      }
      // A missing or malformed device password file stops the start before any file is opened.
      access = config.devices.listen !== false ? createDeviceAccess(config.devices.listen, logger) : undefined;
      files = openFiles();
    } catch (err) {
      state = 'closed';
      throw err;
    }
    const { outbox, deadLetters, disk } = files;
    // Fixed from here on: the stages below close over it.
    const edgeRun = edge;
    if (edge) {
      rollbackProcessing(outbox);
      const { restoredSeries, discardedSeries } = edge.stats();
      logger.info({ before: edge.before, restoredSeries, discardedSeries }, 'edge processing state restored');
    }
    const inFlight = new InFlightBatches();
    /** Before the uplink: deletes the rows of every batch acked in order, saving the state they led to. */
    const settleInOrder = (batchId: number): number | undefined => {
      const due = settlement?.acked(batchId);
      if (!due) return undefined;
      const deleted = outbox.settle(due.seqs, due.state);
      settlement?.settled(due.count);
      return deleted;
    };
    const sender = createSender({
      gatewayId,
      outbox,
      inFlight,
      policy: { maxReadings: config.batch.maxReadings, maxBytes: config.batch.maxBytes, lingerMs: config.batch.lingerMs },
      maxInFlight: config.batch.maxInFlight,
      compression: config.batch.compression,
      ackTimeoutMs: config.uplink.ackTimeoutMs,
      clock,
      logger,
      publish: (topic, payload, done) => {
        const uplink = running?.uplink;
        if (!uplink) {
          done(new Error('uplink not started'));
          return;
        }
        uplink.publish(topic, payload, {}, done);
      },
      onBatchSent: (readings, bytes) => {
        counts.sentReadings += readings;
        metrics.batchesSent.inc();
        metrics.sentReadings.inc(readings);
        metrics.sentBytes.inc(bytes);
      },
      onBatchRequeued: (batch, why) => {
        metrics.resends.inc({ why });
        logger.debug({ batchId: batch.batchId, readings: batch.seqs.length, why }, 'batch requeued');
      },
      // Processing before the uplink needs one stream in seq order, so a resend rebuilds the same batches.
      liveFirstAbove: config.drain.liveFirst && !settlement ? config.drain.aboveReadings : undefined,
      ...(edgeRun && settlement
        ? {
            processing: {
              process: (batchId, seqs, readings) => {
                const out = edgeRun.process(readings);
                settlement.built(batchId, seqs, edgeRun.takeState());
                return out;
              },
              nothingToSend: (batchId) => {
                try {
                  const deleted = settleInOrder(batchId) ?? 0;
                  counts.ackedReadings += deleted;
                  drainMeter.acked(deleted);
                  metrics.ackedReadings.inc(deleted);
                } catch (err) {
                  // The rows stay; the next resend or restart processes them again from the saved state.
                  logger.error({ err, batchId }, 'rows that produced nothing to send could not be settled');
                }
              },
              rollback: () => {
                settlement.reset();
                rollbackProcessing(outbox);
              },
            },
          }
        : {}),
      onDrainMode: ({ draining, boundary }) => {
        if (draining) logger.info({ backlog: outbox.stats().depth, boundary }, 'draining a backlog; readings arriving now are sent first');
        else logger.info({ outboxDepth: outbox.stats().depth }, 'backlog handed out; one stream again');
      },
    });
    const committer = createGroupCommitter({
      outbox,
      lingerMs: config.outbox.commitLingerMs,
      maxReadings: config.outbox.commitMaxReadings,
      inFlight: inFlight.excluded,
      ...(edgeRun?.before === 'outbox'
        ? { processing: { process: (readings) => edgeRun.process(readings), takeState: () => edgeRun.takeState(), rollback: () => rollbackProcessing(outbox) } }
        : {}),
      onCommitted: (result) => {
        counts.committed += result.seqs.length;
        metrics.committed.inc(result.seqs.length);
        disk.commitSucceeded();
        if (storageAlarm.succeeded()) logger.warn({ failures: storageAlarm.failures }, 'outbox commits succeed again');
        if (result.compacted) {
          const { readings, summaries, firstTs, lastTs } = result.compacted;
          metrics.compactedReadings.inc(readings);
          metrics.compactionSummaries.inc(summaries);
          // One line per compaction: each frees a share of the bound, so they are episodes, not per commit.
          logger.warn(
            { readings, summaries, firstTs, lastTs, interval: config.outbox.compaction.interval, maxRows: config.outbox.maxRows, maxBytes: config.outbox.maxBytes },
            'outbox bound reached: oldest unsent readings compacted into summaries (count, min, max, mean per interval)',
          );
        }
        if (result.droppedSeqs.length > 0) {
          droppedSinceLog += result.droppedSeqs.length;
          if (dropLog.failed().log) {
            const maxBytes = disk.status()?.maxBytes ?? config.outbox.maxBytes;
            logger.warn(
              { dropped: droppedSinceLog, maxRows: config.outbox.maxRows, maxBytes, maxBytesSetting: config.outbox.maxBytes, maxAgeMs: config.outbox.maxAgeMs },
              'outbox bound reached: readings dropped (counted, and named in gap records)',
            );
            droppedSinceLog = 0;
          }
        }
        sender.committed(result);
      },
      onRefused: (readings) => {
        counts.refusedReadings += readings;
        metrics.refusedReadings.inc(readings);
        const verdict = storageAlarm.failed();
        if (verdict.log) {
          logger.warn({ readings, suppressed: verdict.suppressed, maxRows: config.outbox.maxRows, maxBytes: config.outbox.maxBytes }, 'outbox full: new readings refused, devices will publish again');
        }
      },
      onError: (err, readings) => {
        counts.commitFailures += 1;
        metrics.commitErrors.inc();
        const diskFull = isDiskFull(err);
        if (diskFull) {
          metrics.storageFull.inc();
          disk.commitFailed();
        }
        const verdict = storageAlarm.failed();
        if (verdict.log) {
          logger.error(
            { err, readings, diskFull, suppressed: verdict.suppressed },
            diskFull
              ? 'outbox commit failed: the disk is full; devices were not acknowledged and will publish again'
              : 'outbox commit failed; devices were not acknowledged and will publish again',
          );
        }
      },
    });
    const run: Running = { outbox, disk, deadLetters, committer, inFlight, sender, ...(access ? { access } : {}) };
    running = run;

    try {
      if (config.devices.listen !== false && access) {
        run.listener = await listenForDevices({
          host: config.devices.listen.host,
          port: config.devices.listen.port,
          access,
          logger,
          onMessage: handleDeviceMessage,
          maxPayloadBytes: config.limits.maxPayloadBytes,
          clock,
          onConnectRefused: (reason) => metrics.connectsRefused.inc({ reason }),
        });
      }
      if (config.http !== false) {
        // node:http rather than Fastify: four JSON GET routes do not need a framework's memory.
        const ops = createBasicOpsServer({
          host: config.http.host,
          port: config.http.port,
          registry,
          tokens: opsTokens(config.http),
          protectedPaths: ['/gaps', '/messages'],
          health: () => ({
            ok: state === 'ready',
            state,
            uplinkConnected: run.uplink?.connected ?? false,
            outbox: outbox.stats(),
            inFlightBatches: inFlight.size,
            drain: drainProgress(),
            disk: disk.status(),
            ...(edge ? { processing: edge.stats() } : {}),
          }),
        });
        // The ops view of what was lost: every gap record the outbox file holds, newest first.
        ops.get('/gaps', () => ({
          gaps: currentGapsAll(outbox),
          dropped: outbox.droppedByDevice(),
          ...(config.outbox.whenFull === 'compact' ? { compacted: outbox.compactedByDevice() } : {}),
        }));
        // Where every device message went (message-accounting.ts): totals and per device.
        ops.get('/messages', () => ({ total: accounting.totals(), devices: Object.fromEntries(accounting.devices()) }));
        run.ops = ops;
        await ops.listen();
      }
      const onAck = createAckHandler({
        gatewayId,
        inFlight,
        outbox,
        logger,
        counters: {
          onAcked: (_batch, ack, deleted, late) => {
            counts.ackedReadings += deleted;
            drainMeter.acked(deleted);
            metrics.ackedReadings.inc(deleted);
            if (late) metrics.lateAcks.inc();
            if (ack.rejected.length > 0) metrics.ingestorRejected.inc(ack.rejected.length);
          },
          onIgnored: (reason) => metrics.acksIgnored.inc({ reason }),
        },
        onSettled: (batchId) => sender.settled(batchId),
        ...(settlement ? { settle: (batch: { batchId: number }) => settleInOrder(batch.batchId) } : {}),
      });
      const reports = createDeadLetterReporter({ gatewayId, store: deadLetters, path: join(config.dataDir, 'deadletters.db'), uplink: () => run.uplink }, {
        ...{ validator, committer, clock, logger, registry, ackTimeoutMs: config.uplink.ackTimeoutMs, intervalMs: config.deadLetters.reportIntervalMs },
      });
      run.reports = reports;
      run.uplink = connectUplink(
        {
          url: config.uplink.url,
          gatewayId,
          clientId: config.uplink.clientId ?? `ferry-gw-${gatewayId}`,
          username: config.uplink.username,
          password: config.uplink.password,
          ca: config.uplink.ca,
          rejectUnauthorized: config.uplink.rejectUnauthorized,
          keepaliveSec: config.uplink.keepaliveSec,
          reconnectMinMs: config.uplink.reconnectMinMs,
          reconnectMaxMs: config.uplink.reconnectMaxMs,
          logger,
          lastWill: (epoch) => currentStatus('offline', 'lost', epoch),
          nextEpoch: () => outbox.nextBatchId(),
          extraTopics: reports.topics,
        },
        {
          onUp: () => {
            publishStatus();
            sender.uplinkUp();
          },
          onDown: () => {
            sender.uplinkDown();
            reports.uplinkDown();
          },
          onAck,
          onExtraSubscribed: (granted) => reports.subscribed(granted),
          onMessage: (topic, payload) => reports.receive(topic, payload),
        },
      );
      // Readings may only be accepted once everything downstream exists.
      state = 'ready';
      if (config.devices.attach) {
        const attach = config.devices.attach;
        run.attachment = attachToBroker({
          url: attach.url,
          username: attach.username,
          password: attach.password,
          clientId: attach.clientId ?? `ferry-gw-${gatewayId}-devices`,
          qos: attach.qos,
          filters: validator.patterns.map((p) => p.filter),
          acceptRetained: attach.acceptRetained,
          reconnectMinMs: config.uplink.reconnectMinMs,
          reconnectMaxMs: config.uplink.reconnectMaxMs,
          logger,
          onMessage: handleDeviceMessage,
          onRetainedSkipped: () => metrics.retainedSkipped.inc(),
        });
      }
      run.statusTimer = setInterval(() => {
        publishStatus();
        // A safety net: anything left unsent by a missed event goes out on the next tick.
        sender.pump();
      }, config.statusIntervalMs);
      run.drainTimer = setInterval(() => {
        run.disk.check();
        expireAged(run);
        logDrain(run);
      }, Math.min(config.drain.logIntervalMs, config.statusIntervalMs));
      expireAged(run);
      logger.info(
        { gatewayId, deviceUrl: run.listener?.url, httpUrl: run.ops?.url, outboxDepth: outbox.stats().depth, version },
        'gateway ready',
      );
    } catch (err) {
      await shutdown(run, false);
      state = 'closed';
      throw err;
    }
  }

  /** The age bound also holds while nothing is committed. */
  function expireAged(run: Running): void {
    try {
      const dropped = run.outbox.expire({ inFlight: run.inFlight.excluded });
      if (dropped.length > 0) {
        logger.warn({ dropped: dropped.length, maxAgeMs: config.outbox.maxAgeMs }, 'readings older than the outbox age bound dropped (counted, and named in gap records)');
        run.sender.pump();
      }
    } catch (err) {
      logger.warn({ err }, 'the outbox age bound could not be applied; trying again later');
    }
  }

  function logDrain(run: Running): void {
    const backlog = run.outbox.stats().depth;
    const what = drainMeter.report(backlog);
    if (what === 'progress') {
      const { ratePerSec, etaSec } = drainMeter.progress(backlog);
      logger.info({ backlog, ratePerSec, etaSec, uplinkConnected: run.uplink?.connected ?? false }, 'draining the outbox backlog');
    } else if (what === 'done') {
      logger.info({ backlog }, 'outbox backlog drained');
    }
  }

  async function shutdown(run: Running, clean: boolean): Promise<void> {
    if (run.statusTimer) clearInterval(run.statusTimer);
    if (run.drainTimer) clearInterval(run.drainTimer);
    run.listener?.stopAccepting();
    // Whatever devices already handed over is committed and acknowledged before they are cut off.
    run.committer.close();
    await new Promise<void>((resolve) => setImmediate(resolve));
    const closing: Promise<void>[] = [];
    if (run.listener) closing.push(run.listener.close());
    if (run.attachment) closing.push(run.attachment.close());
    await Promise.allSettled(closing);
    run.sender.close();
    if (run.uplink) {
      try {
        await run.uplink.close(clean ? currentStatus('offline', 'closed') : undefined);
      } catch (err) {
        logger.warn({ err }, 'uplink did not close cleanly');
      }
    }
    if (run.ops) await run.ops.close().catch((err: unknown) => logger.warn({ err }, 'http server did not close cleanly'));
    run.outbox.close();
    run.reports?.close();
    run.deadLetters.close();
  }

  return {
    ready() {
      if (state === 'closing' || state === 'closed') {
        return Promise.reject(new FerryError('FERRY_ERR_NOT_READY', 'the gateway was closed'));
      }
      readyPromise ??= start();
      return readyPromise;
    },
    close() {
      if (closePromise) return closePromise;
      closePromise = (async () => {
        if (readyPromise) await readyPromise.catch(() => undefined);
        const run = running;
        if (!run || state === 'closed') {
          state = 'closed';
          return;
        }
        state = 'closing';
        try {
          await shutdown(run, true);
        } finally {
          state = 'closed';
        }
        logger.info({ gatewayId }, 'gateway closed');
      })();
      return closePromise;
    },
    get deviceUrl() {
      return running?.listener?.url;
    },
    get httpUrl() {
      return running?.ops?.url;
    },
    stats(): GatewayStats {
      // The outbox keeps its figures in memory, so they stay readable after close.
      const outbox = running?.outbox.stats();
      return {
        received: counts.received,
        committed: counts.committed,
        rejected: counts.rejected,
        messages: { ...accounting.totals() },
        outboxDepth: outbox?.depth ?? 0,
        outboxBytes: outbox?.bytes ?? 0,
        oldestTs: outbox?.oldestTs ?? null,
        inFlightBatches: running?.inFlight.size ?? 0,
        sentReadings: counts.sentReadings,
        ackedReadings: counts.ackedReadings,
        dropped: { ...(outbox?.dropped ?? {}) },
        compacted: outbox?.compacted ? { ...outbox.compacted } : null,
        uplinkConnected: running?.uplink?.connected ?? false,
        deadLetters: heldDeadLetters(),
        drain: drainProgress(),
        draining: running?.sender.draining ?? false,
        refusedReadings: counts.refusedReadings,
        commitFailures: counts.commitFailures,
        diskWriteBytesPerReading: diskWear.bytesPerReading(counts.committed),
        outboxSetAside: running?.outbox.corrupt?.asidePath ?? null,
        processing: edge?.stats() ?? null,
        disk: running?.disk.status() ?? null,
      };
    },
    get deadLetters(): DeadLetterStore {
      if (!running) throw new FerryError('FERRY_ERR_NOT_READY', 'the dead-letter store opens in ready()');
      return running.deadLetters;
    },
  };
}

