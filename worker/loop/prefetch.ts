/** How many jobs to claim ahead of the free slots. */
export interface PrefetchOptions {
  /** Jobs in flight at once. */
  readonly concurrency: number;
  /**
   * Short jobs are claimed ahead into a local buffer holding about this much work, so slots never
   * wait for a round trip. Jobs longer than this are never prefetched: holding them would keep
   * them from idle workers, and from new VMs when the group scales out.
   */
  readonly horizonMs: number;
  /** Most jobs held in the buffer. */
  readonly max: number;
}

/** Sizes the prefetch from a moving average of recent run times. */
export class PrefetchSizer {
  private averageRunMs: number | undefined;

  constructor(private readonly options: PrefetchOptions) {}

  /** A run ended after `runMs`. */
  observe(runMs: number): void {
    this.averageRunMs = this.averageRunMs === undefined ? runMs : this.averageRunMs * 0.9 + runMs * 0.1;
  }

  /**
   * Jobs to hold beyond the free slots: enough for the horizon's worth of work at the recent run
   * time; none until run times are known, or when jobs are long.
   */
  target(): number {
    const { horizonMs, concurrency, max } = this.options;
    const avg = this.averageRunMs;
    if (avg === undefined || avg >= horizonMs) return 0;
    return Math.min(max, Math.floor((concurrency * horizonMs) / Math.max(avg, 0.01)));
  }
}
