// The credential file: one `username:scrypt$N$r$p$salt$hash` line per user (salt and hash in
// base64), managed by `ferry broker passwd`. Passwords are never stored, only per-user salted
// scrypt hashes, compared in constant time.
import { readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { FerryError } from '@ferry/protocol';
import { parsePasswordFile, passwordFileCheck, passwordFileLine, PASSWORD_HASH_PARAMS } from '@ferry/runtime';
import type { PasswordEntry } from '@ferry/runtime';
import type { Authenticator } from './auth.js';

/** One user's line: the format, the parser and the check live in @ferry/runtime (the gateway's device listener reads the same files). */
export type CredentialEntry = PasswordEntry;

/** A new entry with a fresh random salt. */
export function hashPassword(username: string, password: string, params: { N: number; r: number; p: number } = PASSWORD_HASH_PARAMS): CredentialEntry {
  if (password.length === 0) throw new FerryError('FERRY_ERR_CONFIG_INVALID', 'password must not be empty', { field: 'password' });
  const [entry] = parsePasswordFile(passwordFileLine(username, password, params));
  if (!entry) throw new FerryError('FERRY_ERR_CONFIG_INVALID', `username "${username}" gives no credential line`, { field: 'username' });
  return entry;
}

export function formatCredentialLine(entry: CredentialEntry): string {
  return `${entry.username}:scrypt$${entry.N}$${entry.r}$${entry.p}$${entry.salt.toString('base64')}$${entry.hash.toString('base64')}`;
}

/** Parses the file's text; a malformed line is a config error naming its line number. */
export function parseCredentialFile(text: string, source = 'credential file'): CredentialEntry[] {
  return parsePasswordFile(text, source);
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
  return passwordFileCheck(entries);
}
