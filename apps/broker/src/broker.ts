// The Ferry broker: aedes behind TCP, TLS and WebSocket listeners, with an ops endpoint. Gateways publish batch
// envelopes to it and ingestors subscribe; it is a plain MQTT 3.1.1 broker any client can use.
import { mkdirSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import type { EventEmitter } from 'node:events';
import { Aedes } from 'aedes';
import type { AedesOptions, AuthenticateError, Client } from 'aedes';
import { FerryError } from '@ferry/protocol';
import { abortable, connectionPeer, guardPacketSize, maxPacketBytes, createLogger, createOpsServer, opsTokens, createRegistry, DiskFullState, isDiskFull, parseConfig, systemClock } from '@ferry/runtime';
import type { Clock, Logger, OpsServer, Registry } from '@ferry/runtime';
import { createAcl, parseAcl } from './acl.js';
import type { Acl } from './acl.js';
import { credentialFileAuthenticator, readCredentialFile } from './credentials.js';
import { openClusterEngine } from './cluster.js';
import { holdUntilConnack } from './connack-first.js';
import type { ClusterEngine } from './cluster.js';
import { forwardHook } from './forward.js';
import { openListeners } from './listeners.js';
import type { Listener, ListenerKind } from './listeners.js';
import { createPublishRate } from './publish-rate.js';
import type { PublishRate } from './publish-rate.js';
import { anonymousAuthenticator, configUsersAuthenticator } from './auth.js';
import type { Authenticator } from './auth.js';
import { brokerConfigSchema } from './config.js';
import type { BrokerConfig, BrokerConfigInput } from './config.js';
import { createBrokerMetrics } from './metrics.js';
import { createSqlitePersistence } from './persistence-sqlite.js';
import type { PersistedPacket, SqlitePersistence, SqlitePersistenceOptions } from './persistence-sqlite.js';
import { createRedelivery } from './redelivery.js';
import type { JournaledPublish, Redelivery } from './redelivery.js';
import type { BrokerMetrics } from './metrics.js';

export interface BrokerDeps {
  readonly logger?: Logger;
  readonly registry?: Registry;
  /** Time for the publish-rate buckets. */
  readonly clock?: Clock;
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
  /** `mqtt://host:port` once ready (the TCP listener; the first listener when TCP is off). */
  readonly url: string | undefined;
  /** Every listener's URL once ready, by kind. */
  readonly urls: Partial<Record<ListenerKind, string>>;
  /** The ops endpoint once ready, unless `http` is false. */
  readonly httpUrl: string | undefined;
  stats(): BrokerStats;
}

/** aedes refuses client publishes to `$SYS/` by default; a custom authorizePublish must keep that. */
const SYS_PREFIX = '$SYS/';
/** CONNACK return code 4 (MQTT 3.1.1): bad user name or password. */
const BAD_USERNAME_OR_PASSWORD = 4;

function remoteOf(client: Client | null): string | undefined {
  return connectionPeer(client?.conn);
}

interface HookContext {
  readonly config: BrokerConfig;
  readonly authenticator: Authenticator;
  readonly logger: Logger;
  readonly metrics: BrokerMetrics;
  /** A client's publish passed every check; counted here, before any subscriber can see it. */
  readonly accepted: (qos: number, bytes: number) => void;
  /** SQLite persistence, when configured: QoS 1 publishes are journaled before their PUBACK. */
  readonly persistence: SqlitePersistence | undefined;
  readonly acl: Acl | undefined;
  readonly publishRate: PublishRate | undefined;
}

/** Who a client is for ACLs: its CONNECT username, or the CN of its verified TLS client certificate. */
const identities = new WeakMap<Client, string | undefined>();

function verifiedCertificateName(client: Client): string | undefined {
  const conn = client.conn as Partial<TLSSocket>;
  if (typeof conn.getPeerCertificate !== 'function' || conn.authorized !== true) return undefined;
  const cn = conn.getPeerCertificate().subject?.CN;
  return typeof cn === 'string' && cn.length > 0 ? cn : undefined;
}

/** The aedes hooks, each named after the step of the connect or publish pipeline it gates. */
function brokerHooks(ctx: HookContext): Pick<AedesOptions, 'authenticate' | 'authorizePublish' | 'authorizeSubscribe' | 'published'> {
  const refuseAuth = (client: Client, username: string | undefined, reason: string, done: (err: AuthenticateError | null, ok: boolean) => void): void => {
    ctx.metrics.authFailures.inc();
    ctx.logger.warn({ event: 'auth_failure', clientId: client.id, username: username ?? null, remote: remoteOf(client), reason }, 'client refused: bad or missing credentials');
    const err = new Error('bad user name or password') as AuthenticateError;
    err.returnCode = BAD_USERNAME_OR_PASSWORD;
    done(err, false);
  };
  return {
    authenticate(client, username, password, done) {
      const certName = verifiedCertificateName(client);
      if (certName !== undefined) {
        // A verified client certificate is the credential; a username, if any, must be the same name.
        if (username !== undefined && username !== certName) {
          refuseAuth(client, username, 'username differs from the client certificate', done);
          return;
        }
        identities.set(client, certName);
        done(null, true);
        return;
      }
      const anonymousAllowed = username === undefined && password === undefined && (!ctx.config.auth || ctx.config.auth.allowAnonymous);
      if (anonymousAllowed) {
        identities.set(client, username);
        done(null, true);
        return;
      }
      void ctx.authenticator.check(username, password).then((ok) => {
        if (!ok) {
          refuseAuth(client, username, 'bad or missing credentials', done);
          return;
        }
        identities.set(client, username);
        done(null, true);
      });
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
      if (client && ctx.acl && !ctx.acl.canPublish({ clientId: client.id, username: identities.get(client) }, packet.topic)) {
        ctx.metrics.denied.inc({ action: 'publish' });
        ctx.logger.warn(
          { event: 'acl_denied', action: 'publish', clientId: client.id, username: identities.get(client) ?? null, topic: packet.topic },
          'publish denied by the ACL; closing the connection',
        );
        done(new Error(`publish to ${packet.topic} denied`));
        return;
      }
      if (client && ctx.publishRate && !ctx.publishRate.take(client.id)) {
        ctx.metrics.refused.inc({ reason: 'rate_limited' });
        ctx.logger.warn({ event: 'publish_refused', clientId: client.id, topic: packet.topic, reason: 'rate_limited' }, 'client over its publish rate; closing the connection');
        done(new Error('publish rate exceeded'));
        return;
      }
      // Wills the broker publishes for a client that vanished while it was down come without one.
      if (client) ctx.accepted(packet.qos, size);
      if (client && packet.qos === 1 && ctx.persistence && typeof packet.payload !== 'string') {
        // The PUBACK waits for the journal's group commit.
        ctx.persistence.journalInbound(packet, (err) => {
          if (err) {
            ctx.metrics.refused.inc({ reason: 'storage' });
            // A full disk is logged once per episode (where the broker counts it), not once per publish.
            if (!isDiskFull(err)) {
              ctx.logger.error({ event: 'journal_failed', clientId: client.id, topic: packet.topic, err: err.message }, 'QoS 1 publish could not be journaled; closing the connection so it is resent');
            }
            done(err);
            return;
          }
          done(null);
        });
        return;
      }
      done(null);
    },
    authorizeSubscribe(client, sub, done) {
      if (client && ctx.acl && !ctx.acl.canSubscribe({ clientId: client.id, username: identities.get(client) }, sub.topic)) {
        ctx.metrics.denied.inc({ action: 'subscribe' });
        ctx.logger.warn(
          { event: 'acl_denied', action: 'subscribe', clientId: client.id, username: identities.get(client) ?? null, topic: sub.topic },
          'subscribe denied by the ACL',
        );
        // A null subscription is a SUBACK failure (0x80) for this filter; the connection stays.
        done(null, null);
        return;
      }
      done(null, sub);
    },
    published(packet, _client, done) {
      // Last step of aedes' publish pipeline: retained and offline queues are stored by now.
      const payload = packet.payload;
      if (typeof payload !== 'string') {
        const seq = ctx.persistence?.journalSeqOf(payload);
        if (seq !== undefined) ctx.persistence?.journalDone(seq, payload);
      }
      done(null);
    },
  };
}

/**
 * The ACL again at delivery, as Mosquitto checks it: a persistent session's subscriptions and
 * queued messages are restored to whoever connects with its client id, so a client taking over
 * another's session (or one the ACL no longer allows) must not get what it cannot read.
 */
function aclForward(acl: Acl | undefined, forward: NonNullable<AedesOptions['authorizeForward']>, metrics: BrokerMetrics, logger: Logger): NonNullable<AedesOptions['authorizeForward']> {
  if (!acl) return forward;
  return (client, packet) => {
    if (!acl.canSubscribe({ clientId: client.id, username: identities.get(client) }, packet.topic)) {
      metrics.denied.inc({ action: 'deliver' });
      logger.warn({ event: 'acl_denied', action: 'deliver', clientId: client.id, username: identities.get(client) ?? null, topic: packet.topic }, 'delivery denied by the ACL; message dropped for this client');
      return null;
    }
    return forward(client, packet);
  };
}

/** Publishes a journaled QoS 1 message through aedes' whole pipeline (no client: no ACL, no journal again). */
function publishJournaled(broker: Aedes, packet: JournaledPublish): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    broker.publish({ cmd: 'publish', topic: packet.topic, payload: packet.payload, qos: 1, retain: packet.retain, dup: false }, (err) => {
      if (err) reject(err);
      else resolve();
    });
  });
}

function journaledPublish(packet: PersistedPacket): JournaledPublish {
  const payload = packet.payload ?? Buffer.alloc(0);
  return { topic: packet.topic ?? '', payload: typeof payload === 'string' ? Buffer.from(payload) : payload, retain: packet.retain ?? false };
}

/**
 * QoS 1 publishes acked before a crash but not stored: published again, at least once. One that
 * cannot be stored now (a full disk) is left to `redelivery`, so the broker still starts.
 */
async function replayJournal(broker: Aedes, persistence: SqlitePersistence, redelivery: Redelivery, logger: Logger): Promise<void> {
  const pending = persistence.journalPending();
  if (pending.length === 0) return;
  logger.warn({ event: 'journal_replay', count: pending.length }, 'republishing QoS 1 messages acknowledged before a crash');
  for (const { seq, packet } of pending) {
    const publish = journaledPublish(packet);
    try {
      await publishJournaled(broker, publish);
    } catch {
      redelivery.add(seq, publish);
      continue;
    }
    persistence.journalDone(seq);
  }
}

/** Where sessions and retained messages live: SQLite when asked for or when a dataDir is set. */
function openPersistence(config: BrokerConfig, hooks: Pick<SqlitePersistenceOptions, 'onWrite' | 'onPublishNotStored'>): SqlitePersistence | undefined {
  const chosen = config.persistence ?? (config.dataDir !== undefined ? { type: 'sqlite' as const, synchronous: 'full' as const } : { type: 'memory' as const });
  if (chosen.type === 'memory') return undefined;
  const path = chosen.path ?? (config.dataDir !== undefined ? join(config.dataDir, 'broker.db') : undefined);
  if (path === undefined) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', 'broker config: persistence.path is required for sqlite persistence when dataDir is not set', {
      field: 'persistence.path',
    });
  }
  if (config.dataDir !== undefined) mkdirSync(config.dataDir, { recursive: true });
  try {
    return createSqlitePersistence({ path, synchronous: chosen.synchronous, ...hooks });
  } catch (err) {
    throw new FerryError('FERRY_ERR_STORAGE', `broker persistence: cannot open ${path}: ${(err as Error).message}`, { path }, { cause: err });
  }
}

/** Config users and the credential file, either may admit a client. */
function authenticatorFor(config: BrokerConfig): Authenticator {
  // `auth: { allowAnonymous: true }` alone: an open broker on purpose, whatever a client sends.
  if (!config.auth || (config.auth.users === undefined && config.auth.passwordFile === undefined)) return anonymousAuthenticator;
  const checks: Authenticator[] = [];
  if (config.auth.users) checks.push(configUsersAuthenticator(config.auth.users));
  if (config.auth.passwordFile !== undefined) checks.push(credentialFileAuthenticator(readCredentialFile(config.auth.passwordFile)));
  return {
    async check(username, password) {
      for (const a of checks) if (await a.check(username, password)) return true;
      return false;
    },
  };
}

function aclFor(config: BrokerConfig): Acl | undefined {
  if (config.aclFile === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(config.aclFile, 'utf8');
  } catch (err) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `broker config: aclFile: cannot read ${config.aclFile}: ${(err as Error).message}`, { field: 'aclFile' });
  }
  return createAcl(parseAcl(text, config.aclFile));
}

export function createBroker(configInput: BrokerConfigInput, deps: BrokerDeps = {}): Broker {
  const config = parseConfig(brokerConfigSchema, configInput, 'broker config');
  const logger = (deps.logger ?? createLogger({ level: config.logLevel })).child({ component: 'broker' });
  // Process metrics too (memory, CPU, event-loop lag, GC), under their standard unprefixed names.
  const registry = deps.registry ?? createRegistry({ defaultMetrics: true, prefix: '' });

  let aedes: Aedes | undefined;
  let persistence: SqlitePersistence | undefined;
  let cluster: ClusterEngine | undefined;
  let listeners: Listener[] = [];
  const sockets = new Set<Socket>();
  let ops: OpsServer | undefined;
  let published = 0;
  let starting: Promise<void> | undefined;
  let closing: Promise<void> | undefined;
  /** Aborted by close(): a stop must not wait for a Redis that does not answer. */
  const startAbort = new AbortController();

  const connections = (): number => aedes?.connectedClients ?? 0;
  // A full disk under the SQLite persistence: QoS 1 publishes are not PUBACKed meanwhile, and it is
  // reported in /healthz and metrics until writes go through again. One store: broker.db.
  const diskFull = new DiskFullState(deps.clock ?? systemClock);
  let redelivery: Redelivery | undefined;
  const metrics = createBrokerMetrics(registry, connections, () => (persistence && !closing ? persistence.counts() : undefined), () => diskFull.full);

  function storageWrite(op: string, err?: unknown): void {
    if (err === undefined) {
      if (diskFull.succeeded('broker.db')) logger.info({ event: 'storage_ok', op }, 'persistence writes go through again; QoS 1 publishes are PUBACKed again');
      return;
    }
    const verdict = diskFull.failed('broker.db', err);
    if (verdict === 'other') return;
    metrics.storageFull.inc();
    // Once per episode: a full disk fails every commit, and a line per commit would only add to it.
    if (verdict === 'began') {
      logger.error(
        { event: 'storage_full', op, err: diskFull.report().lastError },
        'disk full under the persistence: QoS 1 publishes are not PUBACKed until writes go through again (their clients resend them)',
      );
    }
  }

  /**
   * A client's QoS 1 publish PUBACKed and then not stored: published again from the journal, whose
   * entry only that redelivery clears. Its first pass through aedes, should it still reach its
   * `published` step, no longer finds the entry and clears nothing.
   */
  function publishNotStored(packet: PersistedPacket, journalSeq?: number): void {
    if (journalSeq !== undefined) redelivery?.add(journalSeq, journaledPublish(packet));
  }
  const urls = (): Partial<Record<ListenerKind, string>> => Object.fromEntries(listeners.map((l) => [l.kind, l.url]));

  async function start(): Promise<void> {
    const authenticator = authenticatorFor(config);
    const acl = aclFor(config);
    if (config.acl === 'off') logger.warn({ event: 'acl_off' }, 'acl: off: every client may publish and subscribe to every topic');
    const rate = config.limits.publishRate;
    const publishRate = rate ? createPublishRate(rate, deps.clock ?? systemClock) : undefined;
    const accepted = (qos: number, bytes: number): void => {
      published += 1;
      metrics.messagesIn.inc({ qos: String(qos) });
      metrics.bytesIn.inc(bytes);
    };
    if (config.cluster) {
      if (config.persistence) throw new FerryError('FERRY_ERR_CONFIG_INVALID', 'broker config: persistence cannot be set with cluster (Redis holds the sessions)', { field: 'persistence' });
      cluster = openClusterEngine(config.cluster.redisUrl, (err) => {
        metrics.clusterErrors.inc();
        logger.warn({ event: 'cluster_redis_error', err: err.message }, 'Redis connection error; reconnecting');
      });
    } else {
      persistence = openPersistence(config, { onWrite: storageWrite, onPublishNotStored: publishNotStored });
    }
    const hooks = brokerHooks({ config, authenticator, logger, metrics, accepted, persistence, acl, publishRate });
    const options: AedesOptions = {
      ...hooks,
      authorizeForward: aclForward(acl, forwardHook(config.limits.maxQueuedBytes, metrics, logger), metrics, logger),
      drainTimeout: config.limits.drainTimeoutMs,
    };
    if (persistence) options.persistence = persistence;
    if (cluster) {
      Object.assign(options, { persistence: cluster.persistence, mq: cluster.mq });
    }
    if (config.limits.maxKeepaliveSeconds !== undefined) options.keepaliveLimit = config.limits.maxKeepaliveSeconds;
    // Clustered, this waits for Redis (the sessions are read from it) for as long as it takes.
    const broker = await abortable(Aedes.createBroker(options), startAbort.signal, 'setting up the broker (Redis, when clustered)');
    // aedes emits 'error' for failures it cannot pin on a client (publishing the wills of a broker
    // that died, a session lookup): logged, never the end of the process.
    // (The typings list only aedes' own events; 'error' is EventEmitter's.)
    (broker as EventEmitter).on('error', (err: Error) => {
      storageWrite('aedes', err);
      if (!isDiskFull(err)) logger.error({ event: 'broker_error', err: err.message }, 'broker error');
    });
    if (persistence) {
      const journal = persistence;
      redelivery = createRedelivery({
        publish: (packet) => publishJournaled(broker, packet),
        delivered: (seq) => journal.journalDone(seq),
        retry: { initialMs: 200, maxMs: 5_000, factor: 2 },
        logger,
      });
      await replayJournal(broker, persistence, redelivery, logger);
    }
    aedes = broker;
    broker.on('clientReady', (client) => {
      metrics.connects.inc();
      logger.info({ event: 'connect', clientId: client.id, clean: client.clean, username: identities.get(client) ?? null, remote: remoteOf(client) }, 'client connected');
    });
    broker.on('clientDisconnect', (client) => {
      publishRate?.forget(client.id);
      logger.info({ event: 'disconnect', clientId: client.id, remote: remoteOf(client) }, 'client disconnected');
    });
    broker.on('clientError', (client, err) => {
      logger.info({ event: 'client_error', clientId: client.id, remote: remoteOf(client), err: err.message }, 'client connection error');
    });
    broker.on('connectionError', (client, err) => {
      metrics.connectionErrors.inc();
      logger.info({ event: 'connection_error', remote: remoteOf(client), err: err.message }, 'connection error before CONNECT');
    });

    const maxRemaining = maxPacketBytes(config.maxPayloadBytes);
    listeners = await openListeners(config, {
      admit(socket, kind) {
        if (sockets.size >= config.limits.maxConnections) {
          metrics.connectionsRefused.inc({ reason: 'max_connections' });
          logger.warn({ event: 'connection_refused', listener: kind, remote: `${socket.remoteAddress ?? ''}:${socket.remotePort ?? ''}`, maxConnections: config.limits.maxConnections }, 'maxConnections reached; closing the new connection');
          return false;
        }
        sockets.add(socket);
        socket.once('close', () => sockets.delete(socket));
        return true;
      },
      accept(stream, req) {
        guardPacketSize(stream, maxRemaining, (announced) => {
          metrics.connectionsRefused.inc({ reason: 'packet_too_large' });
          const socket = stream as Partial<Socket>;
          logger.warn(
            { event: 'packet_too_large', remote: socket.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort ?? ''}` : undefined, announcedBytes: announced, maxPacketBytes: maxRemaining },
            'a packet announced beyond the size bound; closing the connection before its body arrives',
          );
        });
        holdUntilConnack(stream);
        broker.handle(stream, req);
      },
    });

    if (config.http !== false) {
      ops = createOpsServer({
        host: config.http.host,
        port: config.http.port,
        registry,
        tokens: opsTokens(config.http),
        health: () => {
          const disk = diskFull.report();
          return {
            ok: aedes !== undefined && !aedes.closed && !disk.full,
            component: 'broker',
            urls: urls(),
            connections: connections(),
            published,
            ...(persistence
              ? {
                  storage: {
                    full: disk.full,
                    since: disk.since,
                    lastError: disk.lastError,
                    lastErrorAt: disk.lastErrorAt,
                    failures: disk.failures,
                    redeliveries: redelivery?.pending ?? 0,
                  },
                }
              : {}),
          };
        },
      });
      await ops.listen();
    }
    logger.info(
      { event: 'listening', url: listeners[0]?.url, urls: urls(), httpUrl: ops?.url, auth: config.auth ? 'users' : 'anonymous', acl: acl ? config.aclFile : (config.acl ?? null), persistence: cluster ? 'redis' : persistence ? 'sqlite' : 'memory' },
      'broker ready',
    );
  }

  async function stop(): Promise<void> {
    // Stop accepting first, then let aedes close its clients, then wait for their sockets.
    const listenersClosed = Promise.all(listeners.map((l) => l.close()));
    if (aedes) {
      const broker = aedes;
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
    // Connections that never sent CONNECT are not aedes clients yet; they go too.
    for (const socket of sockets) socket.destroy();
    await listenersClosed;
    // Publishes still waiting for storage stay in the journal: the next start replays them.
    redelivery?.stop();
    // After aedes is closed nothing writes to it any more.
    await persistence?.destroy();
    // A start given up before Redis answered has nothing to tidy there, and a destroy would wait for it.
    if (cluster && !aedes) cluster.abandon();
    else await cluster?.persistence.destroy();
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
        // A start in progress is ended at its current wait and fails first, so that nothing it
        // opens is left behind and a stop never waits for Redis.
        startAbort.abort(new Error('close() called'));
        await starting?.catch(() => undefined);
        await stop();
      })();
      return closing;
    },
    get url() {
      return listeners.find((l) => l.kind === 'tcp')?.url ?? listeners[0]?.url;
    },
    get urls() {
      return urls();
    },
    get httpUrl() {
      return ops?.url;
    },
    stats() {
      return { connections: connections(), published };
    },
  };
}
