// The alert engine: rules evaluated against what changed in the fleet, with the lifecycle
// Alertmanager users know (pending -> firing -> resolved), a `for` duration, hysteresis in time
// (keepFiringFor) and in value (clear), operator acknowledge and silences, and a history per alert.
// Pure: notifications are queued for the I/O layer to take.
import type { Clock } from '@ferry/runtime';
import { FerryError } from '@ferry/protocol';
import { DeadlineQueue } from './deadlines.js';
import type { FleetHealth } from './fleet.js';
import { globMatcher } from './rules.js';
import type { AlertRule, Severity } from './rules.js';

export type AlertState = 'pending' | 'firing' | 'resolved';
export type SubjectKind = 'device' | 'gateway' | 'ingestor';

export interface AlertEvent {
  readonly at: number;
  readonly event: 'pending' | 'firing' | 'resolved' | 'acknowledged' | 'unacknowledged' | 'silenced' | 'notified' | 'held';
  readonly detail?: string;
}

export interface Alert {
  id: number;
  /** rule|kind:subject — one active alert per rule and subject. */
  key: string;
  rule: string;
  kind: AlertRule['kind'];
  severity: Severity;
  subject: { kind: SubjectKind; id: string };
  labels: Record<string, string>;
  state: AlertState;
  summary: string;
  value?: number | string;
  /** When the condition started to hold. */
  startsAt: number;
  firingAt?: number;
  endsAt?: number;
  /** When the condition stopped holding while firing (hysteresis). */
  clearSince?: number;
  acknowledged?: { by: string; at: number; comment?: string };
  /** Whether a firing notification went out (so the resolve is announced too). */
  notified: boolean;
  history: AlertEvent[];
}

export interface SilenceMatchers {
  readonly rule?: string;
  /** Glob on the subject id (device or gateway id). */
  readonly subject?: string;
}

export interface Silence {
  id: number;
  matchers: SilenceMatchers;
  startsAt: number;
  endsAt: number;
  by: string;
  comment?: string;
}

export interface AlertNotification {
  readonly status: 'firing' | 'resolved';
  readonly alert: Alert;
}

/**
 * What a watcher of the engine hears (several ingestors keep one fleet's alerts in step with it,
 * apps/ingestor/src/cluster/fleet-sync.ts): alerts opening and ending, and what an operator did
 * here. Changes applied from elsewhere (applyAcknowledgement, applySilence, applySilenceExpired)
 * are not told again, so they never echo back.
 */
export type AlertEngineEvent =
  | { readonly type: 'opened'; readonly alert: Alert }
  | { readonly type: 'ended'; readonly alert: Alert }
  | { readonly type: 'acknowledgement'; readonly alert: Alert; readonly change: AcknowledgementChange }
  | { readonly type: 'silenced' | 'silence-expired'; readonly silence: Silence };

/** An acknowledgement (or its withdrawal) made elsewhere, applied as it was made. */
export interface AcknowledgementChange {
  readonly acknowledged: boolean;
  readonly by: string;
  readonly at: number;
  readonly comment?: string | undefined;
}

export interface AlertSnapshot {
  readonly alerts: readonly Alert[];
  readonly silences: readonly Silence[];
  readonly nextId: number;
}

export interface AlertEngineOptions {
  readonly clock: Clock;
  readonly fleet: FleetHealth;
  readonly rules: readonly AlertRule[];
  /** Resolved alerts kept for history. */
  readonly resolvedLimit?: number;
  readonly historyLimit?: number;
}

interface Condition {
  readonly active: boolean;
  readonly value?: number | string;
  readonly summary?: string;
  /** When the condition may change without any new input (a silence growing, a window sliding). */
  readonly recheckAt?: number;
}

interface CompiledRule {
  readonly rule: AlertRule;
  readonly subject: SubjectKind;
  readonly matches: (labels: Record<string, string>) => boolean;
}

const SUBJECT_OF: Record<AlertRule['kind'], SubjectKind> = {
  'device-offline': 'device',
  'device-stale': 'device',
  'metric-threshold': 'device',
  'rate-drop': 'device',
  completeness: 'device',
  'gateway-offline': 'gateway',
  'gateway-backlog': 'gateway',
  'gateway-dropped': 'gateway',
  'gateway-disk': 'gateway',
  'deadletters-rising': 'ingestor',
};

const INGESTOR_ID = 'ingestor';

function compile(rule: AlertRule): CompiledRule {
  const checks: ((labels: Record<string, string>) => boolean)[] = [];
  const m = rule.match;
  if (m?.deviceId !== undefined) {
    const f = globMatcher(m.deviceId);
    checks.push((l) => l['deviceId'] !== undefined && f(l['deviceId']));
  }
  if (m?.gatewayId !== undefined) {
    const f = globMatcher(m.gatewayId);
    checks.push((l) => l['gatewayId'] !== undefined && f(l['gatewayId']));
  }
  if (m?.profile !== undefined) {
    const p = m.profile;
    checks.push((l) => l['profile'] === p);
  }
  return { rule, subject: SUBJECT_OF[rule.kind], matches: (labels) => checks.every((c) => c(labels)) };
}

function compare(op: '<' | '<=' | '>' | '>=', a: number, b: number): boolean {
  switch (op) {
    case '<':
      return a < b;
    case '<=':
      return a <= b;
    case '>':
      return a > b;
    case '>=':
      return a >= b;
  }
}

function pushBounded<T>(list: T[], item: T, limit: number): void {
  list.push(item);
  if (list.length > limit) list.splice(0, list.length - limit);
}

export class AlertEngine {
  private readonly clock: Clock;
  private readonly fleet: FleetHealth;
  private readonly rules: CompiledRule[];
  private readonly resolvedLimit: number;
  private readonly historyLimit: number;
  private readonly active = new Map<string, Alert>();
  private resolved: Alert[] = [];
  private silences: Silence[] = [];
  private readonly timers = new DeadlineQueue();
  private queue: AlertNotification[] = [];
  private dirty = new Set<Alert>();
  /** Alerts that would have started while held. */
  private readonly heldKeys = new Set<string>();
  private nextId = 1;
  private nextSilenceId = 1;
  /** Where new silence ids come from when not this engine's own count (ids shared by several engines). */
  private silenceIds: (() => number) | undefined;
  private readonly watchers = new Set<(event: AlertEngineEvent) => void>();
  /** Rule evaluations so far: a measure that evaluation follows changes, not fleet size. */
  evaluations = 0;

  constructor(options: AlertEngineOptions) {
    this.clock = options.clock;
    this.fleet = options.fleet;
    this.rules = options.rules.map(compile);
    this.resolvedLimit = options.resolvedLimit ?? 1000;
    this.historyLimit = options.historyLimit ?? 50;
  }

  /** Evaluates what changed in the fleet and what is due; call after fleet.tick(). */
  evaluate(): void {
    const now = this.clock.now();
    const changes = this.fleet.takeChanges();
    for (const id of changes.devices) this.evaluateSubject('device', id, now);
    for (const id of changes.gateways) this.evaluateSubject('gateway', id, now);
    if (changes.ingestor) this.evaluateSubject('ingestor', INGESTOR_ID, now);
    if (changes.released) {
      const keys = new Set([...this.heldKeys, ...[...this.active.values()].map((a) => a.key)]);
      this.heldKeys.clear();
      for (const key of keys) this.evaluateKeyString(key, now);
    }
    for (const key of this.timers.popDue(now)) this.evaluateKeyString(key, now);
  }

  private evaluateKeyString(key: string, now: number): void {
    const [rule, subject, ...rest] = key.split('|');
    if (rule !== undefined && subject !== undefined) this.evaluateKey(rule, subject as SubjectKind, rest.join('|'), now);
  }

  nextDeadline(): number | undefined {
    return this.timers.peek();
  }

  takeNotifications(): AlertNotification[] {
    const out = this.queue;
    this.queue = [];
    return out;
  }

  /** Alerts changed since the last call, for the store. */
  takeDirty(): Alert[] {
    const out = [...this.dirty];
    this.dirty = new Set();
    return out;
  }

  list(filter: { state?: AlertState; subject?: string } = {}): Alert[] {
    const all = [...this.active.values(), ...this.resolved];
    return all
      .filter((a) => (filter.state === undefined || a.state === filter.state) && (filter.subject === undefined || a.subject.id === filter.subject))
      .sort((a, b) => b.id - a.id);
  }

  get(id: number): Alert | undefined {
    for (const a of this.active.values()) if (a.id === id) return a;
    return this.resolved.find((a) => a.id === id);
  }

  firingCount(): number {
    let n = 0;
    for (const a of this.active.values()) if (a.state === 'firing') n++;
    return n;
  }

  acknowledge(id: number, by: string, comment?: string): Alert {
    const alert = this.get(id);
    if (!alert || alert.state === 'resolved') throw new FerryError('FERRY_ERR_NOT_READY', `alert ${id} is not active`, { id });
    const change = { acknowledged: true, by, at: this.clock.now(), comment };
    this.setAcknowledged(alert, change);
    this.tell({ type: 'acknowledgement', alert, change });
    return alert;
  }

  /** Takes an acknowledgement back (it was premature, or the wrong alert): the alert is anyone's again. */
  unacknowledge(id: number, by: string, comment?: string): Alert {
    const alert = this.get(id);
    if (!alert || alert.state === 'resolved') throw new FerryError('FERRY_ERR_NOT_READY', `alert ${id} is not active`, { id });
    const change = { acknowledged: false, by, at: this.clock.now(), comment };
    this.setAcknowledged(alert, change);
    this.tell({ type: 'acknowledgement', alert, change });
    return alert;
  }

  /** The active (pending or firing) alert of this `rule|kind|subject` key. */
  activeByKey(key: string): Alert | undefined {
    return this.active.get(key);
  }

  /** An acknowledgement made elsewhere, applied to the active alert of this key; undefined when none is active. */
  applyAcknowledgement(key: string, change: AcknowledgementChange): Alert | undefined {
    const alert = this.active.get(key);
    if (alert) this.setAcknowledged(alert, change);
    return alert;
  }

  private setAcknowledged(alert: Alert, change: AcknowledgementChange): void {
    const { by, at, comment } = change;
    if (change.acknowledged) alert.acknowledged = { by, at, ...(comment !== undefined ? { comment } : {}) };
    else delete alert.acknowledged;
    this.record(alert, { at, event: change.acknowledged ? 'acknowledged' : 'unacknowledged', detail: comment === undefined ? by : `${by}: ${comment}` });
  }

  /**
   * Hears alerts open and end, and what an operator does here (AlertEngineEvent); returns the
   * unsubscribe function. Called synchronously from evaluate() and the operator methods: a
   * listener must not throw.
   */
  watch(listener: (event: AlertEngineEvent) => void): () => void {
    this.watchers.add(listener);
    return () => this.watchers.delete(listener);
  }

  private tell(event: AlertEngineEvent): void {
    for (const watcher of this.watchers) watcher(event);
  }

  /** New silences take their ids from here (unique across the engines sharing them); undefined: this engine's own count. */
  useSilenceIds(next: (() => number) | undefined): void {
    this.silenceIds = next;
  }

  /** Resolved alerts, the last resolved first: the history an operator looks back on (bounded by resolvedLimit). */
  history(filter: { limit?: number; rule?: string; subject?: string } = {}): Alert[] {
    const out: Alert[] = [];
    const limit = filter.limit ?? 100;
    for (let i = this.resolved.length - 1; i >= 0 && out.length < limit; i--) {
      const a = this.resolved[i];
      if (!a || (filter.rule !== undefined && a.rule !== filter.rule) || (filter.subject !== undefined && a.subject.id !== filter.subject)) continue;
      out.push(a);
    }
    return out;
  }

  /** Resolved alerts kept. */
  historySize(): number {
    return this.resolved.length;
  }

  /** The silence that mutes this alert now, if any. */
  silenceOf(alert: Alert, now = this.clock.now()): Silence | undefined {
    return this.silencedBy(alert, now);
  }

  silence(input: { matchers: SilenceMatchers; durationMs: number; by: string; comment?: string }): Silence {
    const now = this.clock.now();
    const id = this.silenceIds ? this.silenceIds() : this.nextSilenceId++;
    const silence: Silence = { id, matchers: input.matchers, startsAt: now, endsAt: now + input.durationMs, by: input.by, ...(input.comment !== undefined ? { comment: input.comment } : {}) };
    this.addSilence(silence, now);
    this.tell({ type: 'silenced', silence });
    return silence;
  }

  /** A silence made elsewhere, kept with its id; false when it is over or already known. */
  applySilence(silence: Silence): boolean {
    const now = this.clock.now();
    if (silence.endsAt <= now || this.silences.some((s) => s.id === silence.id)) return false;
    this.addSilence({ ...silence, matchers: { ...silence.matchers } }, now);
    return true;
  }

  private addSilence(silence: Silence, now: number): void {
    this.silences.push(silence);
    if (silence.id >= this.nextSilenceId) this.nextSilenceId = silence.id + 1;
    for (const alert of this.active.values()) {
      if (this.silencedBy(alert, now) === silence) this.record(alert, { at: now, event: 'silenced', detail: `until ${new Date(silence.endsAt).toISOString()} by ${silence.by}` });
    }
  }

  expireSilence(id: number): boolean {
    const silence = this.silences.find((s) => s.id === id);
    if (!silence) return false;
    this.silences = this.silences.filter((s) => s !== silence);
    this.tell({ type: 'silence-expired', silence });
    return true;
  }

  /** A silence expired elsewhere; false when it was not known here. */
  applySilenceExpired(id: number): boolean {
    const before = this.silences.length;
    this.silences = this.silences.filter((s) => s.id !== id);
    return this.silences.length !== before;
  }

  activeSilences(now = this.clock.now()): Silence[] {
    this.silences = this.silences.filter((s) => s.endsAt > now);
    return [...this.silences];
  }

  snapshot(): AlertSnapshot {
    return { alerts: [...this.active.values(), ...this.resolved], silences: this.activeSilences(), nextId: this.nextId };
  }

  restore(snapshot: AlertSnapshot): void {
    for (const alert of snapshot.alerts) {
      if (alert.state === 'resolved') this.resolved.push(alert);
      else this.active.set(alert.key, alert);
    }
    this.resolved.sort((a, b) => a.id - b.id);
    this.silences = [...snapshot.silences];
    this.nextId = Math.max(snapshot.nextId, ...snapshot.alerts.map((a) => a.id + 1), 1);
    this.nextSilenceId = Math.max(1, ...this.silences.map((s) => s.id + 1));
    // Every restored alert gets a fresh look once the restart grace is over.
    const now = this.clock.now();
    for (const alert of this.active.values()) this.timers.schedule(`${alert.rule}|${alert.subject.kind}|${alert.subject.id}`, now);
  }

  // ---- internals ----

  private evaluateSubject(kind: SubjectKind, id: string, now: number): void {
    for (const compiled of this.rules) if (compiled.subject === kind) this.evaluateRule(compiled, id, now);
  }

  private evaluateKey(ruleName: string, kind: SubjectKind, id: string, now: number): void {
    const compiled = this.rules.find((r) => r.rule.name === ruleName && r.subject === kind);
    if (compiled) this.evaluateRule(compiled, id, now);
    else {
      // The rule was removed from the configuration: its alert resolves.
      const alert = this.active.get(`${ruleName}|${kind}|${id}`);
      if (alert) this.resolve(alert, now, 'rule removed');
    }
  }

  private labelsOf(kind: SubjectKind, id: string): Record<string, string> | undefined {
    if (kind === 'device') {
      const d = this.fleet.device(id);
      if (!d) return undefined;
      return { deviceId: id, ...(d.gatewayId !== undefined ? { gatewayId: d.gatewayId } : {}), ...(d.profile !== undefined ? { profile: d.profile } : {}) };
    }
    if (kind === 'gateway') return this.fleet.gateway(id) ? { gatewayId: id } : undefined;
    return { ingestor: id };
  }

  private evaluateRule(compiled: CompiledRule, id: string, now: number): void {
    this.evaluations++;
    const { rule } = compiled;
    const key = `${rule.name}|${compiled.subject}|${id}`;
    const labels = this.labelsOf(compiled.subject, id);
    let alert = this.active.get(key);
    if (!labels && alert) {
      // The device or gateway was forgotten (retention): nothing will clear it later, so it ends now.
      this.end(alert, now, `${compiled.subject} forgotten`);
      return;
    }
    // Inhibited behind an offline gateway: the gateway-offline alert speaks for its devices, whose
    // alerts neither start, fire nor resolve until it is back (then they are looked at again).
    if (compiled.subject === 'device' && this.fleet.device(id)?.liveness === 'unreachable') return;
    const condition: Condition = labels && compiled.matches(labels) ? this.condition(rule, compiled.subject, id, alert, now) : { active: false };
    if (condition.recheckAt !== undefined && condition.recheckAt > now) this.timers.schedule(key, condition.recheckAt);
    // Device and gateway alerts wait while the ingestor cannot see them; the ingestor's own do not.
    const held = compiled.subject !== 'ingestor' && this.fleet.held(now);

    if (condition.active) {
      if (!alert) {
        if (held) {
          // Nothing is known for sure yet: looked at again when the hold ends.
          this.heldKeys.add(key);
          return;
        }
        alert = {
          id: this.nextId++,
          key,
          rule: rule.name,
          kind: rule.kind,
          severity: rule.severity,
          subject: { kind: compiled.subject, id },
          labels: { alertname: rule.name, severity: rule.severity, ...(labels ?? {}) },
          state: 'pending',
          summary: condition.summary ?? rule.name,
          startsAt: now,
          notified: false,
          history: [],
        };
        this.active.set(key, alert);
        this.record(alert, { at: now, event: 'pending', detail: alert.summary });
        this.tell({ type: 'opened', alert });
      }
      if (condition.value !== undefined) alert.value = condition.value;
      if (rule.summary === undefined && condition.summary !== undefined) alert.summary = condition.summary;
      if (alert.clearSince !== undefined) {
        delete alert.clearSince;
        this.dirty.add(alert);
      }
      if (alert.state === 'pending') {
        const firesAt = alert.startsAt + rule.for;
        if (now < firesAt) this.timers.schedule(key, firesAt);
        else if (held) this.record(alert, { at: now, event: 'held', detail: 'ingestor cut off or in its restart grace' });
        else this.fire(alert, now);
      }
      return;
    }

    if (!alert) return;
    if (condition.value !== undefined) alert.value = condition.value;
    if (alert.state === 'pending') {
      this.end(alert, now, 'condition cleared');
      return;
    }
    if (alert.clearSince === undefined) {
      alert.clearSince = now;
      this.dirty.add(alert);
    }
    const resolvesAt = alert.clearSince + rule.keepFiringFor;
    if (now < resolvesAt) this.timers.schedule(key, resolvesAt);
    else this.resolve(alert, now, 'condition cleared');
  }

  private condition(rule: AlertRule, kind: SubjectKind, id: string, alert: Alert | undefined, now: number): Condition {
    const fleet = this.fleet;
    const d = kind === 'device' ? fleet.device(id) : undefined;
    const g = kind === 'gateway' ? fleet.gateway(id) : undefined;
    const inactive: Condition = { active: false };
    switch (rule.kind) {
      case 'device-offline': {
        if (!d) return inactive;
        const active = d.liveness === 'offline' || d.liveness === 'flapping';
        return { active, value: d.liveness, summary: `device ${id} is ${d.liveness}` };
      }
      case 'device-stale': {
        if (!d || d.lastDataAt === undefined || d.liveness === 'unreachable') return inactive;
        const since = Math.max(d.lastDataAt, d.rebase ?? d.lastDataAt);
        const active = now - since >= rule.after;
        return { active, value: now - d.lastDataAt, summary: `device ${id} sent no data for ${Math.round((now - d.lastDataAt) / 1000)} s`, ...(active ? {} : { recheckAt: since + rule.after }) };
      }
      case 'metric-threshold': {
        const value = d?.metrics[rule.metric];
        if (value === undefined) return inactive;
        // Hysteresis in value: once active, it holds until the value crosses back past `clear`.
        const bound = alert && rule.clear !== undefined ? rule.clear : rule.value;
        return { active: compare(rule.op, value, bound), value, summary: `device ${id} ${rule.metric} = ${value} (${rule.op} ${rule.value})` };
      }
      case 'rate-drop': {
        if (!d) return inactive;
        const rate = fleet.rateOf(d, now);
        if (rate === undefined || d.baselineIntervalMs === undefined || d.intervalSamples < rule.minSamples || d.liveness === 'unreachable') return inactive;
        const baseline = 60_000 / d.baselineIntervalMs;
        const active = rate < baseline * rule.fraction;
        const lastDataAt = Math.max(d.lastDataAt ?? now, fleet.ingestor.observedSince);
        // Silence alone pushes the rate down: look again when it would cross.
        const crossAt = lastDataAt + d.baselineIntervalMs / rule.fraction;
        return { active, value: Math.round(rate * 100) / 100, summary: `device ${id} sends ${rate.toFixed(2)}/min, normally ${baseline.toFixed(2)}/min`, ...(active ? {} : { recheckAt: crossAt }) };
      }
      case 'completeness': {
        if (!d) return inactive;
        const c = fleet.completenessOf(d);
        if (c === undefined || d.received + d.missed < rule.minSamples) return inactive;
        const bound = alert && rule.clear !== undefined ? rule.clear : rule.below;
        return { active: c < bound, value: Math.round(c * 1000) / 1000, summary: `device ${id} delivers ${(c * 100).toFixed(1)}% of expected readings` };
      }
      case 'gateway-offline':
        if (!g) return inactive;
        return { active: g.state === 'offline', value: g.state, summary: `gateway ${id} is offline; ${fleet.devicesOf(id)} devices unreachable` };
      case 'gateway-backlog': {
        const oldest = g?.oldestUnsentTs;
        if (!g || oldest === undefined || oldest === null || (g.outboxDepth ?? 0) === 0) return inactive;
        const age = now - oldest;
        const active = age >= rule.olderThan;
        return { active, value: age, summary: `gateway ${id} holds ${g.outboxDepth ?? 0} unsent readings, oldest ${Math.round(age / 1000)} s old`, ...(active ? {} : { recheckAt: oldest + rule.olderThan }) };
      }
      case 'gateway-disk': {
        const disk = g?.disk;
        if (!g || !disk || disk.totalBytes === 0) return inactive;
        const free = disk.freeBytes / disk.totalBytes;
        // Hysteresis, as for metric thresholds: once firing it holds until more than `clear` is free.
        const bound = alert && rule.clear !== undefined ? rule.clear : rule.freeBelow;
        const mib = (bytes: number): string => `${(bytes / 1_048_576).toFixed(1)} MiB`;
        return {
          active: disk.full || free < bound,
          value: Math.round(free * 1000) / 1000,
          summary: disk.full
            ? `gateway ${id}'s disk is full: new readings are refused (${mib(disk.freeBytes)} free, the outbox takes ${mib(disk.outboxBytes)})`
            : `gateway ${id} has ${(free * 100).toFixed(1)}% of its disk free (${mib(disk.freeBytes)} of ${mib(disk.totalBytes)}; the outbox takes ${mib(disk.outboxBytes)})`,
        };
      }
      case 'gateway-dropped': {
        if (!g || g.droppedAt === undefined) return inactive;
        const active = now - g.droppedAt < rule.within;
        return { active, value: g.dropped, summary: `gateway ${id} dropped readings (${g.dropped} in total)`, ...(active ? { recheckAt: g.droppedAt + rule.within } : {}) };
      }
      case 'deadletters-rising': {
        if (kind !== 'ingestor') return inactive;
        const { increase, changesAt } = fleet.deadLetterIncrease(rule.within, now);
        return { active: increase >= rule.increase, value: increase, summary: `${increase} dead letters within ${Math.round(rule.within / 1000)} s`, ...(changesAt !== undefined ? { recheckAt: changesAt } : {}) };
      }
    }
  }

  private fire(alert: Alert, now: number): void {
    alert.state = 'firing';
    alert.firingAt = now;
    this.record(alert, { at: now, event: 'firing', detail: alert.summary });
    const silence = this.silencedBy(alert, now);
    if (silence) {
      this.record(alert, { at: now, event: 'silenced', detail: `not notified: silence ${silence.id} by ${silence.by}` });
      return;
    }
    alert.notified = true;
    this.queue.push({ status: 'firing', alert: structuredClone(alert) });
  }

  /** Ends an alert at once: a pending one silently, a firing one as resolved. */
  private end(alert: Alert, now: number, why: string): void {
    if (alert.state !== 'pending') {
      this.resolve(alert, now, why);
      return;
    }
    // Never fired, never announced: it simply goes away.
    this.active.delete(alert.key);
    alert.state = 'resolved';
    alert.endsAt = now;
    // Never fired: not kept in the history list (a flapping condition would flood it); the store drops it.
    this.dirty.add(alert);
    this.tell({ type: 'ended', alert });
  }

  private resolve(alert: Alert, now: number, why: string): void {
    this.active.delete(alert.key);
    alert.state = 'resolved';
    alert.endsAt = now;
    delete alert.clearSince;
    this.record(alert, { at: now, event: 'resolved', detail: why });
    // A resolve is announced to whoever heard the firing, silence or not.
    if (alert.notified) this.queue.push({ status: 'resolved', alert: structuredClone(alert) });
    this.keepResolved(alert);
    this.tell({ type: 'ended', alert });
  }

  private keepResolved(alert: Alert): void {
    this.resolved.push(alert);
    if (this.resolved.length > this.resolvedLimit) this.resolved.splice(0, this.resolved.length - this.resolvedLimit);
  }

  private silencedBy(alert: Alert, now: number): Silence | undefined {
    return this.silences.find((s) => {
      if (s.startsAt > now || s.endsAt <= now) return false;
      if (s.matchers.rule !== undefined && s.matchers.rule !== alert.rule) return false;
      if (s.matchers.subject !== undefined && !globMatcher(s.matchers.subject)(alert.subject.id)) return false;
      return true;
    });
  }

  private record(alert: Alert, event: AlertEvent): void {
    pushBounded(alert.history, event, this.historyLimit);
    this.dirty.add(alert);
  }
}
