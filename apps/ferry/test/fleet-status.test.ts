import { describe, expect, it } from 'vitest';
import { formatFleet } from '../src/commands/fleet-status.js';

describe('ferry status fleet report', () => {
  it('prints the summary, devices not online, gateway health and firing alerts as tables', () => {
    const now = 1_700_000_000_000;
    const lines = formatFleet(
      {
        summary: { devices: { total: 3, online: 1, offline: 1, unreachable: 1 }, gateways: { total: 2, online: 1 }, alerts: { firing: 1, pending: 0, acknowledged: 0 }, held: false },
        devices: [
          { deviceId: 'pump-2', liveness: 'offline', gatewayId: 'gw1', lastDataAt: now - 300_000, battery: 12, completeness: 0.5 },
          { deviceId: 'valve-1', liveness: 'unreachable', gatewayId: 'gw2', completeness: null },
          { deviceId: 'pump-1', liveness: 'online', gatewayId: 'gw1', completeness: 1 },
        ],
        gateways: [
          { gatewayId: 'gw2', state: 'offline', devices: 1, outboxDepth: 40, oldestUnsentAgeMs: 90_000, dropped: 0, ageMs: 38_000, stale: true },
          { gatewayId: 'gw3', state: 'online', devices: 0, outboxDepth: 0, oldestUnsentAgeMs: null, dropped: 0, disk: { totalBytes: 1000, freeBytes: 80, full: false }, ageMs: 4_000, stale: false },
          // An ingestor from before freshness: no age to show.
          { gatewayId: 'gw4', state: 'online', devices: 0, outboxDepth: 1, oldestUnsentAgeMs: null, dropped: 0 },
        ],
        alerts: [{ id: 7, rule: 'device-offline', severity: 'warning', summary: 'device pump-2 is offline', firingAt: now - 60_000 }],
      },
      now,
    );
    expect(lines[0]).toBe('fleet: 3 devices: 1 online, 0 suspect, 1 offline, 0 flapping, 1 unreachable, 0 unknown');
    expect(lines).toContain('devices not online:');
    expect(lines.find((l) => l.includes('pump-2'))).toMatch(/pump-2\s+offline\s+gw1\s+5m ago\s+12\s+-\s+50%/);
    expect(lines.some((l) => l.includes('pump-1'))).toBe(false);
    expect(lines.find((l) => l.includes('gw2') && l.includes('40'))).toMatch(/gw2\s+offline\s+STALE: reported 38 s ago\s+1\s+40\s+90s\s+0\s+-/);
    expect(lines.find((l) => l.includes('gw3'))).toMatch(/gw3\s+online\s+reported 4 s ago\s+0\s+0\s+-\s+0\s+8\.0%/);
    expect(lines.find((l) => l.includes('gw4'))).toMatch(/gw4\s+online\s+-\s+0\s+1\s+-/);
    expect(lines.at(-1)).toMatch(/7\s+device-offline\s+warning\s+60s ago\s+-\s+device pump-2 is offline/);
  });
});
