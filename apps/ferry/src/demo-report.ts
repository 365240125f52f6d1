// What the demo prints: one status line a second and the final summary. Pure: stats in, text out.

export interface DemoSnapshot {
  /** Seconds since the demo started. */
  readonly elapsedS: number;
  /** Device messages the gateway received since the previous snapshot, per second. */
  readonly inPerS: number;
  readonly written: number;
  readonly acked: number;
  readonly outboxDepth: number;
  readonly devicesOnline: number;
  readonly devices: number;
  readonly deadLetters: number;
  readonly uplinkConnected: boolean;
}

export function statusLine(s: DemoSnapshot): string {
  return [
    `[${String(Math.round(s.elapsedS)).padStart(4)}s]`,
    `in ${String(Math.round(s.inPerS)).padStart(5)}/s`,
    `written ${s.written}`,
    `acked ${s.acked}`,
    `outbox ${s.outboxDepth}`,
    `devices ${s.devicesOnline}/${s.devices} online`,
    `dead letters ${s.deadLetters}`,
    ...(s.uplinkConnected ? [] : ['UPLINK DOWN']),
  ].join('  ');
}

export interface DemoCounts {
  /** Telemetry readings the simulator published. */
  readonly telemetry: number;
  /** Device status messages the gateway acknowledged (they are readings too). */
  readonly statuses: number;
  /** Readings the ingestor wrote to the database this run. */
  readonly written: number;
  /** Readings the gateway deleted from its outbox after the ingestor's ack. */
  readonly acked: number;
  readonly outboxDepth: number;
  readonly deadLetters: number;
}

export interface DemoSummary {
  readonly published: number;
  readonly written: number;
  readonly acked: number;
  readonly outboxDepth: number;
  readonly deadLetters: number;
  readonly ok: boolean;
  readonly telemetry: number;
  readonly statuses: number;
}

/** Every reading the devices sent must have been written, and nothing may be left in the outbox. */
export function demoSummary(c: DemoCounts): DemoSummary {
  const published = c.telemetry + c.statuses;
  return {
    published,
    written: c.written,
    acked: c.acked,
    outboxDepth: c.outboxDepth,
    deadLetters: c.deadLetters,
    ok: c.written >= published && c.outboxDepth === 0,
    telemetry: c.telemetry,
    statuses: c.statuses,
  };
}
