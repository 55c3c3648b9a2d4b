/** How many jobs to claim ahead of the free slots, and which of them to keep. */
export interface PrefetchOptions {
  /** Jobs in flight at once. */
  readonly concurrency: number;
  /**
   * Short jobs are claimed ahead into a local buffer holding about this much work per slot, so
   * slots never wait for a round trip. A job whose task runs longer than this is never held
   * ahead: holding it would keep it from idle workers, and from new VMs when the group scales out.
   */
  readonly horizonMs: number;
  /** Most jobs held in the buffer. */
  readonly max: number;
  /** Most payload bytes (as stored) held in the buffer. */
  readonly maxBytes: number;
}

/** What the sizer needs to know of a claimed job. */
export interface Prefetched {
  readonly task: string;
  readonly payloadBytes: number;
}

const SMOOTHING = 0.1;

/**
 * Sizes the prefetch per task: each task's run time is a moving average of its own runs, so a
 * burst of short jobs says nothing about a long task. A task never seen counts as long until it
 * has run once here.
 */
export class PrefetchSizer {
  private readonly runMs = new Map<string, number>();
  /**
   * The task mix of recent claims (counts, halved at every claim): the next claim likely brings
   * the same mix, and its expected run time follows the tasks' own averages as they are learnt.
   */
  private readonly mix = new Map<string, number>();
  /**
   * A cap on the reach, set when a claim brought more than the buffer keeps (to what it kept)
   * and doubled by every claim that fitted: without it a worker would claim the same long jobs
   * and give them back over and over, each hand-back waking the others.
   */
  private reach = Number.POSITIVE_INFINITY;

  constructor(private readonly options: PrefetchOptions) {}

  /** A run of `task` ended after `runMs`. */
  observe(task: string, runMs: number): void {
    const average = this.runMs.get(task);
    this.runMs.set(task, average === undefined ? runMs : average * (1 - SMOOTHING) + runMs * SMOOTHING);
  }

  /** The expected run time of a job of `task`: its own average, or the horizon (long) if unknown. */
  estimate(task: string): number {
    return this.runMs.get(task) ?? this.options.horizonMs;
  }

  /** A claim brought `jobs`. */
  arrived(jobs: readonly Prefetched[]): void {
    if (jobs.length === 0) return;
    for (const [task, count] of this.mix) {
      if (count < 0.01) this.mix.delete(task);
      else this.mix.set(task, count / 2);
    }
    // Claims mostly bring runs of one task: one map update per run, not per job.
    let task = jobs[0]!.task;
    let count = 0;
    for (const job of jobs) {
      if (job.task !== task) {
        this.mix.set(task, (this.mix.get(task) ?? 0) + count);
        task = job.task;
        count = 0;
      }
      count++;
    }
    this.mix.set(task, (this.mix.get(task) ?? 0) + count);
  }

  /**
   * Jobs to ask for beyond the free slots: the horizon's worth of work at the expected run time
   * of what claims have been bringing; none before a claim came back, or while they bring long
   * or unknown tasks.
   */
  target(): number {
    const { horizonMs, concurrency, max } = this.options;
    let jobs = 0;
    let work = 0;
    for (const [task, count] of this.mix) {
      jobs += count;
      work += count * this.estimate(task);
    }
    if (jobs === 0) return 0;
    const ms = work / jobs;
    if (ms >= horizonMs) return 0;
    return Math.min(max, this.reach, Math.floor((concurrency * horizonMs) / Math.max(ms, 0.01)));
  }

  /**
   * How many of the waiting jobs (in the order they would start) to keep, after a claim: the
   * longest prefix that is at most `max` jobs, `maxBytes` of payload and the horizon's worth of
   * work for every slot, with no job of a long or unknown task in it. The rest goes back to the
   * queue, where an idle worker takes it.
   */
  admit(waiting: readonly Prefetched[]): number {
    const kept = this.fits(waiting);
    this.reach = kept < waiting.length ? kept : Math.max(1, this.reach * 2);
    return kept;
  }

  private fits(waiting: readonly Prefetched[]): number {
    const { horizonMs, concurrency, max, maxBytes } = this.options;
    const workBudget = concurrency * horizonMs;
    let work = 0;
    let bytes = 0;
    let task: string | undefined;
    let ms = 0;
    for (let i = 0; i < waiting.length; i++) {
      const job = waiting[i]!;
      if (job.task !== task) {
        task = job.task;
        ms = this.estimate(task);
      }
      work += ms;
      bytes += job.payloadBytes;
      if (i >= max || ms >= horizonMs || work > workBudget || bytes > maxBytes) return i;
    }
    return waiting.length;
  }
}
