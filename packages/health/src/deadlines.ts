// A keyed min-heap of deadlines: each key has at most one live due time, so evaluating the fleet
// costs what is due now, not the fleet's size. Rescheduling leaves the old entry behind to be
// skipped when popped (lazy deletion); the heap is compacted when stale entries pile up. Equal due
// times are ordered by key, so what is due together comes out in one order whatever the history of
// the heap (a chunk's readings taken at once leave the same model as taken one by one).

interface Entry {
  readonly at: number;
  readonly key: string;
}

/** Earlier due time first; among equal ones, the smaller key. */
function before(a: Entry, b: Entry): boolean {
  return a.at < b.at || (a.at === b.at && a.key < b.key);
}

export class DeadlineQueue {
  private heap: Entry[] = [];
  private readonly due = new Map<string, number>();

  get size(): number {
    return this.due.size;
  }

  /** Sets (or moves) the key's deadline. */
  schedule(key: string, at: number): void {
    if (this.due.get(key) === at) return;
    this.due.set(key, at);
    this.push({ at, key });
    if (this.heap.length > 2 * this.due.size + 1024) this.compact();
  }

  cancel(key: string): void {
    this.due.delete(key);
  }

  dueAt(key: string): number | undefined {
    return this.due.get(key);
  }

  /** The earliest live deadline, if any. */
  peek(): number | undefined {
    this.dropStale();
    return this.heap[0]?.at;
  }

  /** Removes and returns the keys due at or before `now`, earliest first. */
  popDue(now: number): string[] {
    const keys: string[] = [];
    for (;;) {
      this.dropStale();
      const top = this.heap[0];
      if (!top || top.at > now) return keys;
      this.pop();
      this.due.delete(top.key);
      keys.push(top.key);
    }
  }

  private dropStale(): void {
    for (;;) {
      const top = this.heap[0];
      if (!top || this.due.get(top.key) === top.at) return;
      this.pop();
    }
  }

  private compact(): void {
    this.heap = [...this.due].map(([key, at]) => ({ key, at }));
    for (let i = (this.heap.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  private push(entry: Entry): void {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent] as Entry;
      if (!before(entry, p)) break;
      heap[i] = p;
      i = parent;
    }
    heap[i] = entry;
  }

  private pop(): void {
    const last = this.heap.pop();
    if (last && this.heap.length > 0) {
      this.heap[0] = last;
      this.down(0);
    }
  }

  private down(start: number): void {
    const heap = this.heap;
    const n = heap.length;
    const entry = heap[start] as Entry;
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const child = r < n && before(heap[r] as Entry, heap[l] as Entry) ? r : l;
      const c = heap[child] as Entry;
      if (!before(c, entry)) break;
      heap[i] = c;
      i = child;
    }
    heap[i] = entry;
  }
}
