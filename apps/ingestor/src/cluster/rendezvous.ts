// Which live ingestor should hold a source's lease: rendezvous (highest-random-weight) hashing.
// Every member computes the same answer from the same member list with no coordination, and when
// a member leaves only the sources it was preferred for move (each to its runner-up); when one
// joins, it takes only the sources it now wins. Pure: no I/O, no clock.

/** FNV-1a 32-bit offset basis and prime. */
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** Folds the UTF-16 code units of `text` into a running FNV-1a hash. */
function fnv1a(hash: number, text: string): number {
  let h = hash;
  for (let i = 0; i < text.length; i += 1) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, FNV_PRIME);
  }
  return h;
}

/**
 * murmur3's 32-bit finalizer. FNV-1a alone spreads the last characters poorly across the high
 * bits, and ids that differ only in a trailing digit ("gw-1", "gw-2") are the common case.
 */
function fmix32(hash: number): number {
  let h = hash;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The weight of one (member, source) pair; the U+0000 separator keeps ("ab","c") apart from ("a","bc"). */
export function rendezvousWeight(member: string, source: string): number {
  return fmix32(fnv1a(fnv1a(fnv1a(FNV_OFFSET, member), '\u0000'), source));
}

/**
 * The member that should hold `source`'s lease: the one with the highest weight, ties broken by
 * the smaller member id so the answer never depends on the order of `members`. Undefined when
 * there is no member.
 */
export function preferredOwner(source: string, members: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestWeight = -1;
  for (const member of members) {
    const weight = rendezvousWeight(member, source);
    if (weight > bestWeight || (weight === bestWeight && best !== undefined && member < best)) {
      best = member;
      bestWeight = weight;
    }
  }
  return best;
}
