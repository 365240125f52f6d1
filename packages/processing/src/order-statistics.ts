// Medians and percentiles over sorted arrays, shared by the Hampel and median filters and the
// rollup percentiles.

/** The values sorted ascending, numerically (Array#sort would compare them as strings). */
export function sortedCopy(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values).sort();
}

/** Median of a sorted, non-empty array: the mean of the two middle values when the length is even. */
export function medianOfSorted(sorted: ArrayLike<number>): number {
  const n = sorted.length;
  const mid = n >> 1;
  return n % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Nearest-rank percentile of a sorted, non-empty array: the smallest value with at least p% of
 * the values at or below it. Always an observed value, never an interpolation.
 */
export function percentileOfSorted(sorted: ArrayLike<number>, p: number): number {
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

/**
 * Sorts in place, ascending. Filter windows are small (5 to 15 values), where an insertion sort
 * beats the built-in sort several times over; larger arrays use the built-in one.
 */
export function sortSmall(a: Float64Array): Float64Array {
  if (a.length > 32) return a.sort();
  for (let i = 1; i < a.length; i++) {
    const v = a[i]!;
    let j = i - 1;
    while (j >= 0 && a[j]! > v) {
      a[j + 1] = a[j]!;
      j--;
    }
    a[j + 1] = v;
  }
  return a;
}
