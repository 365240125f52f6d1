// Which sink to build, from configuration: a zod schema (types come from it) and the factory.
import { z } from 'zod';
import type { Logger } from '@ferry/runtime';
import { parseConfig } from '@ferry/runtime';
import type { Sink } from './sink.js';
import { createSqliteSink } from './sqlite.js';
import { createInfluxV2Sink } from './influx-v2.js';
import { createInfluxV1Sink } from './influx-v1.js';

const httpUrl = z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' });
const timeoutMs = z.number().int().positive().optional();

export const sqliteSinkConfigSchema = z
  .object({
    type: z.literal('sqlite'),
    path: z.string().min(1),
    synchronous: z.enum(['normal', 'full']).optional(),
  })
  .strict();

export const influxV2SinkConfigSchema = z
  .object({
    type: z.literal('influxdb2'),
    url: httpUrl,
    token: z.string().min(1),
    org: z.string().min(1),
    bucket: z.string().min(1),
    timeoutMs,
  })
  .strict();

export const influxV1SinkConfigSchema = z
  .object({
    type: z.literal('influxdb1'),
    url: httpUrl,
    database: z.string().min(1),
    retentionPolicy: z.string().min(1).optional(),
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    timeoutMs,
  })
  .strict();

export const sinkConfigSchema = z.discriminatedUnion('type', [sqliteSinkConfigSchema, influxV2SinkConfigSchema, influxV1SinkConfigSchema]);

export type SinkConfig = z.infer<typeof sinkConfigSchema>;

export interface SinkDeps {
  readonly logger?: Logger | undefined;
}

/** Builds the configured sink; throws FERRY_ERR_CONFIG_INVALID naming the fields that are wrong. */
export function createSink(config: SinkConfig, deps: SinkDeps = {}): Sink {
  const valid = parseConfig(sinkConfigSchema, config, 'sink config');
  switch (valid.type) {
    case 'sqlite':
      return createSqliteSink(valid);
    case 'influxdb2':
      return createInfluxV2Sink({ ...valid, logger: deps.logger });
    case 'influxdb1':
      return createInfluxV1Sink({ ...valid, logger: deps.logger });
  }
}
