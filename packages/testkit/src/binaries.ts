// Locates the real server binaries the harness runs. A missing one is an error, never a
// skip: a test that silently skips its real-server half proves nothing.

import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { FerryError } from '@ferry/protocol';

// Debian puts mosquitto in /usr/sbin, which a non-root PATH often lacks.
const EXTRA_DIRS = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/sbin', '/bin'];

/** Absolute path of an executable found in PATH or the usual system dirs. */
export function findBinary(name: string): string {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter).filter((d) => d !== ''), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  throw new FerryError(
    'FERRY_ERR_SERVER_MISSING',
    `${name} is not installed (looked in PATH and ${EXTRA_DIRS.join(', ')}); run \`node scripts/setup.mjs --servers\` to install the test servers`,
    { binary: name, searched: [...new Set(dirs)] },
  );
}

/** Like findBinary, but undefined when the binary is absent (for optional helpers). */
export function findOptionalBinary(name: string): string | undefined {
  try {
    return findBinary(name);
  } catch {
    return undefined;
  }
}
