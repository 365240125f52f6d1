// The broker's listeners: plain TCP, TLS and WebSocket, each optional. They only accept
// connections and hand the byte stream to aedes; admission (max connections) is the broker's.
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Duplex } from 'node:stream';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { FerryError } from '@ferry/protocol';
import type { BrokerConfig } from './config.js';

export type ListenerKind = 'tcp' | 'tls' | 'ws';

export interface Listener {
  readonly kind: ListenerKind;
  /** mqtt://, mqtts:// or ws:// with the bound port. */
  readonly url: string;
  close(): Promise<void>;
}

export interface ListenerHooks {
  /** A new transport connection (TCP socket, before any TLS or HTTP); false closes it at once. */
  admit(socket: Socket, kind: ListenerKind): boolean;
  /** A stream ready for MQTT. */
  accept(stream: Duplex, req?: IncomingMessage): void;
}

async function bind(server: Server, port: number, host: string): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.address() as AddressInfo;
}

function hostOf(address: AddressInfo): string {
  return address.family === 'IPv6' ? `[${address.address}]` : address.address;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function readPem(path: string, field: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `broker config: ${field}: cannot read ${path}: ${(err as Error).message}`, { field, path });
  }
}

function gate(server: Server, kind: ListenerKind, hooks: ListenerHooks): void {
  server.on('connection', (socket: Socket) => {
    if (!hooks.admit(socket, kind)) socket.destroy();
  });
}

/** Opens every configured listener; if one fails to bind, the others are closed again. */
export async function openListeners(config: BrokerConfig, hooks: ListenerHooks): Promise<Listener[]> {
  const opened: Listener[] = [];
  try {
    if (config.listen !== false) {
      const tcp = createNetServer((socket) => hooks.accept(socket));
      gate(tcp, 'tcp', hooks);
      const address = await bind(tcp, config.listen.port, config.listen.host);
      opened.push({ kind: 'tcp', url: `mqtt://${hostOf(address)}:${address.port}`, close: () => closeServer(tcp) });
    }
    if (config.tls) {
      const t = config.tls;
      const tls = createTlsServer(
        {
          cert: readPem(t.cert, 'tls.cert'),
          key: readPem(t.key, 'tls.key'),
          ...(t.ca !== undefined ? { ca: readPem(t.ca, 'tls.ca') } : {}),
          requestCert: t.requireClientCert,
          rejectUnauthorized: t.requireClientCert,
        },
        (socket) => hooks.accept(socket),
      );
      // A failed handshake (no or wrong client certificate, plain MQTT on the TLS port) only closes that socket.
      tls.on('tlsClientError', (_err, socket) => socket.destroy());
      gate(tls, 'tls', hooks);
      const address = await bind(tls, t.port, t.host);
      opened.push({ kind: 'tls', url: `mqtts://${hostOf(address)}:${address.port}`, close: () => closeServer(tls) });
    }
    if (config.websocket) {
      const w = config.websocket;
      const http = createHttpServer((_req, res) => {
        res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket only\n');
      });
      const wss = new WebSocketServer({ server: http, path: w.path });
      wss.on('connection', (ws, req) => hooks.accept(createWebSocketStream(ws), req));
      gate(http, 'ws', hooks);
      const address = await bind(http, w.port, w.host);
      opened.push({
        kind: 'ws',
        url: `ws://${hostOf(address)}:${address.port}${w.path}`,
        async close() {
          for (const client of wss.clients) client.terminate();
          await new Promise<void>((resolve) => wss.close(() => resolve()));
          http.closeAllConnections();
          await closeServer(http);
        },
      });
    }
  } catch (err) {
    await Promise.all(opened.map((l) => l.close()));
    throw err;
  }
  return opened;
}
