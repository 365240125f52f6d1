// What the benches that run real child processes share: waiting for a condition, a log's tail for
// an error message, and a process's CPU time.
import { readFileSync } from 'node:fs';

/** Clock ticks of /proc/<pid>/stat, in ms (USER_HZ 100 on Linux). */
export const TICK_MS = 10;

export const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The last 3,000 characters of a log file, or '' when it is not there. */
export function tail(file) {
  try {
    return readFileSync(file, 'utf8').slice(-3000);
  } catch {
    return '';
  }
}

/** Polls `probe` until it returns something truthy; a probe error whose message says `exited` ends the wait. */
export async function waitUntil(probe, what, timeoutMs = 60_000, intervalMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      if (err instanceof Error && err.message.includes('exited')) throw err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await pause(intervalMs);
  }
}

/** CPU time (user + system, ms) of a process so far, from /proc/<pid>/stat; undefined once it is gone. */
export function cpuMsOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  } catch {
    return undefined;
  }
}
