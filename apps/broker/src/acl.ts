// Topic access control in the spirit of Mosquitto's acl_file. Pure: parse the file's text, then
// ask whether a client (id, username) may publish to a topic or subscribe to a filter.
//
//   # comment
//   pattern write ferry/v1/gw/%c/status      applies to every client; %c = client id, %u = username
//   user ingestor-1                          the lines below apply to this username only
//   topic read ferry/v1/gw/+/batch
//   role gateway                             a built-in set of patterns (gateway, device, ingestor)
//
// Access is `read` (subscribe), `write` (publish) or `readwrite` (the default). Anything not
// granted is denied. A client whose id or username holds `+`, `#` or `/` gets no pattern grants
// from that substitution, so it cannot widen its own rights.
import { FerryError, uplinkTopics } from '@ferry/protocol';

export type Access = 'read' | 'write' | 'readwrite';

interface Grant {
  readonly access: Access;
  readonly filter: string;
  /** A pattern line: %c and %u are substituted per client. */
  readonly pattern: boolean;
}

export interface Acl {
  /** Whether this client may publish to `topic`. */
  canPublish(client: AclClient, topic: string): boolean;
  /** Whether this client may subscribe to `filter` (every topic it can match must be readable). */
  canSubscribe(client: AclClient, filter: string): boolean;
}

export interface AclClient {
  readonly clientId: string;
  readonly username: string | undefined;
}

const WILDCARD_OR_SEPARATOR = /[+#/]/;

/**
 * The roles of a Ferry deployment, as pattern lines. A gateway's or device's username is its id:
 * the broker checked the username (password or client certificate), whereas a client id is
 * whatever the client sends, so a role bound to %c would let site-1 act as site-2 by choosing
 * the client id site-2.
 */
export const ACL_ROLES: Record<string, readonly Grant[]> = {
  gateway: [
    { access: 'write', filter: uplinkTopics.batch('%u'), pattern: true },
    { access: 'write', filter: uplinkTopics.status('%u'), pattern: true },
    { access: 'read', filter: uplinkTopics.ack('%u'), pattern: true },
    // Its own dead-letter reports out, their acks and replay requests in.
    { access: 'write', filter: uplinkTopics.deadLetters('%u'), pattern: true },
    { access: 'read', filter: uplinkTopics.deadLetterControl('%u'), pattern: true },
  ],
  // A device publishes and subscribes under its own id only (username = device id).
  device: [{ access: 'readwrite', filter: 'devices/%u/#', pattern: true }],
  ingestor: [
    { access: 'read', filter: uplinkTopics.allBatches, pattern: false },
    { access: 'read', filter: uplinkTopics.allStatuses, pattern: false },
    { access: 'write', filter: uplinkTopics.ack('+'), pattern: false },
    { access: 'read', filter: uplinkTopics.allDeadLetters, pattern: false },
    { access: 'write', filter: uplinkTopics.deadLetterControl('+'), pattern: false },
  ],
};

export interface AclRules {
  /** Lines before any `user` line (Mosquitto: they apply to anonymous clients). */
  readonly anonymous: readonly Grant[];
  /** `pattern` lines outside a user section: every client. */
  readonly everyone: readonly Grant[];
  readonly byUser: ReadonlyMap<string, readonly Grant[]>;
}

function isAccess(word: string | undefined): word is Access {
  return word === 'read' || word === 'write' || word === 'readwrite';
}

export function parseAcl(text: string, source = 'acl file'): AclRules {
  const anonymous: Grant[] = [];
  const everyone: Grant[] = [];
  const byUser = new Map<string, Grant[]>();
  let current: Grant[] | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const fail = (why: string): never => {
      throw new FerryError('FERRY_ERR_CONFIG_INVALID', `${source} line ${i + 1}: ${why}`, { line: i + 1 });
    };
    const [first, ...rest] = line.split(/\s+/);
    const keyword: string = first ?? '';
    switch (keyword) {
      case 'user': {
        const name = rest.join(' ');
        if (!name) fail('user needs a name');
        current = byUser.get(name) ?? [];
        byUser.set(name, current);
        return;
      }
      case 'role': {
        const grants = ACL_ROLES[rest[0] ?? ''];
        if (!grants || rest.length !== 1) fail(`role must be one of ${Object.keys(ACL_ROLES).join(', ')}`);
        (current ?? everyone).push(...(grants ?? []));
        return;
      }
      case 'topic':
      case 'pattern': {
        const access: Access = isAccess(rest[0]) ? rest[0] : 'readwrite';
        const filter = isAccess(rest[0]) ? rest.slice(1).join(' ') : rest.join(' ');
        if (!filter) fail(`${keyword} needs a topic`);
        const grant = { access, filter, pattern: keyword === 'pattern' };
        if (keyword === 'pattern') (current ?? everyone).push(grant);
        else (current ?? anonymous).push(grant);
        return;
      }
      default:
        fail(`unknown keyword "${keyword}" (expected user, topic, pattern or role)`);
    }
  });
  return { anonymous, everyone, byUser };
}

/** Whether every topic `requested` can match is matched by `allowed` (both MQTT filters). */
export function filterCovers(allowed: string, requested: string): boolean {
  const a = allowed.split('/');
  const r = requested.split('/');
  for (let i = 0; i < a.length; i += 1) {
    const level = a[i];
    if (level === '#') return true;
    const want = r[i];
    if (want === undefined) return false;
    if (want === '#') return false;
    if (level === '+') continue;
    if (want === '+' || want !== level) return false;
  }
  return a.length === r.length;
}

function substitute(filter: string, client: AclClient): string | undefined {
  if (filter.includes('%c') && WILDCARD_OR_SEPARATOR.test(client.clientId)) return undefined;
  if (filter.includes('%u') && (client.username === undefined || WILDCARD_OR_SEPARATOR.test(client.username))) return undefined;
  return filter.replaceAll('%c', client.clientId).replaceAll('%u', client.username ?? '');
}

export function createAcl(rules: AclRules): Acl {
  function grantsFor(client: AclClient): readonly Grant[] {
    const own = client.username === undefined ? rules.anonymous : (rules.byUser.get(client.username) ?? []);
    return [...rules.everyone, ...own];
  }
  function allowed(client: AclClient, wanted: 'read' | 'write', requested: string): boolean {
    for (const grant of grantsFor(client)) {
      if (grant.access !== 'readwrite' && grant.access !== wanted) continue;
      const filter = grant.pattern ? substitute(grant.filter, client) : grant.filter;
      if (filter !== undefined && filterCovers(filter, requested)) return true;
    }
    return false;
  }
  return {
    canPublish: (client, topic) => allowed(client, 'write', topic),
    canSubscribe: (client, filter) => allowed(client, 'read', filter),
  };
}
