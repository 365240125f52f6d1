// Stages 2 and 3 for one device message, between the listener (receive.ts) and the group commit:
// who may publish as which device, decode and validate, then dead-letter or commit, and account
// for where the message went (message-accounting.ts). `done` gates the device's acknowledgement:
// it is called once the message is durable as readings, as a dead letter, or counted as ignored.
import { FerryError } from '@ferry/protocol';
import type { DeviceReading, Rejection } from '@ferry/protocol';
import type { Clock, Logger } from '@ferry/runtime';
import type { DeadLetterStore } from '@ferry/deadletter';
import type { DeviceAccess } from './device-access.js';
import { notAuthorized } from './device-access.js';
import type { DeviceMessageHandler, DeviceSender } from './receive.js';
import type { DeviceMessageValidator } from './validate.js';
import type { GroupCommitter } from './commit.js';
import { deviceDeadLetter, PARTIAL_LETTER_SUFFIX } from './deadletter-report.js';
import type { DeadLetterReporter } from './deadletter-report.js';
import type { GatewayMetrics } from './metrics.js';
import type { MessageAccounting } from './message-accounting.js';

/** What the intake writes to, present while the gateway runs. */
export interface IntakeTargets {
  readonly access?: DeviceAccess | undefined;
  readonly deadLetters: DeadLetterStore;
  readonly committer: GroupCommitter;
  readonly reports?: DeadLetterReporter | undefined;
}

export interface IntakeDeps {
  readonly gatewayId: string;
  readonly validator: DeviceMessageValidator;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  readonly accounting: MessageAccounting;
  /** The running gateway's stores, or undefined while it is not taking readings. */
  readonly targets: () => IntakeTargets | undefined;
  /** Counters the gateway's stats() reports. */
  readonly counts: { received: number; rejected: number };
}

/** The reason of a message that decoded to no reading while no pattern says to ignore it. */
export const NO_READING_REASON = 'the message holds no reading, and no pattern ignores its topic (action: ignore)';

/** The first reading the user may not publish as, if any. */
function firstForeign(readings: readonly DeviceReading[], access: DeviceAccess, username: string | undefined): DeviceReading | undefined {
  for (const reading of readings) if (!access.mayPublishAs(username, reading.deviceId)) return reading;
  return undefined;
}

export function createDeviceIntake(deps: IntakeDeps): DeviceMessageHandler {
  const { validator, clock, logger, metrics, accounting, counts } = deps;

  /** A refused message: dead-lettered, then acknowledged; if it cannot be kept, not acknowledged. */
  function refuse(
    run: IntakeTargets,
    topic: string,
    payload: Buffer,
    done: (err: Error | null) => void,
    rejection: Rejection,
    deviceId: string | undefined,
  ): void {
    try {
      run.deadLetters.add(deviceDeadLetter(deps.gatewayId, rejection, topic, deviceId, payload, clock.now()));
      run.reports?.changed();
    } catch (err) {
      logger.error({ err, topic }, 'a refused device message could not be dead-lettered');
      // Not acknowledged: the device sends it again.
      accounting.settle(deviceId, 'deferred');
      done(err as Error);
      return;
    }
    counts.rejected += 1;
    metrics.rejected.inc({ code: rejection.code });
    accounting.settle(deviceId, 'dead_lettered');
    logger.debug({ topic, code: rejection.code, reason: rejection.reason }, 'device message refused');
    done(null);
  }

  return function handleDeviceMessage(topic: string, payload: Buffer, done: (err: Error | null) => void, sender?: DeviceSender): void {
    const run = deps.targets();
    if (!run) {
      done(new FerryError('FERRY_ERR_NOT_READY', 'the gateway is not accepting readings'));
      return;
    }
    counts.received += 1;

    // Who may publish as which device is checked from the topic before decoding, so another
    // device's publish never reaches a stateful decoder's state for that device.
    const access = run.access;
    const username = sender?.username;
    const topicDevice = access && sender ? validator.deviceIdOf(topic) : undefined;
    if (access && topicDevice !== undefined && !access.mayPublishAs(username, topicDevice)) {
      refuse(run, topic, payload, done, notAuthorized(username, topicDevice), topicDevice);
      return;
    }
    const verdict = validator.validate(topic, payload, Math.floor(clock.now()));
    if (!verdict.ok) {
      refuse(run, topic, payload, done, verdict.rejection, verdict.deviceId);
      return;
    }
    // A format that takes the id from the payload (deviceIdField) is checked on what it decoded.
    const foreign = access && sender ? firstForeign(verdict.readings, access, username) : undefined;
    if (foreign) {
      refuse(run, topic, payload, done, notAuthorized(username, foreign.deviceId), foreign.deviceId);
      return;
    }
    const readings = verdict.readings;
    const deviceId = verdict.deviceId ?? readings[0]?.deviceId;
    if (readings.length === 0) {
      // Ignored on purpose (a metadata topic, a command echo) is counted by its reason; anything
      // else that yields nothing is kept for an operator rather than acknowledged into nothing.
      if (verdict.ignored !== undefined) {
        accounting.settle(deviceId, 'ignored', verdict.ignored);
        done(null);
      } else {
        refuse(run, topic, payload, done, { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: NO_READING_REASON }, deviceId);
      }
      return;
    }
    if (verdict.dropped.length > 0) {
      try {
        run.deadLetters.addMany(
          verdict.dropped.map((rejection) =>
            deviceDeadLetter(deps.gatewayId, { ...rejection, reason: `${rejection.reason}${PARTIAL_LETTER_SUFFIX}` }, topic, deviceId, payload, clock.now()),
          ),
        );
        run.reports?.changed();
      } catch (err) {
        logger.error({ err, topic }, 'a dropped value could not be dead-lettered');
      }
      for (const rejection of verdict.dropped) metrics.valuesDropped.inc({ code: rejection.code });
    }
    // A message may hold several readings (line protocol, Sparkplug): they commit in one
    // transaction, and the device is acknowledged once all of them are durable.
    run.committer.add(readings, (err) => {
      accounting.settle(deviceId, err ? 'deferred' : 'stored');
      done(err);
    });
  };
}
