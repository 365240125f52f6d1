// V8's heap policy for a gateway under a plain `node`, applied by `ferry gateway` before it loads the
// gateway's modules (and again, doing nothing more, by applyGatewayFootprint). No imports but node's.
//
// Under a burst of publishes a plain `node` lets the young generation grow to
// 2 x 16 MB and the old one well past what it holds (peaks of 120-190 MB RSS). A gateway started
// with no heap flags of its own takes a policy near the Pi unit's here, from the moment it is
// applied (V8 reads these flags at each collection, but its largest young generation only at
// start-up): the young generation may grow to 4 MiB semi-spaces and no further, the old one may
// grow by 30% of what it holds before it is collected, and the young generation that grew while
// anything before it loaded is given back at the first collections. 4 MiB rather than the Pi unit's 1:
// each young collection copies (and promotes) the readings waiting for the group commit's fsync,
// and with four times the room half as many run (about 140 against 275-440 in a burst of 100,000
// publishes), so fewer of those readings are copied. In `bench/run.mjs pipeline` that took about a sixth off
// the gateway's CPU per reading (445 against 538 ms per 10,000), for about 1 MB more at the peak of
// `bench/run.mjs gateway`'s burst (88.9-92.6 against 89.8-91.2 MB) and the same idle RSS
// (docs/raspberry-pi.md, "Footprint").
// Giving back takes collections V8 runs to reduce memory, which it does under --optimize-for-size;
// that flag also costs about 60% more CPU per publish, so it is on only until the young generation
// is back within its bound. Heap flags given to node (the Pi unit's, or any in NODE_OPTIONS) are
// left as they are.
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { measureMemory } from 'node:vm';

/** The young generation grows no more (boundYoungGeneration lets it, up to its bound); the old one is collected once it has grown by 30%. */
export const GATEWAY_HEAP_FLAGS = ['--semi-space-growth-factor=1', '--heap-growing-percent=30'] as const;

/** The most the young generation may grow to under a plain `node`: two 4 MiB semi-spaces. */
export const GATEWAY_YOUNG_BYTES = 2 * 4 * 1024 * 1024;

/** V8 heap flags a process was started with (node's arguments or NODE_OPTIONS): its own policy, left as it is. */
const HEAP_POLICY_FLAG = /--(no-)?(optimize[-_]for[-_]size|max[-_]semi[-_]space[-_]size|min[-_]semi[-_]space[-_]size|semi[-_]space[-_]growth[-_]factor|heap[-_]growing[-_]percent)\b/;

/** Whether node was started with a young-generation or size policy of its own (the Pi unit is). */
export function hasOwnHeapPolicy(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env['NODE_OPTIONS'] ?? ''): boolean {
  return execArgv.some((arg) => HEAP_POLICY_FLAG.test(arg)) || HEAP_POLICY_FLAG.test(nodeOptions);
}

/**
 * The semi-space growth factor for a young generation of `youngBytes`: V8's own doubling below the
 * bound, none at or above it. A growth doubles from a power of two, so it lands on the bound.
 */
export function youngGrowthFactor(youngBytes: number): 1 | 2 {
  return youngBytes < GATEWAY_YOUNG_BYTES ? 2 : 1;
}

let applied = false;

/** Takes the gateway's heap policy unless node was given one; once per process (later calls do nothing). */
export function applyGatewayHeapPolicy(): void {
  if (applied) return;
  applied = true;
  if (hasOwnHeapPolicy()) return;
  // One flag a call: several in one string were not all taken (seen with --optimize-for-size first).
  for (const flag of GATEWAY_HEAP_FLAGS) setFlagsFromString(flag);
  boundYoungGeneration();
  giveBackYoungGeneration();
}

function youngBytes(): number {
  return getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
}

/**
 * V8 takes its largest young generation (--max-semi-space-size) only at start-up, so the bound is
 * kept after each collection instead: growth on below it, off at it. V8 also shrinks the young
 * generation when allocation slows down (a gateway at rest), and it may grow again at the next burst.
 * A young generation grows only after collections have copied as much as it holds, so it does not
 * double twice between a collection and the next turn of the event loop, where this runs.
 */
function boundYoungGeneration(): void {
  let factor = 1;
  const keepBound = (): void => {
    const wanted = youngGrowthFactor(youngBytes());
    if (wanted === factor) return;
    factor = wanted;
    setFlagsFromString(`--semi-space-growth-factor=${factor}`);
  };
  keepBound();
  new PerformanceObserver(keepBound).observe({ entryTypes: ['gc'] });
}

/**
 * Collections that reduce memory until the young generation is back within its bound, starting
 * with one now (vm.measureMemory's). Measured under a burst of 100,000 publishes right after the
 * start: a peak of 88-93 MB RSS with it, 98-110 MB without.
 */
function giveBackYoungGeneration(): void {
  if (youngBytes() <= GATEWAY_YOUNG_BYTES) return;
  setFlagsFromString('--optimize-for-size');
  const timer = setInterval(() => {
    if (youngBytes() > GATEWAY_YOUNG_BYTES) return;
    setFlagsFromString('--no-optimize-for-size');
    clearInterval(timer);
  }, 250);
  timer.unref();
  // vm.measureMemory is marked experimental and says so once on stderr: not a thing an operator should read at every start.
  const emitWarning: unknown = Reflect.get(process, 'emitWarning');
  Reflect.set(process, 'emitWarning', () => undefined);
  try {
    measureMemory({ mode: 'summary', execution: 'eager' }).catch(() => undefined);
  } catch {
    // Without it the first collection the old generation needs comes later.
  } finally {
    Reflect.set(process, 'emitWarning', emitWarning);
  }
}
