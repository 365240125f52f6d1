// The simulator's configuration: how many devices, how often they read, where they publish.
import { z } from 'zod';
import { compilePattern, DEFAULT_DEVICE_PATTERNS } from '@ferry/protocol';

function isDevicePattern(pattern: string): boolean {
  try {
    compilePattern(pattern, 'telemetry');
    return pattern.includes('{deviceId}') && !pattern.includes('+') && !pattern.includes('#');
  } catch {
    return false;
  }
}

const devicePatternSchema = z
  .string()
  .refine(isDevicePattern, 'a topic with one {deviceId} level and no wildcards, e.g. devices/{deviceId}/telemetry');

export const simulatorConfigSchema = z
  .object({
    /** The device-side broker, e.g. a gateway's embedded listener. */
    url: z.url({ protocol: /^mqtts?$/, error: 'an mqtt:// or mqtts:// URL' }),
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    devices: z.number().int().positive().max(100_000).default(10),
    deviceIdPrefix: z.string().regex(/^[^/#+\u0000-\u001f]*$/, 'no / # + or control characters').default('sim-'),
    intervalMs: z.number().int().positive().default(1000),
    /** Stop each device after this many published readings; `done` then resolves once all are acknowledged. */
    readingsPerDevice: z.number().int().positive().optional(),
    qos: z.union([z.literal(0), z.literal(1)]).default(1),
    /** Chance that a device misses a reading (it then publishes nothing for that tick). */
    dropoutProbability: z.number().min(0).max(1).default(0.01),
    seed: z.number().int().default(1),
    topicPattern: devicePatternSchema.default(DEFAULT_DEVICE_PATTERNS.telemetry),
    statusTopicPattern: devicePatternSchema.default(DEFAULT_DEVICE_PATTERNS.status),
    /** Publish retained online/offline status per device. */
    status: z.boolean().default(true),
    /**
     * MQTT connections to spread the devices over. One per device (the default up to 50
     * devices) gives each its own Last Will; larger fleets share a few connections.
     */
    connections: z.number().int().positive().optional(),
  })
  .strict();

export type SimulatorConfig = z.infer<typeof simulatorConfigSchema>;
export type SimulatorConfigInput = z.input<typeof simulatorConfigSchema>;

/** Up to this many devices, each gets its own connection by default. */
export const DEDICATED_CONNECTIONS_UP_TO = 50;
const DEVICES_PER_SHARED_CONNECTION = 250;

export function connectionCount(config: SimulatorConfig): number {
  if (config.connections !== undefined) return Math.min(config.connections, config.devices);
  if (config.devices <= DEDICATED_CONNECTIONS_UP_TO) return config.devices;
  return Math.ceil(config.devices / DEVICES_PER_SHARED_CONNECTION);
}
