import type { Succeeded } from './database.ts';

/** Numbers kept per success: attempt, claim, enqueue time and start time (ms; NaN when unknown). */
const FIELDS = 4;

/**
 * A recorded batch of successes kept for a failover's resend, packed: the ids and results as
 * the strings they already are, the rest in one typed array. A worker keeps seconds of its
 * successes (hundreds of thousands in a fast drain); as objects with two Dates each they all
 * outlive the young generation, and the garbage collector's copying and marking of them cost
 * the drain about a tenth of its throughput. Unpacked only when a failover needs them.
 */
export class KeptBatch {
  readonly ids: string[];
  private readonly results: string[];
  private readonly numbers: Float64Array;

  constructor(
    readonly at: number,
    batch: readonly Succeeded[],
    readonly bytes: number,
  ) {
    const n = batch.length;
    this.ids = new Array<string>(n);
    this.results = new Array<string>(n);
    this.numbers = new Float64Array(n * FIELDS);
    for (let i = 0; i < n; i++) {
      const s = batch[i]!;
      this.ids[i] = s.id;
      this.results[i] = s.resultJson;
      const o = i * FIELDS;
      this.numbers[o] = s.attempt;
      this.numbers[o + 1] = s.claimSeq;
      this.numbers[o + 2] = s.createdAt ? s.createdAt.getTime() : Number.NaN;
      this.numbers[o + 3] = s.startedAt.getTime();
    }
  }

  get length(): number {
    return this.ids.length;
  }

  /** The successes as they were given. */
  unpack(): Succeeded[] {
    return this.ids.map((id, i) => {
      const o = i * FIELDS;
      const createdAt = this.numbers[o + 2]!;
      return {
        id,
        attempt: this.numbers[o]!,
        claimSeq: this.numbers[o + 1]!,
        ...(Number.isNaN(createdAt) ? {} : { createdAt: new Date(createdAt) }),
        startedAt: new Date(this.numbers[o + 3]!),
        resultJson: this.results[i]!,
      };
    });
  }
}
