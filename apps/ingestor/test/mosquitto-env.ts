// One real Mosquitto per test file, and per-test cleanups run last-added-first after each test:
// the lifecycle the ingestor's MQTT-level tests share.
import { afterAll, afterEach, beforeAll } from 'vitest';
import { startMosquitto } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';

export type Cleanup = () => unknown;

export interface MosquittoEnv {
  /** The broker's URL; read it inside a test or hook, once the broker is up. */
  readonly url: string;
  readonly server: ServerHandle;
  /** Run after each test, the last added first. */
  readonly cleanups: Cleanup[];
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
  };
}
