// The Ferry broker: aedes behind a TCP listener, with an ops endpoint. Gateways publish batch
// envelopes to it and ingestors subscribe; it is a plain MQTT 3.1.1 broker any client can use.
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { Aedes } from 'aedes';
import type { AedesOptions, AuthenticateError, Client } from 'aedes';
import { FerryError } from '@ferry/protocol';
import { createLogger, createOpsServer, createRegistry, parseConfig } from '@ferry/runtime';
import type { Logger, OpsServer, Registry } from '@ferry/runtime';
import { anonymousAuthenticator, configUsersAuthenticator } from './auth.js';
import type { Authenticator } from './auth.js';
import { brokerConfigSchema } from './config.js';
import type { BrokerConfig, BrokerConfigInput } from './config.js';
import { createBrokerMetrics } from './metrics.js';
import type { BrokerMetrics } from './metrics.js';

export interface BrokerDeps {
  readonly logger?: Logger;
  readonly registry?: Registry;
}

export interface BrokerStats {
  /** MQTT clients connected now. */
  readonly connections: number;
  /** PUBLISH packets accepted from clients since start (wills included). */
  readonly published: number;
}

export interface Broker {
  ready(): Promise<void>;
  close(): Promise<void>;
  /** `mqtt://host:port` once ready. */
  readonly url: string | undefined;
  /** The ops endpoint once ready, unless `http` is false. */
  readonly httpUrl: string | undefined;
  stats(): BrokerStats;
}

/** aedes refuses client publishes to `$SYS/` by default; a custom authorizePublish must keep that. */
const SYS_PREFIX = '$SYS/';
/** CONNACK return code 4 (MQTT 3.1.1): bad user name or password. */
const BAD_USERNAME_OR_PASSWORD = 4;

function remoteOf(client: Client | null): string | undefined {
  const socket = client?.conn as Partial<Socket> | undefined;
  return socket?.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort ?? ''}` : undefined;
}

interface HookContext {
  readonly config: BrokerConfig;
  readonly authenticator: Authenticator;
  readonly logger: Logger;
  readonly metrics: BrokerMetrics;
  /** A client's publish passed every check; counted here, before any subscriber can see it. */
  readonly accepted: (qos: number, bytes: number) => void;
}

/** The aedes hooks, each named after the step of the connect or publish pipeline it gates. */
function brokerHooks(ctx: HookContext): Pick<AedesOptions, 'authenticate' | 'authorizePublish'> {
  return {
    authenticate(client, username, password, done) {
      if (ctx.authenticator.check(username, password)) {
        done(null, true);
        return;
      }
      ctx.metrics.authFailures.inc();
      ctx.logger.warn(
        { event: 'auth_failure', clientId: client.id, username: username ?? null, remote: remoteOf(client) },
        'client refused: bad or missing credentials',
      );
      const err = new Error('bad user name or password') as AuthenticateError;
      err.returnCode = BAD_USERNAME_OR_PASSWORD;
      done(err, false);
    },
    authorizePublish(client, packet, done) {
      if (client && packet.topic.startsWith(SYS_PREFIX)) {
        ctx.metrics.refused.inc({ reason: 'sys_topic' });
        done(new Error(`${SYS_PREFIX} topics are reserved`));
        return;
      }
      const size = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
      if (size > ctx.config.maxPayloadBytes) {
        ctx.metrics.refused.inc({ reason: 'too_large' });
        ctx.logger.warn(
          { event: 'publish_refused', clientId: client?.id, topic: packet.topic, bytes: size, maxPayloadBytes: ctx.config.maxPayloadBytes },
          'publish larger than maxPayloadBytes; closing the connection',
        );
        done(new FerryError('FERRY_ERR_PAYLOAD_TOO_LARGE', `payload is ${size} bytes, at most ${ctx.config.maxPayloadBytes} allowed`));
        return;
      }
      // Wills the broker publishes for a client that vanished while it was down come without one.
      if (client) ctx.accepted(packet.qos, size);
      done(null);
    },
  };
}

export function createBroker(configInput: BrokerConfigInput, deps: BrokerDeps = {}): Broker {
  const config = parseConfig(brokerConfigSchema, configInput, 'broker config');
  const logger = (deps.logger ?? createLogger({ level: config.logLevel })).child({ component: 'broker' });
  const registry = deps.registry ?? createRegistry();
  const authenticator = config.auth ? configUsersAuthenticator(config.auth.users) : anonymousAuthenticator;

  let aedes: Aedes | undefined;
  let server: Server | undefined;
  let ops: OpsServer | undefined;
  let url: string | undefined;
  let published = 0;
  let starting: Promise<void> | undefined;
  let closing: Promise<void> | undefined;

  const connections = (): number => aedes?.connectedClients ?? 0;
  const metrics = createBrokerMetrics(registry, connections);

  async function start(): Promise<void> {
    const accepted = (qos: number, bytes: number): void => {
      published += 1;
      metrics.messagesIn.inc({ qos: String(qos) });
      metrics.bytesIn.inc(bytes);
    };
    const broker = await Aedes.createBroker(brokerHooks({ config, authenticator, logger, metrics, accepted }));
    aedes = broker;
    broker.on('clientReady', (client) => {
      metrics.connects.inc();
      logger.info({ event: 'connect', clientId: client.id, clean: client.clean, remote: remoteOf(client) }, 'client connected');
    });
    broker.on('clientDisconnect', (client) => {
      logger.info({ event: 'disconnect', clientId: client.id, remote: remoteOf(client) }, 'client disconnected');
    });
    broker.on('clientError', (client, err) => {
      logger.info({ event: 'client_error', clientId: client.id, remote: remoteOf(client), err: err.message }, 'client connection error');
    });
    broker.on('connectionError', (client, err) => {
      logger.info({ event: 'connection_error', remote: remoteOf(client), err: err.message }, 'connection error before CONNECT');
    });

    const tcp = createServer((socket) => {
      broker.handle(socket);
    });
    server = tcp;
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(config.listen.port, config.listen.host, () => {
        tcp.off('error', reject);
        resolve();
      });
    });
    const address = tcp.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    url = `mqtt://${host}:${address.port}`;

    if (config.http !== false) {
      ops = createOpsServer({
        host: config.http.host,
        port: config.http.port,
        registry,
        health: () => ({ ok: aedes !== undefined && !aedes.closed, component: 'broker', url, connections: connections(), published }),
      });
      await ops.listen();
    }
    logger.info({ event: 'listening', url, httpUrl: ops?.url, auth: config.auth ? 'users' : 'anonymous' }, 'broker ready');
  }

  async function stop(): Promise<void> {
    // Stop accepting first, then let aedes close its clients, then wait for their sockets.
    const serverClosed = server
      ? new Promise<void>((resolve) => {
          server?.close(() => resolve());
        })
      : Promise.resolve();
    if (aedes) {
      const broker = aedes;
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
    await serverClosed;
    await ops?.close();
    logger.info({ event: 'closed' }, 'broker closed');
  }

  return {
    ready() {
      if (closing) return Promise.reject(new FerryError('FERRY_ERR_NOT_READY', 'broker is closed'));
      starting ??= start();
      return starting;
    },
    close() {
      closing ??= (async () => {
        // A start in progress finishes first, so that nothing it opens is left behind.
        await starting?.catch(() => undefined);
        await stop();
      })();
      return closing;
    },
    get url() {
      return url;
    },
    get httpUrl() {
      return ops?.url;
    },
    stats() {
      return { connections: connections(), published };
    },
  };
}
