// Disposable directories for server data and test files.

import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A new empty directory under the OS temp dir, named `ferry-<prefix>-XXXXXX`. */
export function makeTempDir(prefix: string): Promise<string> {
  const safe = prefix.replace(/[^A-Za-z0-9_.-]/g, '-');
  return mkdtemp(join(tmpdir(), `ferry-${safe}-`));
}
