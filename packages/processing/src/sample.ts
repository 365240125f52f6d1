// The unit every operator works on: one numeric sample of one series (device + metric), and
// the tally of what each operator removed or changed, so nothing disappears silently.
import type { z } from 'zod';
import type { tsSourceSchema } from '@ferry/protocol';

/** Matches @ferry/runtime's Clock; kept structural so this package needs no runtime dependency. */
export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
}

export interface Sample {
  /** Epoch milliseconds. */
  readonly ts: number;
  readonly value: number;
  /** Where `ts` came from; only device time is corrected for clock skew. */
  readonly source?: z.infer<typeof tsSourceSchema>;
  /** Reasons this value was changed or is suspect, e.g. `range_clamped`; become reading flags. */
  readonly flags?: readonly string[];
}

/** What an operator returns for a sample it takes out of the stream. */
export interface Removed {
  readonly removed: string;
}

export type StepResult = Sample | Removed;

export function isRemoved(result: StepResult): result is Removed {
  return (result as Partial<Removed>).removed !== undefined;
}

const removals = new Map<string, Removed>();
/** One frozen object per reason: removing a sample allocates nothing on the hot path. */
export function removed(reason: string): Removed {
  let r = removals.get(reason);
  if (!r) {
    r = Object.freeze({ removed: reason });
    removals.set(reason, r);
  }
  return r;
}

/** Counts by reason for one operator kind; shared by all series the operator runs on. */
export class ReasonCounts {
  readonly #counts = new Map<string, number>();

  add(reason: string, n = 1): void {
    this.#counts.set(reason, (this.#counts.get(reason) ?? 0) + n);
  }

  get(reason: string): number {
    return this.#counts.get(reason) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.#counts);
  }
}

/** A copy of `sample` with a new value, carrying `flag` when the step writes flags. */
export function withValue(sample: Sample, value: number, flag: string | undefined): Sample {
  return copySample(sample, sample.ts, value, flag);
}

/** A copy of `sample` with a new timestamp. */
export function withTs(sample: Sample, ts: number, flag: string | undefined): Sample {
  return copySample(sample, ts, sample.value, flag);
}

function copySample(sample: Sample, ts: number, value: number, flag: string | undefined): Sample {
  const out: { ts: number; value: number; source?: NonNullable<Sample['source']>; flags?: readonly string[] } = { ts, value };
  if (sample.source !== undefined) out.source = sample.source;
  const flags = flag === undefined ? sample.flags : [...(sample.flags ?? []), flag];
  if (flags !== undefined) out.flags = flags;
  return out;
}

/** Operators that take one sample and give back at most one. */
export interface SeriesOperator {
  push(sample: Sample): StepResult;
  /**
   * The operator's state as plain JSON (finite numbers, arrays, objects, null), so a restart can
   * resume the series where it stopped; absent on operators that keep none.
   */
  saveState?(): unknown;
  /** Takes back what saveState() returned. Throws on anything else and then leaves the operator as it was. */
  loadState?(state: unknown): void;
}

/** Checks saved operator state: an array of finite numbers (of `length`, when given). */
export function savedNumbers(state: unknown, length?: number): number[] {
  if (!Array.isArray(state) || (length !== undefined && state.length !== length) || !state.every((v) => typeof v === 'number' && Number.isFinite(v))) {
    throw new TypeError('saved operator state does not fit this operator');
  }
  return state as number[];
}
