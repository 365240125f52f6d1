// Where every device message went. Each message the gateway receives ends as exactly one of:
// stored (its readings are in the outbox), dead-lettered (refused whole, kept for an operator),
// ignored by an explicit pattern rule (counted by the rule's reason), or deferred (not
// acknowledged: the outbox refused it for now and the device sends it again). So, per device and
// in total: received = stored + dead_lettered + ignored + deferred, once nothing is in flight.
// A message acknowledged without one of these would be lost in silence; the tests hold the sum.
// Pure: the caller reports outcomes, the metrics are updated through the injected sink.

export type MessageOutcome = 'stored' | 'dead_lettered' | 'ignored' | 'deferred';
export const MESSAGE_OUTCOMES: readonly MessageOutcome[] = ['stored', 'dead_lettered', 'ignored', 'deferred'];

export interface DeviceMessageCounts {
  received: number;
  stored: number;
  dead_lettered: number;
  ignored: number;
  deferred: number;
  /** Ignored messages by the rule's reason. */
  ignoredBy: Record<string, number>;
}

export interface MessageAccountingSink {
  /** Per message; a sink that reads totals() when asked (the gateway's metrics) leaves it out. */
  settled?(outcome: MessageOutcome): void;
  ignored(reason: string): void;
}

/** The device key of messages whose device could not be told (a topic no pattern matches). */
export const NO_DEVICE = '(none)';
/** Devices counted one by one; later ones are summed under OTHER_DEVICES, so a flood of ids cannot grow memory. */
export const MAX_DEVICES_TRACKED = 10_000;
export const OTHER_DEVICES = '(other)';

function count(counts: DeviceMessageCounts, outcome: MessageOutcome, reason: string | undefined): void {
  counts.received += 1;
  counts[outcome] += 1;
  if (outcome === 'ignored') {
    const why = reason ?? 'no reading';
    counts.ignoredBy[why] = (counts.ignoredBy[why] ?? 0) + 1;
  }
}

const empty = (): DeviceMessageCounts => ({ received: 0, stored: 0, dead_lettered: 0, ignored: 0, deferred: 0, ignoredBy: {} });

export class MessageAccounting {
  readonly #devices = new Map<string, DeviceMessageCounts>();
  readonly #total = empty();

  constructor(
    private readonly sink: MessageAccountingSink,
    private readonly maxDevices = MAX_DEVICES_TRACKED,
  ) {}

  #entry(deviceId: string | undefined): DeviceMessageCounts {
    const key = deviceId ?? NO_DEVICE;
    const known = this.#devices.get(key);
    if (known) return known;
    if (this.#devices.size >= this.maxDevices) {
      let other = this.#devices.get(OTHER_DEVICES);
      if (!other) this.#devices.set(OTHER_DEVICES, (other = empty()));
      return other;
    }
    const entry = empty();
    this.#devices.set(key, entry);
    return entry;
  }

  /**
   * One message's end. `deviceId` as far as it could be told; `reason` for `ignored` (the
   * pattern's). Counts the receipt too, so a message is never counted received and not settled.
   */
  settle(deviceId: string | undefined, outcome: MessageOutcome, reason?: string): void {
    count(this.#entry(deviceId), outcome, reason);
    count(this.#total, outcome, reason);
    this.sink.settled?.(outcome);
    if (outcome === 'ignored') this.sink.ignored(reason ?? 'no reading');
  }

  totals(): Readonly<DeviceMessageCounts> {
    return this.#total;
  }

  device(deviceId: string): Readonly<DeviceMessageCounts> | undefined {
    return this.#devices.get(deviceId);
  }

  devices(): ReadonlyMap<string, Readonly<DeviceMessageCounts>> {
    return this.#devices;
  }
}
