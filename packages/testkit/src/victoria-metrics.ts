// VictoriaMetrics single-node as a real time-series database for sink and end-to-end tests.
// It maps influx line protocol `m,tag=v field=1` to the metric `m_field` with label tag="v".

import { FerryError } from '@ferry/protocol';
import { findBinary } from './binaries.js';
import { httpGet } from './readiness.js';
import { launchServer, ServerProcess, type LaunchedServer, type ServerHandle } from './server.js';
import { makeTempDir } from './tempdir.js';

export interface VmSeries {
  metric: Record<string, string>;
  values: number[];
  /** Unix milliseconds. */
  timestamps: number[];
}

export interface VictoriaHandle extends ServerHandle {
  /** Makes just-written samples searchable (GET /internal/force_flush). */
  flush(): Promise<void>;
  /**
   * Raw samples of the series matching a selector such as `{__name__="temp_value"}`, from
   * /api/v1/export. `start`/`end` are Unix milliseconds, like the returned timestamps;
   * they default to the whole retention period and a year ahead of now.
   */
  exportSeries(match: string, range?: { start?: number; end?: number }): Promise<VmSeries[]>;
}

/** Starts victoria-metrics on 127.0.0.1:<free port> with storage in a temp dir. */
export async function startVictoriaMetrics(): Promise<VictoriaHandle> {
  const binary = findBinary('victoria-metrics');
  const dataDir = await makeTempDir('victoria-metrics');
  const launched = await launchServer({
    name: 'victoria-metrics',
    binary,
    scheme: 'http',
    dataDir,
    configure: async (port) => [
      `-storageDataPath=${dataDir}`,
      `-httpListenAddr=127.0.0.1:${port}`,
      // Readings may carry old timestamps (a gateway replaying a long outage).
      '-retentionPeriod=100y',
      // Without these a query hides the last 30 s and may answer from a cache filled
      // before the write; tests read right after writing.
      '-search.latencyOffset=0s',
      '-search.disableCache',
      '-search.cacheTimestampOffset=0s',
      '-loggerLevel=INFO',
    ],
    isReady: async (port) => {
      const res = await httpGet(`http://127.0.0.1:${port}/health`);
      return res.ok && (await res.text()).trim() === 'OK';
    },
  });
  return new VictoriaServer(launched);
}

const YEAR_MS = 365 * 24 * 3600 * 1000;

class VictoriaServer extends ServerProcess implements VictoriaHandle {
  constructor(launched: LaunchedServer) {
    super(launched);
  }

  async flush(): Promise<void> {
    const res = await fetch(`${this.url}/internal/force_flush`);
    await res.text();
    if (!res.ok) throw this.#httpError('force_flush', res.status);
  }

  async exportSeries(match: string, range: { start?: number; end?: number } = {}): Promise<VmSeries[]> {
    const params = new URLSearchParams({ 'match[]': match });
    // VictoriaMetrics takes seconds (fractions allowed). Its own default end is now rounded
    // down to the second, which would hide a sample written a few milliseconds ago.
    if (range.start !== undefined) params.set('start', String(range.start / 1000));
    params.set('end', String((range.end ?? Date.now() + YEAR_MS) / 1000));
    const res = await fetch(`${this.url}/api/v1/export?${params.toString()}`);
    const body = await res.text();
    if (!res.ok) throw this.#httpError(`export of ${match}`, res.status, body);
    return body
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as VmSeries);
  }

  #httpError(what: string, status: number, body = ''): FerryError {
    return new FerryError('FERRY_ERR_SINK_UNAVAILABLE', `victoria-metrics ${what} answered HTTP ${status}: ${body.slice(0, 500)}`, {
      server: this.name,
      status,
    });
  }
}
