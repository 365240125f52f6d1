// The ingestor's ops API, added to the shared ops server (/healthz, /metrics): stats, gateway
// statuses, and the dead letters with their replay: those refused here and those gateways
// reported (origin 'gateway', replayed by their gateway).
import { z } from 'zod';
import { errorCodes, isFerryError } from '@ferry/protocol';
import type { ErrorCode } from '@ferry/protocol';
import type { OpsServer } from '@ferry/runtime';
import { presentDeadLetter } from '@ferry/deadletter';
import type { DeadLetterFilter, DeadLetterStore } from '@ferry/deadletter';
import type { ReplayResult } from './pipeline.js';
import type { GatewayDeadLetterCounts, GatewayReplayAnswer } from './gateway-deadletters.js';

export interface OpsRoutesDeps {
  readonly deadLetters: DeadLetterStore;
  readonly stats: () => unknown;
  readonly gateways: () => unknown;
  readonly replay: (id: number) => Promise<ReplayResult | GatewayReplayAnswer>;
  /** The latest dead-letter counts each gateway reported. */
  readonly gatewayDeadLetters?: () => Record<string, GatewayDeadLetterCounts>;
  /** With shared state: readings written and refused per gateway across every ingestor (cluster/fleet-accounting.ts). */
  readonly fleetCounts?: (() => Promise<unknown>) | undefined;
}

const listQuerySchema = z.object({
  code: z.enum(errorCodes as [ErrorCode, ...ErrorCode[]]).optional(),
  deviceId: z.string().min(1).optional(),
  gatewayId: z.string().min(1).optional(),
  origin: z.enum(['gateway', 'local']).optional(),
  afterId: z.coerce.number().int().nonnegative().optional(),
  includeReplayed: z.enum(['true', 'false', '1', '0']).optional(),
  limit: z.coerce.number().int().positive().max(10_000).optional(),
});

const idParamsSchema = z.object({ id: z.coerce.number().int().positive() });


const replayStatus: Record<(ReplayResult | GatewayReplayAnswer)['outcome'], number> = {
  written: 200,
  duplicate: 200,
  pending: 202,
  rejected: 422,
  'not-found': 404,
  unreplayable: 400,
  // A gateway's letter: its readings are in the gateway's outbox, or were already.
  committed: 200,
  'already-replayed': 200,
  // The gateway's outbox did not take them (full, failing disk): ask again later.
  failed: 503,
};

export function addOpsRoutes(app: OpsServer['app'], deps: OpsRoutesDeps): void {
  app.get('/api/stats', async () => deps.stats());
  app.get('/api/gateways', async () => deps.gateways());
  // Across every ingestor of the deployment; 404 without shared state (use /api/stats then).
  app.get('/api/fleet/counts', async (_req, reply) => (deps.fleetCounts ? deps.fleetCounts() : reply.code(404).send({ error: 'no shared state (state.redisUrl): this ingestor counts alone, see /api/stats' })));

  app.get('/api/deadletters', async (req, reply) => {
    const query = listQuerySchema.safeParse(req.query);
    if (!query.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: query.error.issues });
    const q = query.data;
    const filter: DeadLetterFilter = {
      ...(q.code !== undefined ? { code: q.code } : {}),
      ...(q.deviceId !== undefined ? { deviceId: q.deviceId } : {}),
      ...(q.gatewayId !== undefined ? { gatewayId: q.gatewayId } : {}),
      ...(q.origin !== undefined ? { origin: q.origin } : {}),
      ...(q.afterId !== undefined ? { afterId: q.afterId } : {}),
      ...(q.includeReplayed !== undefined ? { includeReplayed: q.includeReplayed === 'true' || q.includeReplayed === '1' } : {}),
      ...(q.limit !== undefined ? { limit: q.limit } : {}),
    };
    return {
      entries: deps.deadLetters.list(filter).map(presentDeadLetter),
      counts: deps.deadLetters.counts(),
      // What each gateway holds, as it last reported (its bound may have discarded letters never reported).
      gateways: deps.gatewayDeadLetters?.() ?? {},
    };
  });

  app.get('/api/deadletters/:id', async (req, reply) => {
    const params = idParamsSchema.safeParse(req.params);
    const entry = params.success ? deps.deadLetters.get(params.data.id) : undefined;
    if (!entry) return reply.code(404).send({ error: 'not found' });
    return presentDeadLetter(entry);
  });

  app.post('/api/deadletters/:id/replay', async (req, reply) => {
    const params = idParamsSchema.safeParse(req.params);
    if (!params.success) return reply.code(404).send({ outcome: 'not-found' });
    let result: ReplayResult | GatewayReplayAnswer;
    try {
      result = await deps.replay(params.data.id);
    } catch (err) {
      if (isFerryError(err, 'FERRY_ERR_NOT_READY')) return reply.code(503).send({ error: err.code, message: err.message });
      throw err;
    }
    return reply.code(replayStatus[result.outcome]).send(result);
  });
}
