// Process-wide memory settings for a gateway on a small device, applied once by the process that
// runs it (`ferry gateway`), before any MQTT packet is written.
//
// mqtt-packet (under both aedes and MQTT.js) keeps, by default, a ready-made 2-byte Buffer for each
// of the 65,536 packet ids and lengths it may write: about 6.5 MB of heap on the gateway, over 6% of
// a Pi gateway's whole footprint, to save allocating two bytes per packet. Writing the numbers as
// needed costs nothing measurable at a gateway's rates.
//
// V8's heap policy: under a burst of publishes a plain `node` lets the young generation grow to
// 2 x 16 MB and the old one well past what it holds (peaks of 120-190 MB RSS). A gateway started
// with no heap flags of its own takes a policy near the Pi unit's here, from the moment it is
// applied (V8 reads these flags at each collection): the young generation grows no more, the old
// one may grow by 30% of what it holds before it is collected, and the young generation that grew
// while the modules loaded is given back at the first collections. Giving it back takes
// collections V8 runs to reduce memory, which it does under --optimize-for-size; that flag also
// costs about 60% more CPU per publish (bench/README.md, gateway), so it is on only until the
// young generation is back to its first size. Heap flags given to node (the Pi unit's, or any in
// NODE_OPTIONS) are left as they are.
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { measureMemory } from 'node:vm';
import { writeToStream } from 'mqtt-packet';

/** The young generation grows no more; the old one is collected once it has grown by 30%. */
export const GATEWAY_HEAP_FLAGS = ['--semi-space-growth-factor=1', '--heap-growing-percent=30'] as const;

/** The young generation (two semi-spaces) a node process starts with: 1 MiB each. */
const FIRST_YOUNG_BYTES = 2 * 1024 * 1024;

/** V8 heap flags a process was started with (node's arguments or NODE_OPTIONS): its own policy, left as it is. */
const HEAP_POLICY_FLAG = /--(no-)?(optimize[-_]for[-_]size|max[-_]semi[-_]space[-_]size|min[-_]semi[-_]space[-_]size|semi[-_]space[-_]growth[-_]factor|heap[-_]growing[-_]percent)\b/;

/** Whether node was started with a young-generation or size policy of its own (the Pi unit is). */
export function hasOwnHeapPolicy(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env['NODE_OPTIONS'] ?? ''): boolean {
  return execArgv.some((arg) => HEAP_POLICY_FLAG.test(arg)) || HEAP_POLICY_FLAG.test(nodeOptions);
}

export function applyGatewayFootprint(): void {
  writeToStream.cacheNumbers = false;
  if (hasOwnHeapPolicy()) return;
  // One flag a call: several in one string were not all taken (seen with --optimize-for-size first).
  for (const flag of GATEWAY_HEAP_FLAGS) setFlagsFromString(flag);
  giveBackYoungGeneration();
}

function youngBytes(): number {
  return getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
}

/**
 * Collections that reduce memory until the young generation is back to its first size, starting
 * with one now (vm.measureMemory's). Measured under a burst of 100,000 publishes right after the
 * start: a peak of 88-93 MB RSS with it, 98-110 MB without.
 */
function giveBackYoungGeneration(): void {
  if (youngBytes() <= FIRST_YOUNG_BYTES) return;
  setFlagsFromString('--optimize-for-size');
  const timer = setInterval(() => {
    if (youngBytes() > FIRST_YOUNG_BYTES) return;
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
