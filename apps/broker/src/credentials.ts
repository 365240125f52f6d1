// The credential file: one `username:scrypt$N$r$p$salt$hash` line per user (salt and hash in
// base64), managed by `ferry broker passwd`. Passwords are never stored, only per-user salted
// scrypt hashes, compared in constant time.
import { randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { FerryError } from '@ferry/protocol';
import type { Authenticator } from './auth.js';

/** scrypt cost: N=2^14, r=8, p=1 (about 16 MiB and tens of ms per check), OWASP's floor. */
const DEFAULT_PARAMS = { N: 16384, r: 8, p: 1 } as const;
const KEY_LENGTH = 32;
const SALT_LENGTH = 16;

export interface CredentialEntry {
  readonly username: string;
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

function derive(password: string | Buffer, salt: Buffer, params: { N: number; r: number; p: number }): Buffer {
  return scryptSync(password, salt, KEY_LENGTH, { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r });
}

/** derive() on the thread pool: the broker's event loop keeps serving while a CONNECT is checked. */
function deriveAsync(password: string | Buffer, salt: Buffer, params: { N: number; r: number; p: number }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, KEY_LENGTH, { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** A new entry with a fresh random salt. */
export function hashPassword(username: string, password: string, params: { N: number; r: number; p: number } = DEFAULT_PARAMS): CredentialEntry {
  if (username.length === 0 || username.includes(':') || /[\r\n]/.test(username)) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `username "${username}" must be non-empty, without ':' or line breaks`, { field: 'username' });
  }
  if (password.length === 0) throw new FerryError('FERRY_ERR_CONFIG_INVALID', 'password must not be empty', { field: 'password' });
  const salt = randomBytes(SALT_LENGTH);
  return { username, ...params, salt, hash: derive(password, salt, params) };
}

export function formatCredentialLine(entry: CredentialEntry): string {
  return `${entry.username}:scrypt$${entry.N}$${entry.r}$${entry.p}$${entry.salt.toString('base64')}$${entry.hash.toString('base64')}`;
}

/** Parses the file's text; a malformed line is a config error naming its line number. */
export function parseCredentialFile(text: string, source = 'credential file'): CredentialEntry[] {
  const entries: CredentialEntry[] = [];
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

export function readCredentialFile(path: string): CredentialEntry[] {
  if (!existsSync(path)) return [];
  return parseCredentialFile(readFileSync(path, 'utf8'), path);
}

/** Writes all entries through a temp file and rename, so a crash never leaves half a file. */
export function writeCredentialFile(path: string, entries: readonly CredentialEntry[]): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, entries.map((e) => `${formatCredentialLine(e)}\n`).join(''), { mode: 0o600 });
  renameSync(tmp, path);
}

/** Adds the user, or replaces their password. */
export function addCredential(path: string, username: string, password: string): void {
  const entry = hashPassword(username, password);
  const rest = readCredentialFile(path).filter((e) => e.username !== username);
  writeCredentialFile(path, [...rest, entry]);
}

/** Removes the user; false when there was none. */
export function removeCredential(path: string, username: string): boolean {
  const entries = readCredentialFile(path);
  const rest = entries.filter((e) => e.username !== username);
  if (rest.length === entries.length) return false;
  writeCredentialFile(path, rest);
  return true;
}

export function listCredentials(path: string): string[] {
  return readCredentialFile(path).map((e) => e.username);
}

/** Checks CONNECT credentials against the entries; unknown users pay for a hash too. */
export function credentialFileAuthenticator(entries: readonly CredentialEntry[]): Authenticator {
  const byName = new Map(entries.map((e) => [e.username, e]));
  const decoy = hashPassword('decoy', randomBytes(16).toString('hex'));
  return {
    async check(username, password) {
      if (username === undefined || password === undefined) return false;
      const entry = byName.get(username);
      const against = entry ?? decoy;
      let actual: Buffer;
      try {
        actual = await deriveAsync(password, against.salt, against);
      } catch {
        return false;
      }
      const same = actual.length === against.hash.length && timingSafeEqual(actual, against.hash);
      return entry !== undefined && same;
    },
  };
}
