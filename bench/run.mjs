#!/usr/bin/env node
// `pnpm bench <name> [flags]`: runs bench/<name>.mjs with the flags. Each benchmark prints its
// progress to stderr and, as its last stdout line, one JSON object.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith('.mjs') && f !== 'run.mjs')
  .map((f) => f.slice(0, -'.mjs'.length))
  .sort();

const [name, ...args] = process.argv.slice(2);
if (name === undefined || name === '--help' || name === '-h' || !available.includes(name)) {
  process.stderr.write(`usage: pnpm bench <${available.join('|')}> [flags]\n`);
  if (name !== undefined && name !== '--help' && name !== '-h') process.stderr.write(`unknown benchmark: ${name}\n`);
  process.exit(name === undefined || name === '--help' || name === '-h' ? 0 : 2);
}

const built = fileURLToPath(new URL('../apps/ferry/dist/main.js', import.meta.url));
if (!existsSync(built)) {
  process.stderr.write('the workspace is not built: run `npm run build` (tsc -b) first\n');
  process.exit(2);
}

const child = spawn(process.execPath, [fileURLToPath(new URL(`./${name}.mjs`, import.meta.url)), ...args], { stdio: 'inherit' });
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
