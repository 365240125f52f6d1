// Ephemeral loopback ports for servers the harness starts.

import { readFileSync } from 'node:fs';
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

/** The kernel's ephemeral range (where port-0 binds and outgoing connections take their ports). */
function ephemeralLow(): number {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return low !== undefined && Number.isInteger(low) && low > 11_000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/**
 * A free port below the kernel's ephemeral range, for a child process to listen on: a child
 * cannot retry on EADDRINUSE with a port of our choosing, and one that restarts on the same port
 * (kill -9 tests) must find it free. No port-0 listener or outgoing connection can take a port
 * here between the probe and the child's bind, as one did from freePort()'s range: a clustered
 * broker's own Redis connections, made before it listens, took its port once.
 */
export async function stablePort(): Promise<number> {
  const high = ephemeralLow() - 1;
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = 10_000 + Math.floor(Math.random() * (high - 10_000));
    const free = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.unref();
      probe.once('error', () => resolve(false));
      probe.listen({ host: '127.0.0.1', port, exclusive: true }, () => probe.close(() => resolve(true)));
    });
    if (free) return port;
  }
  return freePort();
}
