import { backoffMs } from '../backoff.ts';
import { sleep, type Clock } from '../clock.ts';
import { describeError, isTransient } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { LoopDatabase, RunRef } from './database.ts';
import type { OutcomeRecorder } from './outcomes.ts';

export interface TakeBackDeps {
  readonly db: LoopDatabase;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly outcomes: OutcomeRecorder;
  /** The worker's current incarnation, if registered. */
  readonly workerId: () => string | undefined;
  /** The runs the worker holds now: running and buffered (outcomes are the recorder's). */
  readonly held: () => RunRef[];
  /** Told when a pass ended, so the loop looks at its state again. */
  readonly done: () => void;
}

/**
 * After a failover that may have lost the last commits: take back, under their own tokens, the
 * jobs this worker holds or recorded moments ago that came back to the queue, then send those
 * recent outcomes again. One pass at a time; a success refused as not this run's while a pass
 * runs (it reached the new server before its job was taken back) asks for another.
 */
export class FailoverTakeBack {
  private running = false;
  private again = false;
  private againFresh = false;

  constructor(private readonly deps: TakeBackDeps) {}

  /**
   * A pass is under way. The worker claims nothing meanwhile: a claim could hand it again a job
   * it ran moments ago, whose record the failover lost, before the pass takes that job back.
   */
  get busy(): boolean {
    return this.running;
  }

  /**
   * A pass: `fresh` for a failover just noticed, which opens the short window in which a
   * refused success asks for another pass; those further passes do not open it again, or a
   * success that can never be recorded here would keep asking for ever.
   */
  run(fresh = true): void {
    const workerId = this.deps.workerId();
    if (!workerId) return;
    if (this.running) {
      this.again = true;
      this.againFresh ||= fresh;
      return;
    }
    this.running = true;
    const { outcomes, logger } = this.deps;
    if (fresh) outcomes.failoverHandled(() => this.run(false));
    let dropped = new Set<string>();
    const { recent, oldest, forgotOlder } = outcomes.takeRecent();
    const failures = outcomes.takeRecentFailures();
    const runs = [...this.deps.held(), ...outcomes.unacknowledged(), ...recent, ...failures.map((f) => f.job)];
    void this.reclaim(workerId, runs)
      .then((result) => {
        if (result.taken.length > 0) logger.warn({ jobs: result.taken }, 'after the failover these held or recently recorded jobs were back in the queue; taken back');
        if (result.elsewhere.length > 0) {
          logger.error({ jobs: result.elsewhere }, 'after the failover these jobs of this worker were taken by another run: the lost window let them start again');
        }
        if (result.gone.length > 0) logger.error({ jobs: result.gone }, 'after the failover these jobs no longer exist: their enqueue was lost');
        // Their outcomes can never be recorded by this run: sending them again would only be refused.
        dropped = new Set([...result.elsewhere, ...result.gone]);
        if (forgotOlder && [...result.taken, ...result.elsewhere].some((id) => oldest.has(id))) {
          logger.error(
            { oldest: [...oldest] },
            'after the failover even the oldest outcomes this worker remembers had been lost: the lost window reaches further back, and jobs this worker ran before them may start again without being reported',
          );
        }
      })
      .catch((error: unknown) => logger.error({ err: describeError(error) }, 'could not take back held jobs after the failover'))
      .finally(() => {
        outcomes.resend(recent, dropped);
        for (const f of failures) if (!dropped.has(f.job.id)) void outcomes.recordFailure(workerId, f.job, f.error, f.log);
        this.running = false;
        if (this.again) {
          const fresh = this.againFresh;
          this.again = false;
          this.againFresh = false;
          this.run(fresh);
        }
        this.deps.done();
      });
  }

  /** The take-back statement, retried through a few transient errors (the new server is still settling). */
  private async reclaim(workerId: string, runs: RunRef[]) {
    for (let failures = 1; ; failures++) {
      try {
        return await this.deps.db.reclaimRuns(workerId, runs);
      } catch (error) {
        if (!isTransient(error) || failures >= 10) throw error;
        await sleep(this.deps.clock, backoffMs(failures, { baseMs: 200, maxMs: 2_000 }));
      }
    }
  }
}
