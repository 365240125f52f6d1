// Ephemeral loopback ports for servers the harness starts.

import { createServer } from 'node:net';

/**
 * A port that was free a moment ago on 127.0.0.1. Another process may take it before
 * the server binds it; server start retries with a new port on EADDRINUSE.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.unref();
    probe.once('error', reject);
    probe.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = probe.address();
      if (address === null || typeof address === 'string') {
        probe.close();
        reject(new Error('could not read the address of an ephemeral port'));
        return;
      }
      probe.close(() => resolve(address.port));
    });
  });
}
