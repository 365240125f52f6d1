// One real Mosquitto per test file, and per-test cleanups run last-added-first after each test:
// the lifecycle the ingestor's MQTT-level tests share, with the temp data dirs and started
// ingestors those tests make (both undone by the cleanups).
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { silentLogger } from '@ferry/runtime';
import type { Sink } from '@ferry/sinks';
import { makeTempDir, startMosquitto } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { createIngestor } from '../src/index.js';
import type { Ingestor, IngestorConfigInput } from '../src/index.js';

export type Cleanup = () => unknown;

export interface MosquittoEnv {
  /** The broker's URL; read it inside a test or hook, once the broker is up. */
  readonly url: string;
  readonly server: ServerHandle;
  /** Run after each test, the last added first. */
  readonly cleanups: Cleanup[];
  /** A fresh temp dir, removed after the test. */
  dataDir(prefix: string): Promise<string>;
  /** An ingestor created (with `sink` when given, else its configured one) and ready; closed after the test. */
  startIngestor(config: IngestorConfigInput, sink?: Sink): Promise<Ingestor>;
}

/** Registers the hooks; call once at the top of a test file. */
export function useMosquitto(): MosquittoEnv {
  let server: ServerHandle | undefined;
  const cleanups: Cleanup[] = [];
  beforeAll(async () => {
    server = await startMosquitto();
  });
  afterAll(async () => {
    await server?.stop();
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  const started = (): ServerHandle => {
    if (!server) throw new Error('Mosquitto is not up yet: use it inside a test or hook');
    return server;
  };
  return {
    get url() {
      return started().url;
    },
    get server() {
      return started();
    },
    cleanups,
    async dataDir(prefix) {
      const dir = await makeTempDir(prefix);
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      return dir;
    },
    async startIngestor(config, sink) {
      const ingestor = createIngestor(config, { logger: silentLogger(), ...(sink ? { sink } : {}) });
      cleanups.push(() => ingestor.close());
      await ingestor.ready();
      return ingestor;
    },
  };
}
