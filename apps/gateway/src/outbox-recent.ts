// The outbox's newest committed rows, kept in memory so that the sender, which usually asks for
// exactly the rows just committed, is handed them without reading back what was just written.
// Only while the sender keeps up: rows held for long would only cost the collector (they outlive
// young-generation collections), so past its bound it stops holding rows until a read catches up.
// A pure structure: the SQLite outbox tells it what it committed and what it removed.

/** A row as the outbox hands it out: seq, stored size and stored JSON. */
export interface RecentRow {
  readonly seq: number;
  readonly bytes: number;
  readonly json: string;
}

/** Makes the row to hold for one just committed: its seq, stored size and stored JSON. */
export type RowOf<T extends RecentRow> = (seq: number, bytes: number, json: string) => T;

/**
 * Invariant: every row stored in the outbox with a seq above `floor` is held here, as stored, and
 * nothing else is. So a read whose cursor is at or above the floor can be served from memory
 * alone; below it, the file must be read (up to the floor). Whatever may change or remove rows
 * moves the floor up past them, which only ever sends more reads to the file.
 */
export class RecentRows<T extends RecentRow = RecentRow> {
  private rows: T[] = [];
  /** Index of the oldest row held in `rows` (those before it are forgotten, removed lazily). */
  private head = 0;
  private heldBytes = 0;
  private floorSeq: number;
  /** Set when the bound was reached unread; cleared when a read reaches the floor. */
  private paused = false;

  /**
   * @param floor the newest seq the file holds (or ever gave out) when this starts: nothing above it exists yet.
   * @param maxRows rows held at most: past it, all are forgotten and none held until a read catches up.
   * @param maxBytes stored bytes held at most (payload sizes), likewise.
   * @param rowOf makes a row, for the rows held only (none while paused).
   */
  constructor(
    floor: number,
    private readonly maxRows: number,
    private readonly maxBytes: number,
    private readonly rowOf: RowOf<T>,
  ) {
    this.floorSeq = floor;
  }

  /** Rows with a seq above this are all held here. */
  get floor(): number {
    return this.floorSeq;
  }

  get size(): number {
    return this.rows.length - this.head;
  }

  /** False while it holds no rows because the last were never read (see committed()). */
  get holding(): boolean {
    return !this.paused;
  }

  /**
   * Rows just committed, in seq order, each above every seq the outbox gave out before: their
   * seqs, stored sizes and stored JSON, one entry each.
   */
  committed(seqs: readonly number[], sizes: readonly number[], jsons: readonly string[]): void {
    const last = seqs[seqs.length - 1];
    if (last === undefined) return;
    if (this.paused) {
      this.forgetUpTo(last);
      return;
    }
    for (let i = 0; i < seqs.length; i += 1) {
      const seq = seqs[i]!;
      // A row at or below the floor (rewritten by the commit that stored it) is the file's to serve.
      if (seq <= this.floorSeq) continue;
      const bytes = sizes[i]!;
      this.rows.push(this.rowOf(seq, bytes, jsons[i]!));
      this.heldBytes += bytes;
    }
    if (this.size > this.maxRows || this.heldBytes > this.maxBytes) {
      // Nobody is reading them (the uplink is down, or the sender is behind): the file serves.
      this.paused = true;
      this.forgetUpTo(last);
    }
  }

  /** Rows at or below `seq` may have been removed or rewritten: they are read from the file from now on. */
  forgetUpTo(seq: number): void {
    if (seq <= this.floorSeq) return;
    this.floorSeq = seq;
    while (this.size > 0 && this.rows[this.head]!.seq <= seq) this.dropOldest();
    this.compactStorage();
  }

  /**
   * Up to `limit` held rows with a seq above `after` and at most `upTo`, oldest first. Only
   * meaningful when `after >= floor`: the reader has caught up, so rows are held again.
   */
  page(after: number, upTo: number, limit: number): T[] {
    this.paused = false;
    const out: T[] = [];
    for (let i = this.firstAbove(after); i < this.rows.length && out.length < limit; i += 1) {
      const row = this.rows[i]!;
      if (row.seq > upTo) break;
      out.push(row);
    }
    return out;
  }

  private firstAbove(after: number): number {
    let lo = this.head;
    let hi = this.rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.rows[mid]!.seq <= after) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private dropOldest(): void {
    this.heldBytes -= this.rows[this.head]!.bytes;
    this.head += 1;
  }

  /** Drops forgotten slots once they are most of the array, so pushes stay amortised O(1). */
  private compactStorage(): void {
    if (this.head === this.rows.length) {
      this.rows = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.rows.length) {
      this.rows = this.rows.slice(this.head);
      this.head = 0;
    }
  }
}
