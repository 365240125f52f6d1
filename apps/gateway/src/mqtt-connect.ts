// How the gateway opens its MQTT clients (the uplink, an attached broker). MQTT.js's connect()
// loads every transport it knows on first use: WebSocket (ws), SOCKS (socks, ip-address) and
// TLS, over 350 KB of code a gateway keeps in memory for good. For mqtt:// and mqtts:// URLs
// this builds the socket itself, as MQTT.js's tcp and tls transports do, and gives it to MQTT.js's
// client; TLS is loaded only for mqtts://. Any other URL (ws://, credentials or a query in the
// URL, a SOCKS proxy) goes to MQTT.js's connect() unchanged.
import { createRequire } from 'node:module';
import { createConnection, isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import type { IClientOptions, MqttClient } from 'mqtt';

const require = createRequire(import.meta.url);

interface Target {
  readonly tls: boolean;
  readonly host: string;
  readonly port: number;
}

/** The host and port of a plain mqtt(s):// URL; undefined for anything MQTT.js's connect() should read. */
export function plainTarget(url: string, options: IClientOptions, env: NodeJS.ProcessEnv = process.env): Target | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  const protocol = parsed.protocol.slice(0, -1);
  const tls = ['mqtts', 'ssl', 'tls'].includes(protocol);
  if (!tls && !['mqtt', 'tcp'].includes(protocol)) return undefined;
  // connect() reads credentials and a clientId from the URL, and a proxy from the environment.
  if (parsed.username !== '' || parsed.password !== '' || parsed.search !== '' || !['', '/'].includes(parsed.pathname)) return undefined;
  if (options.socksProxy !== undefined || env['MQTTJS_SOCKS_PROXY'] !== undefined || options.servers !== undefined) return undefined;
  // With a client certificate connect() turns mqtt:// into mqtts://.
  if (options.cert !== undefined || options.key !== undefined) return undefined;
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
  return { tls, host, port: parsed.port === '' ? (tls ? 8883 : 1883) : Number(parsed.port) };
}

/** MQTT.js's tls transport: verify the broker unless told not to, and report a refused certificate as the client's error. */
function tlsStream(client: MqttClient, target: Target, options: IClientOptions): Duplex {
  const { connect } = require('node:tls') as typeof import('node:tls');
  const rejectUnauthorized = options.rejectUnauthorized !== false;
  const tlsOptions: ConnectionOptions = {
    host: target.host,
    port: target.port,
    rejectUnauthorized,
    ...(isIP(target.host) === 0 ? { servername: target.host } : {}),
    ...(options.ca !== undefined ? { ca: options.ca } : {}),
  };
  const connection: TLSSocket = connect(tlsOptions);
  const onError = (err: Error): void => {
    if (rejectUnauthorized) client.emit('error', err);
    connection.end();
  };
  connection.on('secureConnect', () => {
    if (rejectUnauthorized && !connection.authorized) connection.emit('error', new Error('TLS not authorized'));
    else connection.removeListener('error', onError);
  });
  connection.on('error', onError);
  return connection;
}

/** An MQTT.js client for `url`, as `mqtt.connect(url, options)` gives. */
export function connectMqtt(url: string, options: IClientOptions): MqttClient {
  const target = plainTarget(url, options);
  if (!target) return (require('mqtt') as typeof import('mqtt')).connect(url, options);
  const Client = (require('mqtt/lib/client') as { default: typeof MqttClient }).default;
  const client: MqttClient = new Client(
    (c) => (target.tls ? tlsStream(c, target, options) : createConnection({ host: target.host, port: target.port })),
    { ...options, protocol: target.tls ? 'mqtts' : 'mqtt', host: target.host, hostname: target.host, port: target.port },
  );
  // As connect() does: an error with no listener of the caller's must not end the process.
  client.on('error', () => {});
  return client;
}
