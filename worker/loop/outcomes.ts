/**
 * Recording how runs ended. Successes wait in a batch that rides on the loop's next round trip;
 * failures are recorded at once (retry or finish), retried through transient errors so a
 * database outage does not lose an outcome.
 */
import { backoffMs } from '../backoff.ts';
import { sleep, type Clock } from '../clock.ts';
import { CancelledError, PermanentError, describeError, isTimeout, isTransient } from '../errors.ts';
import type { StatementHealth } from '../local-faults.ts';
import type { Logger } from '../logger.ts';
import { storableText } from '../poison.ts';
import type { WorkerMetrics } from '../metrics.ts';
import type { ClaimedJob } from '../types.ts';
import type { Finished, LateOutcome, LoopDatabase, RunRef, Succeeded } from './database.ts';
import type { Outcome } from './execute.ts';
import { KeptBatch } from './kept-batch.ts';

export interface OutcomeDeps {
  readonly db: LoopDatabase;
  readonly logger: Logger;
  readonly metrics?: WorkerMetrics;
  readonly clock: Clock;
  /** Source of randomness for retry jitter (tests pin it). */
  readonly random: () => number;
  readonly statements?: StatementHealth;
}

export interface RetryPolicy {
  /** First retry delay; doubled per attempt, with jitter. */
  readonly retryBaseMs: number;
  /** Longest retry delay. */
  readonly retryMaxMs: number;
  /** Most result bytes one settle carries (default 4 MiB), so a settle's time stays bounded. */
  readonly maxSettleBytes?: number;
}

/** Per success, what the settle statement adds besides the result itself. */
const ROW_OVERHEAD_BYTES = 48;
/**
 * Recorded successes kept to send again after a failover, which may have lost their commits:
 * those recorded within RECENT_MS before the newest record, at most RECENT_BYTES of them.
 * Counted back from the newest record, not from now: nothing is recorded while the promotion
 * takes its time, and the window must still hold what was recorded before the old primary went.
 * Healthy asynchronous replication lags well under a second; the window is long so that a
 * replica that fell seconds behind is still covered, and a loss reaching past it is reported.
 */
const RECENT_MS = 10_000;
/** Most failures kept for a failover's take-back (they are rare; each keeps its error). */
const RECENT_FAILURES = 2_000;

/** A failure recorded lately, with what it takes to record it again. */
export interface RecentFailure {
  readonly at: number;
  readonly job: ClaimedJob;
  readonly error: unknown;
  readonly log: () => Logger;
}

/** After a failover was handled, a success refused as not this run's asks for another pass for this long. */
const RESEND_PASSES_MS = 2_000;
const RECENT_BYTES = 4 * 1024 * 1024;
/** What one kept success costs in memory besides its result: its id, its numbers and two slots (KeptBatch). */
const KEPT_OVERHEAD_BYTES = 80;

/**
 * A handler's error as stored. The text is the user's: what Postgres would refuse in it is
 * replaced, or the failure itself could not be stored and the job would stay running.
 */
const failureText = (error: unknown): string => storableText(describeError(error).slice(0, 10_000));

/** A waiting success as an outcome to ask the history about. */
const lateSuccess = (s: Succeeded): LateOutcome => ({
  id: s.id,
  attempt: s.attempt,
  claimSeq: s.claimSeq,
  state: 'succeeded',
  resultJson: s.resultJson,
  error: null,
});

export class OutcomeRecorder {
  private succeeded: Succeeded[] = [];
  /** Successes on their way in a round trip: held until its reply. */
  private readonly sending = new Map<string, Succeeded>();
  /** Until then (a failover was just handled), a refused success asks for another resend pass. */
  private resendPassesUntil = -Infinity;
  private onRefusedAfterFailover: (() => void) | undefined;
  /** Successes held for a resend after a failover, until their jobs are taken back. */
  private readonly holdingForResend = new Set<string>();
  /** Batches recorded lately (or refused as not this run's), oldest first, for a resend after a failover. */
  private recent: KeptBatch[] = [];
  private recentFailures: RecentFailure[] = [];
  private recentBytes = 0;
  /** Whether older recorded successes were forgotten to keep the window (time or bytes). */
  private forgotOlder = false;
  private readonly persisting = new Set<Promise<void>>();
  /** Jobs whose failure is being recorded: still this worker's until the record's reply. */
  private readonly recording = new Map<string, number>();
  /** After this time (the stop's deadline) a failing record is given up on, its jobs listed in `unrecorded`. */
  private giveUpAt = Infinity;
  /** Jobs whose failure record was given up on. */
  readonly unrecorded = new Set<string>();
  /** Most successes per settle: halved by each settle that ran out of time, doubled back by each that did not. */
  private settleCap = Infinity;

  constructor(
    private readonly deps: OutcomeDeps,
    private readonly policy: RetryPolicy,
  ) {}

  /** Successes waiting to be recorded. */
  get pending(): number {
    return this.succeeded.length;
  }

  addSuccess(success: Succeeded, task: string): void {
    this.succeeded.push(success);
    this.deps.metrics?.jobEnded(task, 'succeeded');
  }

  stopRetryingAt(time: number): void {
    this.giveUpAt = time;
  }

  /** Ids of the jobs whose outcome is waiting or on its way: the worker still holds them. */
  heldIds(): string[] {
    return [...this.succeeded.map((s) => s.id), ...this.sending.keys(), ...this.recording.keys(), ...this.holdingForResend];
  }

  /** Take the waiting successes for a round trip, at most the settle cap and the byte bound (always one). */
  takeBatch(): Succeeded[] {
    const maxBytes = this.policy.maxSettleBytes ?? 4 * 1024 * 1024;
    let bytes = 0;
    let n = 0;
    while (n < this.succeeded.length && n < this.settleCap) {
      bytes += this.succeeded[n]!.resultJson.length + ROW_OVERHEAD_BYTES;
      if (n > 0 && bytes > maxBytes) break;
      n++;
    }
    let batch: Succeeded[];
    if (n === this.succeeded.length) {
      batch = this.succeeded;
      this.succeeded = [];
    } else {
      batch = this.succeeded.splice(0, n);
    }
    for (const s of batch) this.sending.set(s.id, s);
    return batch;
  }

  private sent(batch: readonly Succeeded[]): void {
    for (const s of batch) this.sending.delete(s.id);
  }

  /** A settle of `batch` came back with `settled` recorded. */
  settled(workerId: string, batch: Succeeded[], settled: string[]): void {
    this.resize(batch.length, false);
    this.sent(batch);
    if (settled.length === batch.length) {
      this.remember(batch);
      return;
    }
    const ok = new Set(settled);
    this.remember(batch.filter((s) => ok.has(s.id)));
    this.answerMissing(workerId, batch, ok);
  }

  private remember(batch: Succeeded[]): void {
    if (batch.length === 0) return;
    const now = this.deps.clock.now();
    let bytes = 0;
    for (const s of batch) bytes += s.resultJson.length + KEPT_OVERHEAD_BYTES;
    this.recent.push(new KeptBatch(now, batch, bytes));
    this.recentBytes += bytes;
    while (this.recent.length > 0 && (this.recent[0]!.at < now - RECENT_MS || this.recentBytes > RECENT_BYTES)) {
      this.recentBytes -= this.recent.shift()!.bytes;
      this.forgotOlder = true;
    }
  }

  /**
   * The successes recorded (or refused) in the last moments (see RECENT_MS), forgotten here and
   * held until resend() sends them again: a reconciliation meanwhile must not judge their jobs.
   * `oldest` is the earliest batch still remembered, and `forgotOlder` whether anything before
   * it was forgotten: if the failover lost the oldest too, it may have lost more than is known.
   */
  takeRecent(): { recent: Succeeded[]; oldest: ReadonlySet<string>; forgotOlder: boolean } {
    const recent = this.recent.flatMap((r) => r.unpack());
    const oldest = new Set(this.recent[0]?.ids ?? []);
    const forgotOlder = this.forgotOlder;
    this.recent = [];
    this.recentBytes = 0;
    this.forgotOlder = false;
    for (const s of recent) this.holdingForResend.add(s.id);
    return { recent, oldest, forgotOlder };
  }

  /** Successes waiting or on their way (not yet acknowledged). */
  unacknowledged(): Succeeded[] {
    return [...this.succeeded, ...this.sending.values()];
  }

  /**
   * A failover is being handled: for the next moments, a success the database refuses as not
   * this run's (a settle that reached the new server before its job was taken back) is kept and
   * `again` called, so that another pass takes the job back and sends it once more.
   */
  failoverHandled(again: () => void): void {
    this.resendPassesUntil = this.deps.clock.now() + RESEND_PASSES_MS;
    this.onRefusedAfterFailover = again;
  }

  /**
   * Send these successes again with the next round trips (after a failover that may have lost
   * them), except the `dropped` ones, whose jobs another run took or whose enqueue was lost.
   */
  resend(successes: Succeeded[], dropped: ReadonlySet<string> = new Set()): void {
    const waiting = new Set([...this.succeeded.map((s) => s.id), ...this.sending.keys()]);
    this.succeeded.push(...successes.filter((s) => !waiting.has(s.id) && !dropped.has(s.id)));
    for (const s of successes) this.holdingForResend.delete(s.id);
  }

  /** A settle of `batch` failed with `error`; the caller decides whether it waits again. */
  settleFailed(batch: Succeeded[], error: unknown): void {
    this.resize(batch.length, isTimeout(error));
  }

  /**
   * The incarnation `workerId` was revoked: its waiting successes can no longer be recorded as
   * such, but an at-most-once one the rescuer recorded as "outcome unknown" is replaced by what
   * really happened. Sent in the background, once; how many there were.
   */
  sendLate(workerId: string): number {
    const late = this.succeeded;
    this.succeeded = [];
    if (late.length > 0) this.answer(workerId, late.map(lateSuccess), 'late');
    return late.length;
  }

  /**
   * The outcome of a run that went on after its incarnation `workerId` was revoked (an
   * at-most-once job nobody runs again): it replaces the rescuer's "outcome unknown", once.
   */
  sendLateOutcome(workerId: string, job: ClaimedJob, outcome: Outcome): void {
    const ref = { id: job.id, attempt: job.attempt, claimSeq: job.claimSeq };
    const late: LateOutcome = outcome.ok
      ? { ...ref, state: 'succeeded', resultJson: outcome.resultJson, error: null }
      : { ...ref, state: 'failed', resultJson: null, error: failureText(outcome.error) };
    this.answer(workerId, [late], 'late');
  }

  /**
   * How a settle of `size` successes ended: one that ran out of time halves the next settles
   * (retrying it whole would time out again), one that did not lets them grow back.
   */
  private resize(size: number, timedOut: boolean): void {
    if (timedOut && size > 0) {
      this.settleCap = Math.max(1, Math.floor(size / 2));
      this.deps.logger.warn({ settled: size, next: this.settleCap }, 'recording results ran out of time; sending fewer at once');
    } else if (!timedOut && this.settleCap !== Infinity && size >= this.settleCap) {
      this.settleCap = this.settleCap >= 65_536 ? Infinity : this.settleCap * 2;
    }
  }

  /** A round trip failed: its successes wait again, ahead of newer ones. */
  putBack(batch: Succeeded[]): void {
    this.sent(batch);
    this.succeeded = batch.concat(this.succeeded);
  }

  /**
   * Compare what a round trip recorded with what it carried. A success not recorded was either
   * recorded already by its own token (a resend after a lost reply: nothing is wrong), or taken
   * from this worker meanwhile (it was declared dead); the history tells which, and a run the
   * rescuer recorded as "outcome unknown" gets its real outcome.
   */
  private checkSettled(workerId: string, batch: Succeeded[], settled: string[]): void {
    if (settled.length !== batch.length) this.answerMissing(workerId, batch, new Set(settled));
  }

  private answerMissing(workerId: string, batch: Succeeded[], recorded: ReadonlySet<string>): void {
    const missing = batch.filter((s) => !recorded.has(s.id));
    this.answer(workerId, missing.map(lateSuccess), 'resend', new Map(missing.map((s) => [s.id, s])));
  }

  /**
   * Ask the history about outcomes whose statement found no running job under their token, in
   * the background: `already` recorded by that token, `replaced` an "outcome unknown", or lost.
   */
  private answer(workerId: string, outcomes: LateOutcome[], why: 'resend' | 'late', keep: ReadonlyMap<string, Succeeded> = new Map()): void {
    const answered = this.deps.db
      .answerUnrecorded(workerId, outcomes)
      .catch((error: unknown) => {
        this.deps.logger.warn({ err: describeError(error), jobs: outcomes.map((o) => o.id) }, 'could not ask whether unrecorded outcomes were recorded');
        return new Map<string, 'already' | 'replaced'>();
      })
      .then((answers) => {
        for (const o of outcomes) {
          const answer = answers.get(o.id);
          if (answer === 'already') continue;
          if (answer === 'replaced') {
            this.deps.logger.info({ jobId: o.id, token: `${workerId}:${o.claimSeq}`, state: o.state }, 'late outcome replaced the record of an unknown or lost outcome');
            continue;
          }
          // Kept for a moment: when the server changed and the presence has not noticed yet, the
          // failover's resend takes the job back and records this outcome after all.
          const success = keep.get(o.id);
          if (success) {
            this.remember([success]);
            if (this.deps.clock.now() < this.resendPassesUntil) this.onRefusedAfterFailover?.();
          }
          this.deps.logger.warn(
            { jobId: o.id, attempt: o.attempt, token: `${workerId}:${o.claimSeq}` },
            why === 'late' ? 'outcome of a run whose worker was declared dead is not recorded' : 'job was taken from this worker before its outcome was recorded',
          );
          this.deps.metrics?.jobEnded('unknown', 'lost');
        }
      });
    this.persisting.add(answered);
    void answered.finally(() => this.persisting.delete(answered));
  }

  /**
   * A batch of successes whose record failed for a reason other than the connection: some row in
   * it is one Postgres refuses. Halve it until the bad rows are found; each is recorded as a
   * failure with the database's reason, the others as the successes they were. A transient error
   * on the way puts what is left back in the batch and is thrown.
   */
  async isolate(workerId: string, batch: Succeeded[], settle: (part: Succeeded[]) => Promise<string[]>): Promise<void> {
    const parts = [batch];
    while (parts.length > 0) {
      const part = parts.shift()!;
      try {
        const recorded = await settle(part);
        this.sent(part);
        this.checkSettled(workerId, part, recorded);
        continue;
      } catch (error) {
        if (isTransient(error)) {
          this.putBack(parts.flat().concat(part));
          throw error;
        }
        if (part.length > 1) {
          const half = Math.ceil(part.length / 2);
          parts.unshift(part.slice(0, half), part.slice(half));
          continue;
        }
        const [bad] = part;
        const message = storableText(`result could not be stored: ${describeError(error)}`.slice(0, 10_000));
        this.deps.logger.warn({ jobId: bad!.id, err: message }, 'job result refused by the database; the job fails');
        this.deps.metrics?.jobEnded('unknown', 'failed');
        this.finishInBackground(workerId, [{ id: bad!.id, attempt: bad!.attempt, claimSeq: bad!.claimSeq, state: 'failed', error: message }]);
        this.sent(part);
      }
    }
  }

  /**
   * Record a failed run: a retry if it has attempts left and may run again, else failed for
   * good. Kept for a moment, as recorded successes are, for a failover that may lose the record.
   */
  recordFailure(workerId: string, job: ClaimedJob, error: unknown, log: () => Logger): Promise<void> {
    const now = this.deps.clock.now();
    this.recentFailures.push({ at: now, job, error, log });
    while (this.recentFailures.length > 0 && (this.recentFailures[0]!.at < now - RECENT_MS || this.recentFailures.length > RECENT_FAILURES)) this.recentFailures.shift();
    return this.holding([job.id], this.persist([job.id], () => this.settleFailure(workerId, job, error, log)));
  }

  /**
   * The failures recorded in the last moments, forgotten here: after a failover the take-back
   * takes their jobs back if they came back queued, and records them again (`recordFailure`;
   * one that survived answers "already recorded").
   */
  takeRecentFailures(): RecentFailure[] {
    return this.recentFailures.splice(0);
  }

  /** Move runs to the history in a final state, retried through transient errors. */
  finishInBackground(workerId: string, finished: Finished[]): void {
    const ids = finished.map((f) => f.id);
    void this.holding(
      ids,
      this.persist(ids, async () => {
        await this.finish(workerId, finished);
      }),
    );
  }

  /**
   * Give runs back to the queue with their attempt restored (started ones only if at-least-once),
   * retried through transient errors; held until the reply.
   */
  handBackInBackground(workerId: string, started: RunRef[], notStarted: RunRef[]): void {
    const ids = [...started, ...notStarted].map((r) => r.id);
    void this.holding(
      ids,
      this.persist(ids, async () => {
        await this.deps.db.handBack(workerId, started, notStarted);
      }),
    );
  }

  /** Finish runs; those the statement did not move are asked about (a resend, or a late outcome). */
  private async finish(workerId: string, finished: Finished[]): Promise<string[]> {
    const moved = await this.deps.db.finish(workerId, finished);
    if (moved.length < finished.length) {
      const ok = new Set(moved);
      this.answer(
        workerId,
        finished.filter((f) => !ok.has(f.id)).map((f) => ({ id: f.id, attempt: f.attempt, claimSeq: f.claimSeq, state: 'failed' as const, resultJson: null, error: f.error })),
        'resend',
      );
    }
    return moved;
  }

  /** Count `ids` as held until `recorded` settles. */
  private async holding(ids: string[], recorded: Promise<void>): Promise<void> {
    for (const id of ids) this.recording.set(id, (this.recording.get(id) ?? 0) + 1);
    try {
      await recorded;
    } finally {
      for (const id of ids) {
        const n = this.recording.get(id)! - 1;
        if (n === 0) this.recording.delete(id);
        else this.recording.set(id, n);
      }
    }
  }

  /** Wait for every failure record in flight. */
  async whenPersisted(): Promise<void> {
    await Promise.all([...this.persisting]);
  }

  private async settleFailure(workerId: string, job: ClaimedJob, error: unknown, log: () => Logger): Promise<void> {
    const { db, metrics } = this.deps;
    const message = failureText(error);
    const permanent = error instanceof PermanentError;
    if (!permanent && job.delivery === 'at_least_once' && job.attempt < job.maxAttempts) {
      const delayMs = backoffMs(job.attempt, { baseMs: this.policy.retryBaseMs, maxMs: this.policy.retryMaxMs, random: this.deps.random });
      const answer = await db.retry(workerId, job, message, delayMs);
      if (answer !== 'refused') {
        log().info({ err: message, retryInMs: delayMs }, 'job failed; will retry');
        metrics?.jobEnded(job.task, 'retried');
        return;
      }
    }
    const moved = await this.finish(workerId, [{ id: job.id, attempt: job.attempt, claimSeq: job.claimSeq, state: 'failed', error: message }]);
    const outcome = error instanceof CancelledError ? 'cancelled' : 'failed';
    if (moved.length > 0) {
      log().warn({ err: message }, outcome === 'cancelled' ? 'job cancelled' : 'job failed for good');
      metrics?.jobEnded(job.task, outcome);
    }
  }

  /**
   * Run a record statement until it succeeds: a database outage must not lose an outcome. Only
   * a stop's deadline, or a statement the database refuses, ends the retries; the jobs are then
   * listed as unrecorded.
   */
  private persist(ids: string[], fn: () => Promise<void>): Promise<void> {
    const task = (async () => {
      for (let failures = 0; ; failures++) {
        try {
          await fn();
          this.deps.statements?.succeeded();
          return;
        } catch (error) {
          this.deps.statements?.failed();
          this.deps.metrics?.dbErrors.inc({ component: 'settle' });
          const pauseMs = backoffMs(failures + 1, { baseMs: 100, maxMs: 5_000 });
          if (!isTransient(error) || this.deps.clock.now() + pauseMs >= this.giveUpAt) {
            for (const id of ids) this.unrecorded.add(id);
            this.deps.logger.error({ err: describeError(error), jobs: ids }, 'could not record a job outcome; it is rescued once this worker is gone');
            return;
          }
          await sleep(this.deps.clock, pauseMs);
        }
      }
    })();
    this.persisting.add(task);
    void task.finally(() => this.persisting.delete(task));
    return task;
  }
}
