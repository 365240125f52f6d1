// The health monitor: the fleet model and the alert engine behind one face, for the ingestor to
// feed and the ops API to read. Still pure; the caller runs tick() on a timer at nextDeadline().
import type { Clock } from '@ferry/runtime';
import type { GatewayStatus } from '@ferry/protocol';
import { FleetHealth } from './fleet.js';
import type { DeviceHealth, FleetDirty, FleetRetention, FleetSnapshot, GatewayHealth, Liveness, ObservedReading } from './fleet.js';
import { AlertEngine } from './alerts.js';
import type { Alert, AlertNotification, AlertSnapshot } from './alerts.js';
import { parseHealthDefaults } from './rules.js';
import type { AlertRule, HealthDefaults, HealthDefaultsInput } from './rules.js';

export interface FleetSummary {
  readonly devices: Record<Liveness | 'total', number>;
  readonly gateways: Record<'total' | 'online' | 'offline' | 'unknown', number>;
  readonly alerts: { readonly firing: number; readonly pending: number; readonly acknowledged: number };
  /** Alerts are held: the ingestor is cut off from broker or database, or in its restart grace. */
  readonly held: boolean;
  readonly links: { readonly broker: boolean; readonly sink: boolean };
  /** The model's bounds and what they discarded this run. */
  readonly retention: FleetRetention & { readonly maxDevices: number; readonly maxGateways: number; readonly forgetAfterMs: number };
}

/** A device as the API shows it: the stored record plus what is derived from it. */
export interface DeviceView extends DeviceHealth {
  readonly timeoutMs: number;
  readonly expectedIntervalMs: number | null;
  readonly completeness: number | null;
  readonly ratePerMin: number | null;
}

export interface GatewayView extends GatewayHealth {
  readonly devices: number;
  readonly oldestUnsentAgeMs: number | null;
}

export interface HealthChanges {
  readonly fleet: FleetDirty;
  readonly alerts: readonly Alert[];
}

export interface HealthMonitorOptions {
  readonly clock: Clock;
  readonly rules: readonly AlertRule[];
  readonly defaults?: HealthDefaultsInput | HealthDefaults;
  /** State from a previous run (the store's load()). */
  readonly restore?: { readonly fleet: FleetSnapshot; readonly alerts: AlertSnapshot };
}

export class HealthMonitor {
  readonly fleet: FleetHealth;
  readonly alerts: AlertEngine;
  private readonly clock: Clock;

  constructor(options: HealthMonitorOptions) {
    this.clock = options.clock;
    const defaults = parseHealthDefaults(options.defaults ?? {});
    const watchedMetrics = options.rules.flatMap((r) => (r.kind === 'metric-threshold' ? [r.metric] : []));
    this.fleet = new FleetHealth({ clock: options.clock, defaults, watchedMetrics });
    this.alerts = new AlertEngine({ clock: options.clock, fleet: this.fleet, rules: options.rules });
    if (options.restore) {
      this.fleet.restore(options.restore.fleet);
      this.alerts.restore(options.restore.alerts);
    }
  }

  /** False when the device is new and the fleet is at `maxDevices`: not tracked, counted in `fleet.retention().refused`. */
  observeReading(reading: ObservedReading): boolean {
    return this.fleet.observeReading(reading);
  }

  /** A confirmed chunk's readings, in order (FleetHealth.observeReadings): per reading, whether it was taken. */
  observeReadings(readings: readonly ObservedReading[]): boolean[] {
    return this.fleet.observeReadings(readings);
  }

  /** False when the gateway is new and `maxGateways` are tracked: not tracked, counted in `fleet.retention().refusedGateways`. */
  observeGatewayStatus(status: GatewayStatus, receivedAt?: number): boolean {
    return this.fleet.observeGatewayStatus(status, receivedAt);
  }

  /** The ingestor's links; `peers`: the other ingestors' readings reach this model (scale-out). */
  setLinks(links: { broker?: boolean; sink?: boolean; peers?: boolean }): void {
    this.fleet.setLinks(links);
  }

  observeDeadLetters(total: number): void {
    this.fleet.observeDeadLetters(total);
  }

  /** Runs what is due and evaluates what changed; returns the notifications to send. */
  tick(): AlertNotification[] {
    this.fleet.tick();
    this.alerts.evaluate();
    return this.alerts.takeNotifications();
  }

  nextDeadline(): number | undefined {
    const a = this.fleet.nextDeadline();
    const b = this.alerts.nextDeadline();
    if (a === undefined) return b;
    return b === undefined ? a : Math.min(a, b);
  }

  takeDirty(): HealthChanges {
    return { fleet: this.fleet.takeDirty(), alerts: this.alerts.takeDirty() };
  }

  summary(): FleetSummary {
    const devices: Record<Liveness | 'total', number> = { total: 0, unknown: 0, online: 0, suspect: 0, offline: 0, flapping: 0, unreachable: 0 };
    for (const d of this.fleet.devices()) {
      devices.total++;
      devices[d.liveness]++;
    }
    const gateways = { total: 0, online: 0, offline: 0, unknown: 0 };
    for (const g of this.fleet.gateways()) {
      gateways.total++;
      gateways[g.state]++;
    }
    let pending = 0;
    let acknowledged = 0;
    for (const a of this.alerts.list()) {
      if (a.state === 'pending') pending++;
      if (a.state !== 'resolved' && a.acknowledged) acknowledged++;
    }
    const { broker, sink } = this.fleet.ingestor;
    const { maxDevices, maxGateways, forgetAfter } = this.fleet.defaults;
    const retention = { ...this.fleet.retention(), maxDevices, maxGateways, forgetAfterMs: forgetAfter };
    return { devices, gateways, alerts: { firing: this.alerts.firingCount(), pending, acknowledged }, held: this.fleet.held(), links: { broker, sink }, retention };
  }

  deviceView(d: DeviceHealth): DeviceView {
    const fleet = this.fleet;
    return {
      ...d,
      timeoutMs: fleet.timeoutOf(d),
      expectedIntervalMs: fleet.expectedIntervalOf(d) ?? null,
      completeness: fleet.completenessOf(d) ?? null,
      ratePerMin: fleet.rateOf(d, this.clock.now()) ?? null,
    };
  }

  gatewayView(g: GatewayHealth): GatewayView {
    const oldest = g.oldestUnsentTs;
    return { ...g, devices: this.fleet.devicesOf(g.gatewayId), oldestUnsentAgeMs: oldest === undefined || oldest === null || !g.outboxDepth ? null : Math.max(0, this.clock.now() - oldest) };
  }
}
