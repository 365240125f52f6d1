// @ferry/broker: the MQTT broker between gateways and ingestors.
export { createBroker } from './broker.js';
export type { Broker, BrokerDeps, BrokerStats } from './broker.js';
export { brokerConfigSchema } from './config.js';
export type { BrokerConfig, BrokerConfigInput, BrokerUser } from './config.js';
export { anonymousAuthenticator, configUsersAuthenticator } from './auth.js';
export type { Authenticator } from './auth.js';
