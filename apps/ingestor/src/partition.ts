// Static partitioning for brokers without MQTT 5 shared subscriptions: each of `count` ingestors
// keeps the sources whose id hashes to its `index`. Pure; the hash is stable across processes and
// versions (FNV-1a over UTF-8), so a restart never moves a gateway to another ingestor.
export interface Partition {
  readonly index: number;
  readonly count: number;
}

/** FNV-1a, 32 bits, over the UTF-8 bytes of `id`. */
export function partitionHash(id: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(id, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Whether this ingestor takes `id` (a gateway id, or a direct device id); always true without a partition. */
export function ownsSource(partition: Partition | undefined, id: string): boolean {
  return partition === undefined || partition.count === 1 || partitionHash(id) % partition.count === partition.index;
}
