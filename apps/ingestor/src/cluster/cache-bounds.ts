// The local caches of the shared stores (shared-dedupe.ts by gateway, shared-device-dedupe.ts by
// scope) are only shortcuts in front of Redis: bounded per key and in total, trimmed to 7/8 of a
// bound so that trimming is not paid on every insert.

/** One key's cache: entries in insertion order, oldest first. */
export interface KeyedCache {
  readonly entries: Map<unknown, unknown>;
  /** Prefetches under way: the cache is not dropped for the total bound meanwhile. */
  readonly pending: number;
}

/**
 * Trims `current` to its bound, then drops whole caches other than `current` (and those with a
 * prefetch under way), least recently inserted first, until the total is back under its bound.
 * Returns the entries held in all after trimming.
 */
export function trimCaches<C extends KeyedCache>(caches: Map<string, C>, current: C, perKey: number, total: number, held: number): number {
  if (current.entries.size > perKey) {
    let excess = current.entries.size - Math.floor((perKey * 7) / 8);
    for (const key of current.entries.keys()) {
      if (excess-- <= 0) break;
      current.entries.delete(key);
      held--;
    }
  }
  if (held <= total) return held;
  for (const [key, cache] of caches) {
    if (held <= Math.floor((total * 7) / 8)) break;
    if (cache === current || cache.pending > 0) continue;
    caches.delete(key);
    held -= cache.entries.size;
  }
  return held;
}
