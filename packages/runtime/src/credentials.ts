// Who may connect to a Ferry MQTT listener: the scrypt credential file `ferry broker passwd`
// writes (one `username:scrypt$N$r$p$salt$hash` line per user, salt and hash in base64) and the
// loopback rule both the broker and the gateway's device listener follow, as Mosquitto 2 does.
import { randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';
import { FerryError } from '@ferry/protocol';

export interface PasswordEntry {
  readonly username: string;
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

/** Addresses only this host can reach: 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return bare === 'localhost' || bare === '::1' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/i.test(bare);
}

/** Parses a credential file's text; a malformed line is a config error naming its line number. */
export function parsePasswordFile(text: string, source = 'credential file'): PasswordEntry[] {
  const entries: PasswordEntry[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const parts = colon > 0 ? line.slice(colon + 1).split('$') : [];
    const [scheme, n, r, p, salt, hash] = parts;
    if (parts.length !== 6 || scheme !== 'scrypt' || !n || !r || !p || !salt || !hash) {
      throw new FerryError('FERRY_ERR_CONFIG_INVALID', `${source} line ${i + 1}: expected username:scrypt$N$r$p$salt$hash`, { line: i + 1 });
    }
    entries.push({ username: line.slice(0, colon), N: Number(n), r: Number(r), p: Number(p), salt: Buffer.from(salt, 'base64'), hash: Buffer.from(hash, 'base64') });
  });
  return entries;
}

/** scrypt cost the broker's `ferry broker passwd` uses: N=2^14, r=8, p=1 (about 16 MiB and tens of ms per check). */
export const PASSWORD_HASH_PARAMS = { N: 16384, r: 8, p: 1 } as const;

/** One line of the file for a user, with a fresh random salt: the format `ferry broker passwd add` writes. */
export function passwordFileLine(username: string, password: string, params: { N: number; r: number; p: number } = PASSWORD_HASH_PARAMS): string {
  if (username.length === 0 || username.includes(':') || /[\r\n]/.test(username)) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `username "${username}" must be non-empty, without ':' or line breaks`, { field: 'username' });
  }
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, 32, { ...params, maxmem: 256 * params.N * params.r });
  return `${username}:scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

function deriveAsync(password: string | Buffer, entry: PasswordEntry): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, entry.salt, entry.hash.length, { N: entry.N, r: entry.r, p: entry.p, maxmem: 256 * entry.N * entry.r }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

export interface PasswordCheck {
  /** Whether these credentials match an entry; never rejects. The hash runs on the thread pool. */
  check(username: string | undefined, password: Buffer | string | undefined): Promise<boolean>;
}

/** Checks credentials against the entries; unknown users pay for a hash too, so timing hides which names exist. */
export function passwordFileCheck(entries: readonly PasswordEntry[]): PasswordCheck {
  const byName = new Map(entries.map((e) => [e.username, e]));
  const params = PASSWORD_HASH_PARAMS;
  const salt = randomBytes(16);
  const decoy: PasswordEntry = { username: '', ...params, salt, hash: scryptSync(randomBytes(16), salt, 32, { ...params, maxmem: 256 * params.N * params.r }) };
  return {
    async check(username, password) {
      if (username === undefined || password === undefined) return false;
      const entry = byName.get(username);
      const against = entry ?? decoy;
      let actual: Buffer;
      try {
        actual = await deriveAsync(password, against);
      } catch {
        return false;
      }
      return entry !== undefined && actual.length === against.hash.length && timingSafeEqual(actual, against.hash);
    },
  };
}
