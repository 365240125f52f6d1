#!/usr/bin/env node
// The `ferry` command: runs the compiled CLI (build with `pnpm build`).
import('../dist/main.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('ferry: not built yet; run `npm run setup` (or `pnpm build`) from the repository root\n');
    process.exit(1);
  }
  throw err;
});
