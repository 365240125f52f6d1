// The ops HTTP endpoint every process serves: /healthz and /metrics, plus whatever routes
// a component adds (the ingestor's ops API).
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { z } from 'zod';

/** The `http` block of every service's config: where its ops endpoint listens (port 0: any free port). */
export const opsHttpSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(0).max(65_535).default(0),
  })
  .strict();

export interface HealthReport {
  readonly ok: boolean;
  readonly [detail: string]: unknown;
}

export interface OpsServerOptions {
  readonly host?: string;
  readonly port: number;
  readonly registry: Registry;
  readonly health: () => HealthReport | Promise<HealthReport>;
}

export interface OpsServer {
  readonly app: FastifyInstance;
  /** Starts listening; resolves with the bound URL. */
  listen(): Promise<string>;
  readonly url: string | undefined;
  close(): Promise<void>;
}

export function createOpsServer(options: OpsServerOptions): OpsServer {
  const app = Fastify({ logger: false });
  let url: string | undefined;
  app.get('/healthz', async (_req, reply) => {
    const report = await options.health();
    return reply.code(report.ok ? 200 : 503).send(report);
  });
  app.get('/metrics', async (_req, reply) => {
    return reply.header('content-type', options.registry.contentType).send(await options.registry.metrics());
  });
  return {
    app,
    get url() {
      return url;
    },
    async listen() {
      url = await app.listen({ host: options.host ?? '127.0.0.1', port: options.port });
      return url;
    },
    async close() {
      await app.close();
    },
  };
}
