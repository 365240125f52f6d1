// GET /api/gateways/:id/history: one gateway's backlog and drops over a range (gateway-history.ts),
// with how current its last status is (freshness.ts) and its Grafana link: the gateway page's data.
import { z } from 'zod';
import type { OpsServer } from '@ferry/runtime';
import { freshness, statusIntervalOf } from './freshness.js';
import { withDrops } from './gateway-history.js';
import type { GatewayHistory } from './gateway-history.js';
import { grafanaLink } from './grafana.js';
import type { GatewayStatusEntry } from './statuses.js';

export const GATEWAY_HISTORY_RANGES = { '15m': 900_000, '1h': 3_600_000, '6h': 6 * 3_600_000, '24h': 86_400_000 } as const;
type HistoryRange = keyof typeof GATEWAY_HISTORY_RANGES;

export interface GatewayApiDeps {
  readonly history: GatewayHistory;
  /** The gateway's latest status, as statuses.ts holds it. */
  readonly latest: (gatewayId: string) => GatewayStatusEntry | undefined;
  /** Whether the health model knows the gateway (its devices report through it, without a status yet). */
  readonly known?: ((gatewayId: string) => boolean) | undefined;
  readonly now: () => number;
  readonly grafanaUrl?: string | undefined;
}

const querySchema = z.object({ range: z.enum(Object.keys(GATEWAY_HISTORY_RANGES) as [HistoryRange, ...HistoryRange[]]).default('1h') });

export function addGatewayRoutes(app: OpsServer['app'], deps: GatewayApiDeps): void {
  app.get<{ Params: { id: string } }>('/api/gateways/:id/history', async (req, reply) => {
    const parsed = querySchema.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send({ error: 'FERRY_ERR_CONFIG_INVALID', issues: parsed.error.issues });
    const gatewayId = req.params.id;
    const latest = deps.latest(gatewayId);
    const all = deps.history.samples(gatewayId, 0);
    if (!latest && !all && !deps.known?.(gatewayId)) return reply.code(404).send({ error: 'unknown gateway' });
    const to = deps.now();
    const from = to - GATEWAY_HISTORY_RANGES[parsed.data.range];
    const samples = all ?? [];
    const first = samples.findIndex((s) => s.at >= from);
    const inRange = first < 0 ? [] : samples.slice(first);
    return {
      gatewayId,
      range: parsed.data.range,
      from,
      to,
      // Drops per point are counted from the point before the range, when there is one.
      points: withDrops(inRange, first > 0 ? samples[first - 1] : undefined),
      ...freshness(latest?.receivedAt, statusIntervalOf(latest?.status), to),
      status: latest?.status ?? null,
      grafana: grafanaLink(deps.grafanaUrl, 'gateway', gatewayId),
    };
  });
}
