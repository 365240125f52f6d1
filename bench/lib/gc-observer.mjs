// Loaded into the benchmarked ingestor with `node --import` (bench/ingestor.mjs): sums the
// garbage collector's pauses on the main thread, by kind, and writes the totals to
// $BENCH_GC_FILE whenever the process gets SIGUSR2, so the bench can take a before and an after.
import { writeFileSync } from 'node:fs';
import { PerformanceObserver, constants } from 'node:perf_hooks';

const file = process.env.BENCH_GC_FILE;
if (file) {
  const KINDS = {
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
  };
  const totals = { ms: 0, count: 0, byKind: {} };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      totals.ms += entry.duration;
      totals.count++;
      const kind = KINDS[entry.detail?.kind] ?? 'other';
      totals.byKind[kind] = (totals.byKind[kind] ?? 0) + entry.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  let asked = 0;
  process.on('SIGUSR2', () => writeFileSync(file, JSON.stringify({ asked: ++asked, ...totals })));
}
