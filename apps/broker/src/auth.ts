// Who may connect. An Authenticator is the seam a credential file (scrypt hashes) or an
// external identity check will implement later; today the users come from the config.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { BrokerUser } from './config.js';

export interface Authenticator {
  /**
   * Whether these credentials may connect; never rejects. Asynchronous: a password hash (scrypt,
   * tens of ms) runs on the thread pool, so a reconnect storm does not stall every other client.
   */
  check(username: string | undefined, password: Buffer | undefined): Promise<boolean>;
}

/** Anyone may connect: the broker runs without `auth`. */
export const anonymousAuthenticator: Authenticator = { check: () => Promise.resolve(true) };

// Comparing digests keeps the comparison constant-time whatever the lengths are.
function digest(value: string | Buffer): Buffer {
  return createHash('sha256').update(value).digest();
}

/** Users listed in the config; anonymous clients and unknown users are refused. */
export function configUsersAuthenticator(users: readonly BrokerUser[]): Authenticator {
  const byName = new Map(users.map((u) => [u.username, digest(u.password)]));
  const decoy = digest('');
  return {
    check(username, password) {
      if (username === undefined || password === undefined) return Promise.resolve(false);
      const expected = byName.get(username);
      // Unknown users still pay for a comparison, so timing does not reveal which names exist.
      const same = timingSafeEqual(expected ?? decoy, digest(password));
      return Promise.resolve(expected !== undefined && same);
    },
  };
}
