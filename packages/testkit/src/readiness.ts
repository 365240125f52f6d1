// Small protocol exchanges used to tell whether a server is answering yet. Each is
// bounded in time so that a half-started server cannot hang the readiness loop.

import { connect } from 'node:net';
import { SERVER_HOST } from './server.js';

const PROBE_TIMEOUT_MS = 2000;

/**
 * Sends `request` over a fresh TCP connection and resolves with what came back once
 * `complete` accepts it. Rejects on connection errors, early close or timeout.
 */
export function exchangeOverTcp(port: number, request: Buffer, complete: (reply: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: SERVER_HOST, port });
    let reply = Buffer.alloc(0);
    const finish = (err: Error | undefined): void => {
      socket.destroy();
      if (err === undefined) resolve(reply);
      else reject(err);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => finish(new Error(`no complete reply on port ${port} within ${PROBE_TIMEOUT_MS} ms`)));
    socket.once('error', finish);
    socket.once('connect', () => socket.write(request));
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk]);
      if (complete(reply)) finish(undefined);
    });
    socket.once('end', () => finish(new Error(`port ${port} closed the connection after ${reply.length} bytes`)));
  });
}

/** GET a loopback URL with a timeout; resolves with the response (body unread). */
export function httpGet(url: string): Promise<Response> {
  return fetch(url, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
}
