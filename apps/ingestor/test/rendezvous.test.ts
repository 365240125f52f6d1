import { describe, expect, it } from 'vitest';
import { preferredOwner, rendezvousWeight } from '../src/cluster/rendezvous.js';

const SOURCES = Array.from({ length: 10_000 }, (_, i) => `gw-${i}`);
const MEMBERS = ['ingestor-a', 'ingestor-b', 'ingestor-c'];

function owners(members: readonly string[]): Map<string, string | undefined> {
  return new Map(SOURCES.map((s) => [s, preferredOwner(s, members)]));
}

describe('preferredOwner', () => {
  it('shares 10k sources roughly evenly among 3 members', () => {
    const counts = new Map<string, number>();
    for (const owner of owners(MEMBERS).values()) counts.set(owner!, (counts.get(owner!) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual(MEMBERS);
    // Expected 3333 each, binomial sd ~47: within 10% is about 7 sd.
    for (const count of counts.values()) expect(Math.abs(count - SOURCES.length / 3)).toBeLessThan(SOURCES.length / 30);
  });

  it('moves only the sources of a member that leaves', () => {
    const before = owners(MEMBERS);
    const after = owners(['ingestor-a', 'ingestor-c']);
    const moved = SOURCES.filter((s) => after.get(s) !== before.get(s));
    expect(moved.length).toBeGreaterThan(0);
    expect(moved.filter((s) => before.get(s) !== 'ingestor-b')).toEqual([]);
    expect(SOURCES.filter((s) => after.get(s) === 'ingestor-b')).toEqual([]);
  });

  it('gives a joining member only sources it now wins, taken from the others', () => {
    const before = owners(MEMBERS);
    const after = owners([...MEMBERS, 'ingestor-d']);
    const moved = SOURCES.filter((s) => after.get(s) !== before.get(s));
    expect(moved.length).toBeGreaterThan(0);
    expect(moved.filter((s) => after.get(s) !== 'ingestor-d')).toEqual([]);
  });

  it('answers the same whatever the order of the member list, on every call', () => {
    const reversed = owners([...MEMBERS].reverse());
    const again = owners(MEMBERS);
    expect(reversed).toEqual(again);
    // Pinned values (FNV-1a 32 then murmur3 fmix32, computed outside this code): every ingestor,
    // on any version of Node, must compute exactly these, or two could prefer different owners.
    expect(MEMBERS.map((m) => rendezvousWeight(m, 'gw-0'))).toEqual([1408683754, 1150807653, 3890241914]);
    expect(SOURCES.slice(0, 5).map((s) => preferredOwner(s, MEMBERS))).toEqual(['ingestor-c', 'ingestor-a', 'ingestor-b', 'ingestor-c', 'ingestor-c']);
  });

  it('keeps the member and source apart in the hash', () => {
    expect(rendezvousWeight('ab', 'c')).not.toBe(rendezvousWeight('a', 'bc'));
  });

  it('has no owner without members and the only one with one', () => {
    expect(preferredOwner('gw-1', [])).toBeUndefined();
    expect(preferredOwner('gw-1', ['solo'])).toBe('solo');
  });
});
