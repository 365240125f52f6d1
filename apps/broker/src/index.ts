// @ferry/broker: the MQTT broker between gateways and ingestors.
export { createBroker } from './broker.js';
export type { Broker, BrokerDeps, BrokerStats } from './broker.js';
export { brokerConfigSchema } from './config.js';
export type { BrokerConfig, BrokerConfigInput, BrokerUser, BrokerPersistenceConfig } from './config.js';
export { anonymousAuthenticator, configUsersAuthenticator } from './auth.js';
export type { Authenticator } from './auth.js';
export { createSqlitePersistence, SqlitePersistence } from './persistence-sqlite.js';
export type { SqlitePersistenceOptions } from './persistence-sqlite.js';
export {
  addCredential,
  removeCredential,
  listCredentials,
  readCredentialFile,
  parseCredentialFile,
  hashPassword,
  credentialFileAuthenticator,
} from './credentials.js';
export type { CredentialEntry } from './credentials.js';
export { parseAcl, createAcl, filterCovers, ACL_ROLES } from './acl.js';
export type { Acl, AclClient, AclRules, Access } from './acl.js';
export { createPublishRate } from './publish-rate.js';
export type { PublishRate, PublishRateLimit } from './publish-rate.js';
export type { Listener, ListenerKind } from './listeners.js';
