// `ferry status --watch`: the built CLI against a real ingestor (and Mosquitto), stdout piped (not
// a terminal): a frame per interval, each after a `--- time ---` line; an ingestor that goes away is
// a frame saying so, not the end; Ctrl-C (SIGINT) ends it with exit code 0.
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@ferry/runtime';
import { createIngestor } from '@ferry/ingestor';
import { makeTempDir, startMosquitto, waitFor } from '@ferry/testkit';
import type { ServerHandle } from '@ferry/testkit';
import { buildCli, killAll, startCli } from './cli-process.js';
import type { Running } from './cli-process.js';

let broker: ServerHandle;
const running: Running[] = [];
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  await buildCli();
  broker = await startMosquitto();
});

afterEach(async () => {
  await killAll(running);
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  await broker?.stop();
});

const FRAME = /^--- \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ---$/;

describe('ferry status --watch', () => {
  it('prints a frame per interval when piped, says when the ingestor stops answering, and exits 0 on Ctrl-C', async () => {
    const dir = await makeTempDir('status-watch');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const ingestor = createIngestor({ ingestorId: 'ing-watch', dataDir: dir, broker: { url: broker.url }, logLevel: 'silent', http: { host: '127.0.0.1', port: 0 } }, { logger: silentLogger() });
    let closed = false;
    cleanups.push(async () => {
      if (!closed) await ingestor.close();
    });
    await ingestor.ready();

    const watch = startCli(['status', '--watch', '--interval', '300ms', '--ingestor', ingestor.httpUrl!]);
    running.push(watch);
    await waitFor(() => watch.lines.filter((l) => FRAME.test(l)).length >= 3, { timeoutMs: 30_000, what: 'three frames' });
    // Each frame is the whole report: its separator line, then the ingestor line.
    const lines = watch.lines.slice();
    const starts = lines.flatMap((l, i) => (FRAME.test(l) ? [i] : []));
    for (const i of starts.slice(0, 3)) expect(lines[i + 1]).toMatch(/^ingestor ing-watch: /);
    // No terminal: no escape codes.
    expect(lines.join('\n')).not.toContain('\u001b[');

    await ingestor.close();
    closed = true;
    await watch.waitForLine(/not answering/, 30_000);
    expect(watch.child.exitCode).toBeNull();

    watch.child.kill('SIGINT');
    const result = await watch.exited;
    expect(result.code, result.stderr).toBe(0);
  });

  it('refuses an interval that is not a duration, as bad usage', async () => {
    const watch = startCli(['status', '--watch', '--interval', 'often', '--ingestor', 'http://127.0.0.1:9']);
    running.push(watch);
    const result = await watch.exited;
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('interval');
  });
});
