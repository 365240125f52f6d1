// The libraries a gateway is built on, each doing its part, and nothing of Ferry's: an aedes broker
// devices could publish to (each publish inserted into an SQLite outbox table), an MQTT.js uplink
// connected to the broker bench/gateway.mjs's idle phase starts, a better-sqlite3 file in WAL mode,
// a pino logger and prom-client's default metrics served over node:http. Each is loaded through
// the same entry points and settings the gateway uses (MQTT.js's client class on a net socket,
// prom-client's own files rather than its index, mqtt-packet without its packet-id cache:
// apps/gateway/src/mqtt-connect.ts, packages/runtime/src/metrics.ts, apps/gateway/src/footprint.ts),
// so its idle RSS under the gateway's flags is the floor `idleRssMB` sits on. The bench's yardstick only.
//
//   node <gateway flags> bench/lib/bare-gateway.mjs <device port> <uplink mqtt url> <sqlite file> <http port>
//
// Writes "ready" to stdout once the uplink is connected.
import { createRequire } from 'node:module';
import { createServer, createConnection } from 'node:net';
import { createServer as createHttpServer } from 'node:http';

const [devicePort, uplinkUrl, dbFile, httpPort] = process.argv.slice(2);
// pino, prom-client and mqtt resolved as the gateway's packages resolve them.
const runtimeRequire = createRequire(new URL('../../packages/runtime/package.json', import.meta.url));
const gatewayRequire = createRequire(new URL('../../apps/gateway/package.json', import.meta.url));
const { pino } = runtimeRequire('pino');
const Registry = runtimeRequire('prom-client/lib/registry');
const collectDefaultMetrics = runtimeRequire('prom-client/lib/defaultMetrics');
const Database = gatewayRequire('better-sqlite3');
const { Aedes } = gatewayRequire('aedes');
const Client = gatewayRequire('mqtt/lib/client').default;
// As the gateway does (apps/gateway/src/footprint.ts): no ready-made Buffer per packet id (6.5 MB).
gatewayRequire('mqtt-packet').writeToStream.cacheNumbers = false;

const logger = pino({ level: 'warn', base: { pid: process.pid } }, pino.destination({ fd: 2, sync: false }));
const broker = await Aedes.createBroker();
const server = createServer(broker.handle);
server.listen(Number(devicePort), '127.0.0.1');

const db = new Database(dbFile);
db.pragma('journal_mode = WAL');
db.exec('CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, ts INTEGER NOT NULL, payload TEXT NOT NULL)');
const insert = db.prepare('INSERT INTO outbox (device_id, ts, payload) VALUES (?, ?, ?)');
broker.on('publish', (packet, client) => {
  if (client) insert.run(client.id, Date.now(), packet.payload.toString('utf8'));
});

const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'bare_' });
const http = createHttpServer((_req, res) => {
  registry.metrics().then((text) => res.end(text), () => res.end());
});
http.listen(Number(httpPort), '127.0.0.1');

const { hostname, port } = new URL(uplinkUrl);
const uplink = new Client(() => createConnection({ host: hostname, port: Number(port) }), { protocolVersion: 4, clientId: 'bench-bare-gateway', clean: true, protocol: 'mqtt', host: hostname, hostname, port: Number(port) });
uplink.on('error', (err) => logger.warn({ err }, 'uplink error'));
uplink.once('connect', () => {
  logger.warn('bare gateway up');
  process.stdout.write('ready\n');
});

process.on('SIGTERM', () => {
  uplink.end(true);
  http.close();
  server.close();
  db.close();
  broker.close(() => process.exit(0));
});
