// The fleet's health: per device and per gateway, fed with readings, status messages and Last
// Wills, and driven by an injected Clock. Pure: no timers, no I/O. Deadlines live in a min-heap so
// a tick costs what is due, and every change is recorded so the alert engine and the store only
// look at what changed.
import type { Clock } from '@ferry/runtime';
import type { GatewayDisk, GatewayStatus, MetricValue } from '@ferry/protocol';
import { DeadlineQueue } from './deadlines.js';
import { arrivedAfter, CLOCK_OFFSET_SAMPLES, clockOffsetOf, gatewayStatusSupersedes } from './liveness.js';
import type { Arrival, GatewayStatusMark } from './liveness.js';
import type { HealthDefaults } from './rules.js';

/** What the device itself says or shows, before the gateway and flapping are taken into account. */
export type RawLiveness = 'unknown' | 'online' | 'suspect' | 'offline';
export type Liveness = RawLiveness | 'flapping' | 'unreachable';
export type GatewayState = 'unknown' | 'online' | 'offline';

export interface HealthEvent {
  readonly at: number;
  readonly from: string;
  readonly to: string;
  readonly reason: string;
}

/** Plain data, so it can be stored as JSON and restored after a restart. */
export interface DeviceHealth {
  deviceId: string;
  gatewayId?: string;
  profile?: string;
  liveness: Liveness;
  raw: RawLiveness;
  /** When `liveness` last changed. */
  since: number;
  firstSeenAt: number;
  /** The ingestor's time of the last message (data or status): what `forgetAfter` counts from. */
  lastHeardAt?: number;
  lastDataAt?: number;
  lastStatusAt?: number;
  lastStatus?: 'online' | 'offline';
  /** The gateway seqs of the last status and of the latest data: their order of arrival at the gateway. */
  lastStatusSeq?: number;
  lastDataSeq?: number;
  messages: number;
  /** Learned reporting interval: fast (rate now) and slow (the device's normal) moving averages. */
  intervalMs?: number;
  baselineIntervalMs?: number;
  intervalSamples: number;
  battery?: number;
  rssi?: number;
  firmware?: string;
  /** Completeness counters, halved when large so they follow recent behaviour. */
  received: number;
  missed: number;
  lastDeviceSeq?: number;
  /** Receive time minus device time (positive: the device clock is behind), moving average. */
  skewMs?: number;
  /** Latest value of the numeric metrics that rules watch. */
  metrics: Record<string, number>;
  /** Silence counts from here when later than the evidence: the ingestor or the gateway was away until then. */
  rebase?: number;
  /** Times of online/offline changes inside the flap window. */
  transitions: number[];
  history: HealthEvent[];
}

export interface GatewayHealth {
  gatewayId: string;
  state: GatewayState;
  since: number;
  lastStatusAt?: number;
  /** The gateway's own time on the status taken last: shown, and the fallback order for gateways without epochs. */
  statusTs?: number;
  /** The uplink session of the status taken last; statuses are ordered by it (liveness.ts). */
  epoch?: number;
  /** What the status taken last said (`state` may be offline by timeout meanwhile). */
  statusState?: 'online' | 'offline';
  /** The gateway's time on the last offline status taken (the fallback for gateways without epochs). */
  offlineTs?: number;
  /** How often the gateway publishes its status, as it says; its timeout is a few of these. */
  statusIntervalMs?: number;
  /** Our receive time minus the gateway's time, recent samples of this session; the smallest is the offset. */
  clockOffsetSamples?: number[];
  /** Add to a gateway time to get ours: how device receive times are put on the ingestor's clock. */
  clockOffsetMs?: number;
  /** Silence counts from here when later than its last status: the ingestor was away until then. */
  rebase?: number;
  version?: string;
  uplink?: string;
  outboxDepth?: number;
  oldestUnsentTs?: number | null;
  /** The disk under the gateway's outbox, as its last status gave it. */
  disk?: GatewayDisk;
  dropped: number;
  /** When `dropped` last grew. */
  droppedAt?: number;
  deadLetters?: number;
  history: HealthEvent[];
}

export interface IngestorHealth {
  broker: boolean;
  sink: boolean;
  /**
   * The other ingestors' readings reach this model (scale-out: the fleet sync through Redis is
   * connected and caught up). Absent, as for a single ingestor, it counts as true.
   */
  peers?: boolean;
  /** Time from which silence counts: startup or the end of the last outage. */
  observedSince: number;
  /** Until when alerts are held (grace after a restart or an outage). */
  holdUntil: number;
  /** Dead-letter totals sampled over time, for the rising rule. */
  deadLetterSamples: [number, number][];
}

/** A reading, or a device status message, as the ingestor settled it. */
export interface ObservedReading {
  readonly deviceId: string;
  readonly gatewayId?: string | undefined;
  /** The gateway's outbox seq: the order in which the gateway received its messages. */
  readonly seq?: number | undefined;
  readonly kind: 'telemetry' | 'status';
  readonly ts: number;
  readonly tsSource: 'device' | 'gateway';
  /** When the gateway (or the ingestor, for direct devices) received it. */
  readonly receivedAt: number;
  readonly deviceSeq?: number | undefined;
  readonly metrics: Readonly<Record<string, MetricValue>>;
  /**
   * Stands for the newest of readings this model did not see one by one (another ingestor wrote
   * them while this one was starting or cut off from it): it updates liveness and the latest
   * values, but counts no gap, interval or message, which the unseen ones would have filled.
   */
  readonly catchUp?: boolean | undefined;
}

export interface FleetChanges {
  readonly devices: ReadonlySet<string>;
  readonly gateways: ReadonlySet<string>;
  /** The ingestor's own state or the dead-letter count changed. */
  readonly ingestor: boolean;
  /** The hold on alerts ended since the last call: pending alerts are due a look. */
  readonly released: boolean;
}

export interface FleetSnapshot {
  readonly devices: readonly DeviceHealth[];
  readonly gateways: readonly GatewayHealth[];
}

/** What changed since the last flush: records to write and ids to delete. */
export interface FleetDirty extends FleetSnapshot {
  readonly forgottenDevices: readonly string[];
  readonly forgottenGateways: readonly string[];
}

/** The bounds on the model, counted this run. */
export interface FleetRetention {
  /** Devices forgotten after `forgetAfter` without a message (or trimmed to `maxDevices` on restore). */
  readonly forgottenDevices: number;
  readonly forgottenGateways: number;
  /** Messages from devices not tracked because the fleet was at `maxDevices`. */
  readonly refused: number;
  /** Statuses from gateways not tracked because `maxGateways` were. */
  readonly refusedGateways: number;
}

export interface FleetOptions {
  readonly clock: Clock;
  readonly defaults: HealthDefaults;
  /** Metric names worth keeping per device (those rules name). */
  readonly watchedMetrics?: Iterable<string>;
}

const FAST = 0.3;
const SLOW = 0.05;
const MAX_GAP_COUNTED = 1000;

function ewma(previous: number | undefined, sample: number, alpha: number): number {
  return previous === undefined ? sample : previous + alpha * (sample - previous);
}

function pushBounded<T>(list: T[], item: T, limit: number): void {
  list.push(item);
  if (list.length > limit) list.splice(0, list.length - limit);
}

/** The ingestor's time of the device's last message; records stored before `lastHeardAt` existed fall back on what they have. */
function heardAt(d: DeviceHealth): number {
  return d.lastHeardAt ?? Math.max(d.firstSeenAt, d.lastDataAt ?? 0, d.lastStatusAt ?? 0);
}

/** The ingestor's time of the gateway's last status (a timeout is not word from it). */
function gatewayHeardAt(g: GatewayHealth): number {
  return g.lastStatusAt ?? g.since;
}

function earliest(...times: (number | undefined)[]): number | undefined {
  let min: number | undefined;
  for (const t of times) if (t !== undefined && (min === undefined || t < min)) min = t;
  return min;
}

// What a metric's latest value is kept as (fieldRolesOf): bits, since a name may be several.
const FIELD_BATTERY = 1;
const FIELD_RSSI = 2;
const FIELD_FIRMWARE = 4;
/** Kept in DeviceHealth.metrics: named by a rule, or a battery or rssi field. */
const FIELD_WATCHED = 8;

function fieldRolesOf(fields: HealthDefaults['fields'], watchedMetrics: Iterable<string>): Map<string, number> {
  const roles = new Map<string, number>();
  const add = (names: Iterable<string>, role: number): void => {
    for (const name of names) roles.set(name, (roles.get(name) ?? 0) | role);
  };
  add(fields.battery, FIELD_BATTERY | FIELD_WATCHED);
  add(fields.rssi, FIELD_RSSI | FIELD_WATCHED);
  add(fields.firmware, FIELD_FIRMWARE);
  add(watchedMetrics, FIELD_WATCHED);
  return roles;
}

/** What ordering needs of the status taken last; records stored before epochs fall back on their state. */
function markOf(g: GatewayHealth): GatewayStatusMark | undefined {
  if (g.statusTs === undefined) return undefined;
  const state = g.statusState ?? (g.state === 'offline' ? 'offline' : 'online');
  return { epoch: g.epoch, state, ts: g.statusTs, offlineTs: g.offlineTs };
}

export class FleetHealth {
  private readonly clock: Clock;
  readonly defaults: HealthDefaults;
  private readonly devicesById = new Map<string, DeviceHealth>();
  private readonly gatewaysById = new Map<string, GatewayHealth>();
  private readonly devicesByGateway = new Map<string, Set<string>>();
  private readonly deadlines = new DeadlineQueue();
  /** When each online gateway times out without a status. */
  private readonly gatewayDeadlines = new DeadlineQueue();
  /** What the model keeps of a metric, by name (FIELD_*); absent: nothing, the usual metric. */
  private readonly fieldRoles: ReadonlyMap<string, number>;
  private changedDevices = new Set<string>();
  private changedGateways = new Set<string>();
  private ingestorChanged = false;
  private released = false;
  private dirtyDevices = new Set<string>();
  private dirtyGateways = new Set<string>();
  /** When each device (or gateway) may be forgotten; checked lazily when due, so a reading costs nothing here. */
  private readonly forgetDevices = new DeadlineQueue();
  private readonly forgetGateways = new DeadlineQueue();
  private forgottenDeviceIds = new Set<string>();
  private forgottenGatewayIds = new Set<string>();
  private counts = { forgottenDevices: 0, forgottenGateways: 0, refused: 0, refusedGateways: 0 };
  private wasHeld: boolean;
  readonly ingestor: IngestorHealth;

  /**
   * The per-device overrides of `defaults.devices`, read on every reading (profile, interval,
   * timeout): a map, and none at all when there are none, the usual fleet.
   */
  private readonly overrides: ReadonlyMap<string, HealthDefaults['devices'][string]> | undefined;

  constructor(options: FleetOptions) {
    this.clock = options.clock;
    this.defaults = options.defaults;
    this.overrides = Object.keys(this.defaults.devices).length > 0 ? new Map(Object.entries(this.defaults.devices)) : undefined;
    this.fieldRoles = fieldRolesOf(this.defaults.fields, options.watchedMetrics ?? []);
    const now = this.clock.now();
    // A fresh start is a restart as far as alerts go: nothing is known yet, so hold back.
    this.ingestor = { broker: true, sink: true, observedSince: now, holdUntil: now + this.defaults.graceMs, deadLetterSamples: [] };
    this.wasHeld = true;
  }

  // ---- reading the model ----

  device(id: string): DeviceHealth | undefined {
    return this.devicesById.get(id);
  }

  devices(): IterableIterator<DeviceHealth> {
    return this.devicesById.values();
  }

  get deviceCount(): number {
    return this.devicesById.size;
  }

  get gatewayCount(): number {
    return this.gatewaysById.size;
  }

  gateway(id: string): GatewayHealth | undefined {
    return this.gatewaysById.get(id);
  }

  gateways(): IterableIterator<GatewayHealth> {
    return this.gatewaysById.values();
  }

  devicesOf(gatewayId: string): number {
    return this.devicesByGateway.get(gatewayId)?.size ?? 0;
  }

  retention(): FleetRetention {
    return { ...this.counts };
  }

  /** The fleet is at `maxDevices`: a new device would be refused. */
  get full(): boolean {
    return this.devicesById.size >= this.defaults.maxDevices;
  }

  /** Alerts wait while the ingestor cannot see the fleet (broker or database down) or just started. */
  held(now = this.clock.now()): boolean {
    return this.cutOff() || now < this.ingestor.holdUntil;
  }

  /** The ingestor cannot see (all of) the fleet: broker, database or its peers away. */
  private cutOff(): boolean {
    return !this.ingestor.broker || !this.ingestor.sink || this.ingestor.peers === false;
  }

  /** The inactivity timeout in force: per device, per profile, learned, or the default. */
  timeoutOf(d: DeviceHealth): number {
    const own = this.overrides?.get(d.deviceId);
    if (own?.timeoutMs !== undefined) return own.timeoutMs;
    const profile = d.profile === undefined ? undefined : this.defaults.profiles[d.profile];
    if (profile?.timeoutMs !== undefined) return profile.timeoutMs;
    const expected = this.expectedIntervalOf(d);
    if (expected !== undefined) return Math.max(this.defaults.minTimeoutMs, expected * this.defaults.intervalFactor);
    return this.defaults.timeoutMs;
  }

  /** How long a gateway may stay quiet before it is offline: a few of its status intervals, else the default. */
  gatewayTimeoutOf(g: GatewayHealth): number {
    const { gatewayIntervalFactor, gatewayMinTimeoutMs, gatewayTimeoutMs } = this.defaults;
    if (g.statusIntervalMs === undefined) return gatewayTimeoutMs;
    return Math.max(gatewayMinTimeoutMs, g.statusIntervalMs * gatewayIntervalFactor);
  }

  expectedIntervalOf(d: DeviceHealth): number | undefined {
    const own = this.overrides?.get(d.deviceId)?.expectedIntervalMs;
    if (own !== undefined) return own;
    const profile = d.profile === undefined ? undefined : this.defaults.profiles[d.profile]?.expectedIntervalMs;
    if (profile !== undefined) return profile;
    return d.intervalSamples >= this.defaults.learnAfter ? d.baselineIntervalMs : undefined;
  }

  /** Share of expected readings received (0..1), undefined until anything is known. */
  completenessOf(d: DeviceHealth): number | undefined {
    const total = d.received + d.missed;
    return total === 0 ? undefined : d.received / total;
  }

  /** Messages per minute now, from the fast interval average stretched by the current silence. */
  rateOf(d: DeviceHealth, now = this.clock.now()): number | undefined {
    if (d.intervalMs === undefined || d.lastDataAt === undefined) return undefined;
    const silence = now - Math.max(d.lastDataAt, this.ingestor.observedSince);
    return 60_000 / Math.max(d.intervalMs, silence, 1);
  }

  // ---- feeding the model ----

  /**
   * Takes a reading or status message; returns false when the device is new and the fleet is full
   * (refused, counted). A chunk of one: the ingestor feeds chunks (observeReadings), so this is
   * kept for callers with a single message.
   */
  observeReading(r: ObservedReading): boolean {
    return this.observeReadings([r])[0] === true;
  }

  /**
   * Takes the readings of one confirmed chunk, in order: the same model afterwards as taking them
   * one by one. One clock read for the chunk, and each device's next deadline worked out once,
   * after its last reading (nothing reads the deadlines in between). `taken[i]`: whether
   * readings[i] was taken (false: a new device refused, the fleet full).
   */
  observeReadings(readings: readonly ObservedReading[]): boolean[] {
    const now = this.clock.now();
    const taken: boolean[] = new Array<boolean>(readings.length);
    const touched = new Set<DeviceHealth>();
    for (let i = 0; i < readings.length; i++) {
      const d = this.takeReading(readings[i]!, now);
      taken[i] = d !== undefined;
      // Marked changed at its first reading, as one by one: what changed is listed in the same order.
      if (d && !touched.has(d)) {
        touched.add(d);
        this.touchDevice(d);
      }
    }
    for (const d of touched) this.scheduleLiveness(d, now);
    return taken;
  }

  /** A reading's effect on its device but the deadline; undefined when refused (counted). */
  private takeReading(r: ObservedReading, now: number): DeviceHealth | undefined {
    const d = this.ensureDevice(r.deviceId, now);
    if (!d) {
      this.counts.refused++;
      return undefined;
    }
    d.lastHeardAt = now;
    if (r.gatewayId !== undefined && r.gatewayId !== d.gatewayId) this.moveDevice(d, r.gatewayId);
    const profile = this.overrides?.get(d.deviceId)?.profile;
    if (profile !== undefined) d.profile = profile;
    // The gateway's receive time put on our clock (its offset learned from its statuses), never later than now.
    const offset = r.gatewayId === undefined ? 0 : (this.gatewaysById.get(r.gatewayId)?.clockOffsetMs ?? 0);
    const at = Math.min(now, r.receivedAt + offset);
    if (r.kind === 'status') this.observeStatus(d, r, at);
    else this.observeTelemetry(d, r, at);
    this.updateLiveness(d, now, r.kind === 'status' ? 'status' : 'data');
    return d;
  }

  /** Takes a gateway status; returns false when the gateway is new and `maxGateways` are tracked (refused, counted). */
  observeGatewayStatus(status: GatewayStatus, receivedAt = this.clock.now()): boolean {
    const now = this.clock.now();
    let g = this.gatewaysById.get(status.gatewayId);
    if (!g) {
      if (this.gatewaysById.size >= this.defaults.maxGateways) {
        this.counts.refusedGateways++;
        return false;
      }
      g = { gatewayId: status.gatewayId, state: 'unknown', since: now, dropped: 0, history: [] };
      this.gatewaysById.set(status.gatewayId, g);
      this.forgottenGatewayIds.delete(g.gatewayId);
      this.forgetGateways.schedule(g.gatewayId, now + this.defaults.forgetAfter);
    }
    // Which status wins is decided by session and arrival (liveness.ts), never by the gateway's clock alone.
    if (!gatewayStatusSupersedes(markOf(g), status)) return true;
    const at = Math.min(now, receivedAt);
    const newSession = status.epoch !== g.epoch;
    if (status.epoch !== undefined) g.epoch = status.epoch;
    else delete g.epoch;
    g.statusState = status.state;
    g.statusTs = status.ts;
    if (status.state === 'offline') g.offlineTs = status.ts;
    g.lastStatusAt = at;
    delete g.rebase;
    if (status.statusIntervalMs !== undefined) g.statusIntervalMs = status.statusIntervalMs;
    if (status.state === 'online') {
      // A Will carries the time its session began, so only live statuses tell the clock's offset.
      const samples = newSession ? [] : (g.clockOffsetSamples ?? []);
      pushBounded(samples, at - status.ts, CLOCK_OFFSET_SAMPLES);
      g.clockOffsetSamples = samples;
      g.clockOffsetMs = clockOffsetOf(samples);
    }
    if (status.version !== undefined) g.version = status.version;
    if (status.uplink !== undefined) g.uplink = status.uplink;
    if (status.outbox) {
      g.outboxDepth = status.outbox.depth;
      g.oldestUnsentTs = status.outbox.oldestTs;
    }
    if (status.deadLetters !== undefined) g.deadLetters = status.deadLetters;
    if (status.disk) g.disk = status.disk;
    if (status.dropped) {
      const total = Object.values(status.dropped).reduce((a, b) => a + b, 0);
      if (total > g.dropped) g.droppedAt = now;
      g.dropped = total;
    }
    this.setGatewayState(g, status.state, now, status.state === 'offline' && status.uplink === 'lost' ? 'will' : 'status');
    this.scheduleGateway(g, now);
    this.changedGateways.add(g.gatewayId);
    this.dirtyGateways.add(g.gatewayId);
    return true;
  }

  /** The ingestor's own links; while any is down, silence is not the devices' fault. */
  setLinks(links: { broker?: boolean; sink?: boolean; peers?: boolean }): void {
    const now = this.clock.now();
    const before = this.cutOff();
    if (links.broker !== undefined) this.ingestor.broker = links.broker;
    if (links.sink !== undefined) this.ingestor.sink = links.sink;
    if (links.peers !== undefined) this.ingestor.peers = links.peers;
    const after = this.cutOff();
    if (before && !after) {
      // What went unseen during the outage does not count as the devices' silence.
      this.ingestor.observedSince = now;
      this.ingestor.holdUntil = Math.max(this.ingestor.holdUntil, now + this.defaults.graceMs);
      for (const g of this.gatewaysById.values()) this.rebaseGateway(g, now);
      for (const d of this.devicesById.values()) this.rebaseDevice(d, now, 'ingestor reconnected');
    }
    if (before !== after) this.ingestorChanged = true;
  }

  /** After a restore: a restart starts a new observation period and a grace window. */
  restarted(): void {
    const now = this.clock.now();
    this.ingestor.observedSince = now;
    this.ingestor.holdUntil = now + this.defaults.graceMs;
    this.wasHeld = true;
    for (const g of this.gatewaysById.values()) this.rebaseGateway(g, now);
    for (const d of this.devicesById.values()) this.rebaseDevice(d, now, 'restart');
  }

  observeDeadLetters(total: number): void {
    const now = this.clock.now();
    const samples = this.ingestor.deadLetterSamples;
    const last = samples[samples.length - 1];
    if (last && last[1] === total) return;
    pushBounded(samples, [now, total], 256);
    this.ingestorChanged = true;
  }

  /** Dead letters added within the last `withinMs`, and when that figure next drops. */
  deadLetterIncrease(withinMs: number, now = this.clock.now()): { increase: number; changesAt?: number } {
    const samples = this.ingestor.deadLetterSamples;
    const last = samples[samples.length - 1];
    if (!last) return { increase: 0 };
    let baseline = samples[0]?.[1] ?? 0;
    let changesAt: number | undefined;
    for (const [at, total] of samples) {
      if (at <= now - withinMs) baseline = total;
      else {
        changesAt = at + withinMs;
        break;
      }
    }
    return { increase: last[1] - baseline, ...(changesAt !== undefined ? { changesAt } : {}) };
  }

  /** Runs what is due; call on a timer (at `nextDeadline()`) and after feeding. */
  tick(): void {
    const now = this.clock.now();
    const held = this.held(now);
    if (this.wasHeld && !held) this.released = true;
    this.wasHeld = held;
    // While the ingestor is cut off, the devices' own deadlines wait: they are rebased when it returns.
    if (this.cutOff()) return;
    // Gateways first: a gateway gone quiet makes its devices unreachable before their own deadlines count.
    for (const key of this.gatewayDeadlines.popDue(now)) {
      const g = this.gatewaysById.get(key);
      if (!g || g.state !== 'online') continue;
      const due = this.gatewayDueAt(g);
      if (due !== undefined && due > now) this.gatewayDeadlines.schedule(key, due);
      else {
        this.setGatewayState(g, 'offline', now, 'timeout');
        this.changedGateways.add(g.gatewayId);
        this.dirtyGateways.add(g.gatewayId);
      }
    }
    for (const key of this.deadlines.popDue(now)) {
      const d = this.devicesById.get(key);
      if (d) this.refreshDevice(d, now, 'timeout');
    }
    // Nor is anything forgotten while cut off: the silence may be ours.
    for (const key of this.forgetDevices.popDue(now)) {
      const d = this.devicesById.get(key);
      if (!d) continue;
      const due = heardAt(d) + this.defaults.forgetAfter;
      if (due > now) this.forgetDevices.schedule(key, due);
      else this.forgetDevice(d, now);
    }
    for (const key of this.forgetGateways.popDue(now)) {
      const g = this.gatewaysById.get(key);
      // A gateway is kept while devices report through it; the last one forgotten schedules it again.
      if (!g || this.devicesOf(key) > 0) continue;
      const due = gatewayHeardAt(g) + this.defaults.forgetAfter;
      if (due > now) this.forgetGateways.schedule(key, due);
      else this.forgetGateway(g);
    }
  }

  nextDeadline(): number | undefined {
    // Cut off: nothing is due until the links return (setLinks), only the end of a grace window.
    const next = this.cutOff() ? undefined : earliest(this.gatewayDeadlines.peek(), this.deadlines.peek(), this.forgetDevices.peek(), this.forgetGateways.peek());
    const hold = this.held() ? this.ingestor.holdUntil : undefined;
    if (next === undefined) return hold;
    return hold === undefined ? next : Math.min(next, hold);
  }

  takeChanges(): FleetChanges {
    const changes: FleetChanges = { devices: this.changedDevices, gateways: this.changedGateways, ingestor: this.ingestorChanged, released: this.released };
    this.changedDevices = new Set();
    this.changedGateways = new Set();
    this.ingestorChanged = false;
    this.released = false;
    return changes;
  }

  /** Records changed since the last call, and records forgotten, for the store. */
  takeDirty(): FleetDirty {
    const devices = [...this.dirtyDevices].flatMap((id) => this.devicesById.get(id) ?? []);
    const gateways = [...this.dirtyGateways].flatMap((id) => this.gatewaysById.get(id) ?? []);
    const dirty: FleetDirty = { devices, gateways, forgottenDevices: [...this.forgottenDeviceIds], forgottenGateways: [...this.forgottenGatewayIds] };
    this.dirtyDevices = new Set();
    this.dirtyGateways = new Set();
    this.forgottenDeviceIds = new Set();
    this.forgottenGatewayIds = new Set();
    return dirty;
  }

  restore(snapshot: FleetSnapshot): void {
    // A lowered maxDevices keeps the devices heard from most recently; the rest are forgotten.
    const devices = [...snapshot.devices].sort((a, b) => heardAt(b) - heardAt(a));
    const kept = devices.slice(0, this.defaults.maxDevices);
    for (const g of snapshot.gateways) {
      this.gatewaysById.set(g.gatewayId, g);
      this.forgetGateways.schedule(g.gatewayId, gatewayHeardAt(g) + this.defaults.forgetAfter);
    }
    for (const d of kept) {
      this.devicesById.set(d.deviceId, d);
      if (d.gatewayId !== undefined) this.indexDevice(d.deviceId, d.gatewayId);
      this.forgetDevices.schedule(d.deviceId, heardAt(d) + this.defaults.forgetAfter);
    }
    this.restarted();
    this.takeDirty();
    for (const d of devices.slice(this.defaults.maxDevices)) {
      this.forgottenDeviceIds.add(d.deviceId);
      this.counts.forgottenDevices++;
    }
  }

  // ---- internals ----

  private ensureDevice(id: string, now: number): DeviceHealth | undefined {
    let d = this.devicesById.get(id);
    if (!d) {
      if (this.full) return undefined;
      d = { deviceId: id, liveness: 'unknown', raw: 'unknown', since: now, firstSeenAt: now, messages: 0, intervalSamples: 0, received: 0, missed: 0, metrics: {}, transitions: [], history: [] };
      this.devicesById.set(id, d);
      this.forgottenDeviceIds.delete(id);
      this.forgetDevices.schedule(id, now + this.defaults.forgetAfter);
    }
    return d;
  }

  /** Drops every trace of the device; its alerts resolve (the engine finds no subject). */
  private forgetDevice(d: DeviceHealth, now: number): void {
    this.devicesById.delete(d.deviceId);
    this.deadlines.cancel(d.deviceId);
    this.forgetDevices.cancel(d.deviceId);
    if (d.gatewayId !== undefined) this.unindexDevice(d.deviceId, d.gatewayId, now);
    this.dirtyDevices.delete(d.deviceId);
    this.forgottenDeviceIds.add(d.deviceId);
    this.changedDevices.add(d.deviceId);
    this.counts.forgottenDevices++;
  }

  private forgetGateway(g: GatewayHealth): void {
    this.gatewaysById.delete(g.gatewayId);
    this.devicesByGateway.delete(g.gatewayId);
    this.forgetGateways.cancel(g.gatewayId);
    this.gatewayDeadlines.cancel(g.gatewayId);
    this.dirtyGateways.delete(g.gatewayId);
    this.forgottenGatewayIds.add(g.gatewayId);
    this.changedGateways.add(g.gatewayId);
    this.counts.forgottenGateways++;
  }

  private unindexDevice(deviceId: string, gatewayId: string, now: number): void {
    const set = this.devicesByGateway.get(gatewayId);
    if (!set) return;
    set.delete(deviceId);
    if (set.size > 0) return;
    this.devicesByGateway.delete(gatewayId);
    // Its last device left: the gateway itself may be forgotten once it too has been silent long enough.
    const g = this.gatewaysById.get(gatewayId);
    if (g) this.forgetGateways.schedule(gatewayId, Math.max(now, gatewayHeardAt(g) + this.defaults.forgetAfter));
  }

  private moveDevice(d: DeviceHealth, gatewayId: string): void {
    if (d.gatewayId !== undefined) this.unindexDevice(d.deviceId, d.gatewayId, this.clock.now());
    d.gatewayId = gatewayId;
    // Another gateway's seqs say nothing about this one's order: times order them until it speaks again.
    delete d.lastStatusSeq;
    delete d.lastDataSeq;
    this.indexDevice(d.deviceId, gatewayId);
  }

  private indexDevice(deviceId: string, gatewayId: string): void {
    let set = this.devicesByGateway.get(gatewayId);
    if (!set) {
      set = new Set();
      this.devicesByGateway.set(gatewayId, set);
    }
    set.add(deviceId);
  }

  private observeStatus(d: DeviceHealth, r: ObservedReading, receivedAt: number): void {
    const state = r.metrics['state'];
    if (state !== 'online' && state !== 'offline') return;
    // Ordered by arrival, never by the device's time: a Last Will carries the time its session
    // began (or none), so by that time it would lose to the session's own online status.
    const arrival: Arrival = { at: receivedAt, seq: r.seq };
    // A status that arrived before the one we know (a batch that settled late) changes nothing.
    if (d.lastStatusAt !== undefined && !arrivedAfter(arrival, { at: d.lastStatusAt, seq: d.lastStatusSeq })) return;
    // Nor does an offline that arrived before the latest data: the device spoke after it.
    if (state === 'offline' && d.lastDataAt !== undefined && !arrivedAfter(arrival, { at: d.lastDataAt, seq: d.lastDataSeq })) return;
    d.lastStatusAt = receivedAt;
    if (r.seq !== undefined) d.lastStatusSeq = r.seq;
    else delete d.lastStatusSeq;
    d.lastStatus = state;
    d.messages++;
  }

  private observeTelemetry(d: DeviceHealth, r: ObservedReading, at: number): void {
    if (r.catchUp) {
      this.catchUpTelemetry(d, r, at);
      return;
    }
    d.messages++;
    if (d.lastDataAt !== undefined && at > d.lastDataAt) {
      const gap = at - d.lastDataAt;
      const expected = this.expectedIntervalOf(d);
      if (r.deviceSeq === undefined && expected !== undefined) d.missed += Math.min(MAX_GAP_COUNTED, Math.max(0, Math.round(gap / expected) - 1));
      d.intervalMs = ewma(d.intervalMs, gap, FAST);
      d.baselineIntervalMs = ewma(d.baselineIntervalMs, gap, SLOW);
      d.intervalSamples++;
    }
    if (r.deviceSeq !== undefined) {
      const last = d.lastDeviceSeq;
      if (last === undefined || r.deviceSeq > last) {
        if (last !== undefined) d.missed += Math.min(MAX_GAP_COUNTED, r.deviceSeq - last - 1);
        d.lastDeviceSeq = r.deviceSeq;
      } else if (r.deviceSeq < last - MAX_GAP_COUNTED || r.deviceSeq === 0) {
        d.lastDeviceSeq = r.deviceSeq; // the device restarted its count
      } else if (d.missed > 0) {
        d.missed--; // a late reading fills a gap counted earlier
      }
    }
    d.received++;
    if (d.received + d.missed > 2000) {
      d.received /= 2;
      d.missed /= 2;
    }
    this.takeLatest(d, r, at);
    if (r.tsSource === 'device') d.skewMs = Math.round(ewma(d.skewMs, r.receivedAt - r.ts, FAST));
  }

  /** The newest of readings not seen one by one: what it says now, not what lay between. */
  private catchUpTelemetry(d: DeviceHealth, r: ObservedReading, at: number): void {
    // Not newer than what the model has (it saw this one, or later ones): nothing to take.
    if (d.lastDataAt !== undefined && at <= d.lastDataAt) return;
    // The device's count goes on from here, so the next reading seen counts only its own gap.
    if (r.deviceSeq !== undefined && (d.lastDeviceSeq === undefined || r.deviceSeq > d.lastDeviceSeq)) d.lastDeviceSeq = r.deviceSeq;
    this.takeLatest(d, r, at);
  }

  private takeLatest(d: DeviceHealth, r: ObservedReading, at: number): void {
    if (d.lastDataAt === undefined || at > d.lastDataAt) d.lastDataAt = at;
    if (r.seq !== undefined && (d.lastDataSeq === undefined || r.seq > d.lastDataSeq)) d.lastDataSeq = r.seq;
    const metrics = r.metrics;
    // Own keys in order, as Object.entries lists them; one look-up each, the usual metric's a miss (every reading passes here).
    for (const name of Object.keys(metrics)) {
      const role = this.fieldRoles.get(name);
      if (role === undefined) continue;
      const value = metrics[name];
      if (typeof value === 'number') {
        if (role & FIELD_BATTERY) d.battery = value;
        else if (role & FIELD_RSSI) d.rssi = value;
        if (role & FIELD_WATCHED) d.metrics[name] = value;
      } else if (typeof value === 'string' && role & FIELD_FIRMWARE) d.firmware = value;
    }
  }

  /** A device that was not known to be offline gets a fresh timeout from `now`. */
  private rebaseDevice(d: DeviceHealth, now: number, reason: string): void {
    if (d.raw === 'online' || d.raw === 'suspect') d.rebase = now;
    this.refreshDevice(d, now, reason);
  }

  /** Recomputes the device's liveness at `now` and schedules its next deadline. */
  private refreshDevice(d: DeviceHealth, now: number, reason: string): void {
    this.updateLiveness(d, now, reason);
    this.scheduleLiveness(d, now);
  }

  /** Behind an offline gateway, silence says nothing about the device. */
  private gatewayDown(d: DeviceHealth): boolean {
    return d.gatewayId !== undefined && this.gatewaysById.get(d.gatewayId)?.state === 'offline';
  }

  /** The device's liveness at `now` (refreshDevice without the deadline). */
  private updateLiveness(d: DeviceHealth, now: number, reason: string): void {
    const gatewayDown = this.gatewayDown(d);
    // Behind an offline gateway, silence says nothing about the device: only its own word counts.
    const raw = gatewayDown && reason === 'timeout' ? d.raw : this.rawLiveness(d, now);
    if (raw !== d.raw) {
      const wasUp = d.raw === 'online' || d.raw === 'suspect';
      const isUp = raw === 'online' || raw === 'suspect';
      if (d.raw !== 'unknown' && wasUp !== isUp) d.transitions.push(now);
      d.raw = raw;
    }
    const windowStart = now - this.defaults.flapWindowMs;
    while (d.transitions.length > 0 && (d.transitions[0] as number) <= windowStart) d.transitions.shift();
    const flapping = d.transitions.length >= this.defaults.flapTransitions;
    const liveness: Liveness = gatewayDown ? 'unreachable' : flapping ? 'flapping' : raw;
    if (liveness !== d.liveness) {
      pushBounded(d.history, { at: now, from: d.liveness, to: liveness, reason }, this.defaults.historyLimit);
      d.liveness = liveness;
      d.since = now;
      this.changedDevices.add(d.deviceId);
      this.dirtyDevices.add(d.deviceId);
    }
  }

  /** The device's next deadline, from its state at `now` (none behind an offline gateway). */
  private scheduleLiveness(d: DeviceHealth, now: number): void {
    if (this.gatewayDown(d)) this.deadlines.cancel(d.deviceId);
    else this.scheduleDevice(d, now);
  }

  private statusAfterData(d: DeviceHealth): boolean {
    if (d.lastStatusAt === undefined) return false;
    if (d.lastDataAt === undefined) return true;
    return arrivedAfter({ at: d.lastStatusAt, seq: d.lastStatusSeq }, { at: d.lastDataAt, seq: d.lastDataSeq });
  }

  private evidenceOf(d: DeviceHealth): number | undefined {
    const status = d.lastStatus === 'online' ? d.lastStatusAt : undefined;
    if (d.lastDataAt === undefined) return status;
    return status === undefined ? d.lastDataAt : Math.max(d.lastDataAt, status);
  }

  private rawLiveness(d: DeviceHealth, now: number): RawLiveness {
    if (d.lastStatus === 'offline' && d.lastStatusAt !== undefined && (d.lastDataAt === undefined || this.statusAfterData(d))) return 'offline';
    const evidence = this.evidenceOf(d);
    if (evidence === undefined) return 'unknown';
    const silence = now - Math.max(evidence, d.rebase ?? evidence);
    const timeout = this.timeoutOf(d);
    if (silence >= timeout) return 'offline';
    if (silence >= timeout * this.defaults.suspectFraction) return 'suspect';
    return 'online';
  }

  private scheduleDevice(d: DeviceHealth, now: number): void {
    const due: number[] = [];
    const evidence = this.evidenceOf(d);
    if (evidence !== undefined && (d.raw === 'online' || d.raw === 'suspect')) {
      const base = Math.max(evidence, d.rebase ?? evidence);
      const timeout = this.timeoutOf(d);
      due.push(d.raw === 'online' ? base + timeout * this.defaults.suspectFraction : base + timeout);
    }
    const firstTransition = d.transitions[0];
    if (firstTransition !== undefined) due.push(firstTransition + this.defaults.flapWindowMs);
    const next = due.length > 0 ? Math.max(now, Math.min(...due)) : undefined;
    if (next === undefined) this.deadlines.cancel(d.deviceId);
    else this.deadlines.schedule(d.deviceId, next);
  }

  /** Sets the gateway's state; its devices become unreachable (or come back) together. */
  private setGatewayState(g: GatewayHealth, state: 'online' | 'offline', now: number, reason: string): void {
    if (g.state === state) return;
    pushBounded(g.history, { at: now, from: g.state, to: state, reason }, this.defaults.historyLimit);
    g.state = state;
    g.since = now;
    if (state === 'offline') this.gatewayDeadlines.cancel(g.gatewayId);
    // One alert for the gateway, not one per device: behind it, silence says nothing about them.
    for (const id of this.devicesByGateway.get(g.gatewayId) ?? []) {
      const d = this.devicesById.get(id);
      if (!d) continue;
      if (state === 'offline') this.refreshDevice(d, now, 'gateway offline');
      else this.rebaseDevice(d, now, 'gateway online');
    }
  }

  /** When an online gateway times out: a few status intervals after its last status (or our return). */
  private gatewayDueAt(g: GatewayHealth): number | undefined {
    if (g.state !== 'online' || g.lastStatusAt === undefined) return undefined;
    return Math.max(g.lastStatusAt, g.rebase ?? g.lastStatusAt) + this.gatewayTimeoutOf(g);
  }

  private scheduleGateway(g: GatewayHealth, now: number): void {
    const due = this.gatewayDueAt(g);
    if (due === undefined) this.gatewayDeadlines.cancel(g.gatewayId);
    else this.gatewayDeadlines.schedule(g.gatewayId, Math.max(now, due));
  }

  /** The ingestor was away: the gateway's silence counts from now. */
  private rebaseGateway(g: GatewayHealth, now: number): void {
    if (g.state !== 'online') return;
    g.rebase = now;
    this.scheduleGateway(g, now);
  }

  private touchDevice(d: DeviceHealth): void {
    this.changedDevices.add(d.deviceId);
    this.dirtyDevices.add(d.deviceId);
  }
}
