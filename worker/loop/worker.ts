import { backoffMs } from '../backoff.ts';
import { sleep, systemClock, type Clock } from '../clock.ts';
import { CancelledError, describeError, isTransient } from '../errors.ts';
import type { ClaimedJob } from '../types.ts';
import { ClaimLedger } from './claim-ledger.ts';
import { abortRun, type Run } from './execute.ts';
import { runJob, type JobRunDeps } from './job-run.ts';
import { FailoverTakeBack } from './take-back.ts';
import { releaseUnfinished } from './release.ts';
import { OutcomeRecorder } from './outcomes.ts';
import { PrefetchSizer } from './prefetch.ts';
import type { Succeeded } from './database.ts';
import type { IterationResult, StopResult, WorkerDeps, WorkerOptions } from './types.ts';
import { Waker } from './wake.ts';

const DEFAULT_MAX_RESULT_BYTES = 1024 * 1024;

/**
 * The worker loop: settle the runs that ended and claim more in one round trip, start the jobs,
 * wait for a job to end, a notification or the poll interval, repeat. One iteration is
 * `runOnce()`, which tests call directly.
 */
export class Worker {
  private readonly running = new Map<string, Run>();
  /** Claimed, not started yet: waiting for a free slot. */
  private buffer: ClaimedJob[] = [];
  /** When each buffered job's claim reply arrived (monotonic clock). */
  private readonly arrivedAt = new Map<string, number>();
  private readonly prefetch: PrefetchSizer;
  private readonly outcomes: OutcomeRecorder;
  private readonly clock: Clock;
  private readonly waker: Waker;
  private stopping = false;
  /** A job notification arrived since the loop last looked. */
  private notified = false;
  /** Jobs asked for by claims in flight. */
  private claiming = 0;
  private loop: Promise<void> | undefined;
  private finishedDuringStop = 0;
  /** Set by stop(): records are retried through transient errors until then. */
  private recordDeadline: number | undefined;
  private readonly ledger: ClaimLedger;
  /** What each job run needs, made once: one object per job would be garbage per job. */
  private readonly jobDeps: JobRunDeps;
  private readonly takeBack: FailoverTakeBack;

  constructor(
    private readonly deps: WorkerDeps,
    private readonly options: WorkerOptions,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.waker = new Waker(this.clock);
    this.ledger = new ClaimLedger(this.clock, {
      failedWindowMs: options.failedClaimWindowMs ?? 30_000,
      lookAgainMs: 2_000,
      backstopMs: options.reconcileEveryMs ?? 15_000,
    });
    this.prefetch = new PrefetchSizer({
      concurrency: options.concurrency,
      horizonMs: options.prefetchHorizonMs ?? 50,
      max: options.maxPrefetch ?? 2000,
      maxBytes: options.maxPrefetchBytes ?? 16 * 1024 * 1024,
    });
    this.outcomes = new OutcomeRecorder(
      { db: deps.db, logger: deps.logger, metrics: deps.metrics, clock: this.clock, random: deps.random ?? Math.random, statements: deps.statements },
      options,
    );
    this.takeBack = new FailoverTakeBack({
      db: deps.db,
      logger: deps.logger,
      clock: this.clock,
      outcomes: this.outcomes,
      workerId: () => this.deps.presence.workerId,
      held: () => [...[...this.running.values()].map((r) => r.job), ...this.buffer],
      done: () => this.nudge(),
    });
    this.jobDeps = {
      ...deps,
      clock: this.clock,
      prefetch: this.prefetch,
      outcomes: this.outcomes,
      maxResultBytes: options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES,
    };
  }

  /** Jobs executing now or claimed and waiting in the buffer. */
  get inFlight(): number {
    return this.running.size + this.buffer.length;
  }

  /** Every job this worker holds: running, buffered, or with an outcome waiting or on its way. */
  heldIds(): string[] {
    return [...this.running.keys(), ...this.buffer.map((j) => j.id), ...this.outcomes.heldIds()];
  }

  /** How many jobs to hold beyond the free slots (see PrefetchSizer). */
  prefetchTarget(): number {
    return this.prefetch.target();
  }

  /** A notification or event that may mean work: cut the current wait short. */
  wake(queue = ''): void {
    if (queue !== '' && this.options.queues && !this.options.queues.includes(queue)) return;
    this.notified = true;
    this.nudge();
  }

  /** Cut the loop's wait short to look at its own state (a job ended, a round trip returned). */
  private nudge(): void {
    this.waker.nudge();
  }

  /** Abort the handlers of jobs whose cancellation was requested; drop buffered ones. */
  cancel(ids: string[]): void {
    const buffered = this.buffer.filter((j) => ids.includes(j.id));
    if (buffered.length > 0) {
      this.buffer = this.buffer.filter((j) => !ids.includes(j.id));
      for (const j of buffered) this.arrivedAt.delete(j.id);
      // The history marks them cancelled: their cancel_requested flag is set.
      this.outcomes.finishInBackground(
        this.deps.presence.workerId!,
        buffered.map((j) => ({ id: j.id, attempt: j.attempt, claimSeq: j.claimSeq, state: 'failed' as const, error: 'cancelled before it started' })),
      );
    }
    for (const id of ids) {
      const run = this.running.get(id);
      if (run && run.abortReason === undefined) {
        this.deps.logger.info({ jobId: id }, 'job cancelled while running');
        abortRun(run, new CancelledError('cancelled while running'));
      }
    }
  }

  /** Start the loop; resolves when stop() has ended it. */
  start(): Promise<void> {
    this.loop ??= this.runLoop();
    return this.loop;
  }

  /**
   * One iteration: record finished runs and claim as many jobs as there are free slots (plus
   * the prefetch), in one statement, then start what fits without waiting for the jobs.
   */
  async runOnce(): Promise<IterationResult> {
    const workerId = this.deps.presence.workerId;
    if (!workerId) return { requested: 0, claimed: 0, settled: 0 };
    const limit = this.stopping || !this.deps.presence.ready || !this.leaseHolds() || this.takeBack.busy ? 0 : Math.max(0, Math.min(this.room(), this.options.batchSize));
    if (limit === 0 && this.outcomes.pending === 0) return { requested: 0, claimed: 0, settled: 0 };
    const batch = this.outcomes.takeBatch();
    this.claiming += limit;
    const seq = limit > 0 ? this.ledger.begin() : 0;
    let result;
    try {
      result = await this.deps.db.settleAndClaim(workerId, seq, batch, limit, this.options.queues);
    } catch (error) {
      if (limit > 0) this.ledger.failedClaim(seq);
      this.deps.statements?.failed();
      this.outcomes.settleFailed(batch, error);
      if (batch.length > 0 && !isTransient(error)) {
        await this.outcomes.isolate(workerId, batch, (part) => this.settleOnly(workerId, part));
      } else {
        this.outcomes.putBack(batch);
      }
      throw error;
    } finally {
      this.claiming -= limit;
    }
    if (limit > 0) this.ledger.resolved(seq);
    this.deps.statements?.succeeded();
    this.outcomes.settled(workerId, batch, result.settled);
    if (this.deps.presence.workerId !== workerId) {
      // Claimed under an incarnation revoked while the reply was on the wire: the rescuer's
      // sweep takes these back; they never start here.
      if (result.claimed.length > 0) {
        this.deps.logger.warn({ workerId, jobs: result.claimed.map((j) => j.id) }, 'claim reply arrived for a revoked incarnation; not started');
      }
      return { requested: limit, claimed: 0, settled: result.settled.length };
    }
    const arrived = this.clock.now();
    for (const job of result.claimed) this.arrivedAt.set(job.id, arrived);
    this.prefetch.arrived(result.claimed);
    this.buffer.push(...result.claimed);
    this.pump();
    this.trimBuffer();
    return { requested: limit, claimed: result.claimed.length, settled: result.settled.length };
  }

  /**
   * Start buffered jobs while slots are free, and only while the worker's own lease holds: a
   * worker that was frozen or cut off may already be dead to the others, and must not start what
   * they may have taken back.
   */
  private pump(): void {
    let expired: ClaimedJob[] | undefined;
    while (this.running.size < this.options.concurrency && this.buffer.length > 0 && !this.stopping && this.leaseHolds()) {
      const job = this.buffer.shift()!;
      if (job.expiresAt !== null && this.databaseNow(job) >= job.expiresAt.getTime()) {
        (expired ??= []).push(job);
        this.arrivedAt.delete(job.id);
        continue;
      }
      this.startJob(job);
    }
    if (expired) this.giveBackExpired(expired);
  }

  /**
   * Give back what the buffer holds beyond its bounds (see PrefetchSizer.admit): a claim sized
   * for short jobs may bring long ones, and those belong to whichever worker has a slot free.
   */
  private trimBuffer(): void {
    const kept = this.prefetch.admit(this.buffer);
    if (kept === this.buffer.length) return;
    const excess = this.buffer.splice(kept);
    for (const job of excess) this.arrivedAt.delete(job.id);
    const workerId = this.deps.presence.workerId!;
    this.outcomes.handBackInBackground(workerId, [], excess);
    this.deps.logger.debug({ jobs: excess.length, kept }, 'gave back claimed jobs beyond the prefetch bounds (long, unknown or large)');
  }

  /**
   * The database's clock now, as seen from a claimed job: its claim time plus the monotonic time
   * since the claim reply arrived (behind the server by the reply's one-way trip at most).
   */
  private databaseNow(job: ClaimedJob): number {
    return job.startedAt.getTime() + (this.clock.now() - (this.arrivedAt.get(job.id) ?? this.clock.now()));
  }

  /**
   * Buffered jobs whose expires_at passed while they waited for a slot never start: they go
   * back unstarted, attempt restored, where no claim takes them (claims skip expired jobs) and
   * the maintenance pass records them `expired`, as it does every job that expires queued.
   */
  private giveBackExpired(jobs: ClaimedJob[]): void {
    const workerId = this.deps.presence.workerId;
    if (!workerId) return;
    this.outcomes.handBackInBackground(workerId, [], jobs);
    for (const job of jobs) this.deps.metrics?.jobEnded(job.task, 'expired');
    this.deps.logger.info({ jobs: jobs.map((j) => j.id) }, 'buffered jobs expired before a slot was free; given back unstarted for the expiry pass');
    this.nudge();
  }

  /** Abort a run and forget it: whatever its handler does from now on is not recorded. */
  private letGo(run: Run, reason: Error): void {
    run.abandoned = true;
    run.progress?.close();
    abortRun(run, reason);
    this.running.delete(run.job.id);
  }

  private leaseHolds(): boolean {
    return this.deps.presence.leaseValid !== false;
  }

  /** A heartbeat was acknowledged: the lease holds again, so buffered jobs may start. */
  leaseRenewed(): void {
    if (this.buffer.length > 0) {
      this.pump();
      this.nudge();
    }
  }

  /**
   * The incarnation `workerId` was declared dead and its jobs taken back: nothing held under it
   * is this worker's any more. Buffered jobs are dropped unstarted, at-least-once handlers
   * aborted (the rescuer runs those again) and their outcomes never recorded. At-most-once
   * handlers go on, as after a lapse: nobody runs such a job again, and its outcome, sent late
   * under the old token, replaces the rescuer's "outcome unknown". Waiting successes are sent
   * late too.
   */
  abandon(workerId: string): void {
    const dropped = this.buffer.length;
    this.buffer = [];
    this.arrivedAt.clear();
    let goingOn = 0;
    for (const run of [...this.running.values()]) {
      if (run.job.delivery === 'at_most_once') {
        run.revokedFrom ??= workerId;
        goingOn++;
      } else {
        this.letGo(run, new Error('this worker was declared dead; the job was taken back'));
      }
    }
    this.ledger.newIncarnation();
    const late = this.outcomes.sendLate(workerId);
    this.deps.metrics?.jobEnded('unknown', 'lost', dropped);
    this.deps.logger.warn({ workerId, dropped, late, goingOn }, 'abandoned what this worker held before it was declared dead');
    this.nudge();
  }

  /**
   * The worker's own lease lapsed (no heartbeat acknowledged for its window): by the time the
   * rescuer may count it dead, it must not be doing what the rescuer would give to another.
   * Buffered jobs are given back unstarted and at-least-once handlers aborted and given back —
   * the rescuer would run those again elsewhere. At-most-once handlers go on: nobody runs such
   * a job again, and its outcome is recorded under its token, or replaces the rescuer's
   * "outcome unknown" (rule 9); aborting it would only turn a success into a failure. The worker
   * reconciles before it claims again. Every statement here matches the runs' tokens, so one
   * that arrives after the rescuer took a job changes nothing.
   */
  leaseLapsed(): void {
    const workerId = this.deps.presence.workerId;
    if (!workerId || this.stopping || this.leaseHolds()) return;
    const unstarted = this.buffer;
    this.buffer = [];
    this.arrivedAt.clear();
    const aborted = [...this.running.values()].filter((r) => r.job.delivery === 'at_least_once');
    for (const run of aborted) this.letGo(run, new Error('this worker lost contact with the database for longer than its lease'));
    this.ledger.force();
    if (unstarted.length === 0 && aborted.length === 0) return;
    this.outcomes.handBackInBackground(workerId, aborted.map((r) => r.job), unstarted);
    this.deps.metrics?.jobEnded('unknown', 'handed_back', unstarted.length + aborted.length);
    this.deps.logger.warn({ workerId, unstarted: unstarted.length, aborted: aborted.length }, 'lease lapsed: gave back buffered jobs and aborted at-least-once ones');
  }

  /**
   * The database server changed under the worker (a promotion). If it lost the last commits,
   * jobs this worker holds or recorded moments ago may be back in the queue, where anyone could
   * start them again: they are taken back under their own tokens, the recent outcomes are sent
   * again (the ones that survived answer "already recorded"), and the worker reconciles before
   * it claims again. Jobs another worker started meanwhile, or whose enqueue was lost, are
   * reported: that is the lost window the README describes.
   */
  failedOver(): void {
    this.ledger.force();
    this.takeBack.run();
  }

  /**
   * Stop claiming, give running jobs until `graceMs` to finish, then hand back at-least-once
   * jobs at once (another worker starts them without waiting for a lease) and fail at-most-once
   * ones (their handler may have done part of its work, so they must not run again). Every
   * record goes on being retried through a database outage until `recordWithinMs` from now (at
   * least the grace period); what still is not recorded then is listed in `unrecorded`.
   */
  async stop(graceMs: number, recordWithinMs = graceMs): Promise<StopResult> {
    const started = this.clock.now();
    const deadline = started + graceMs;
    this.recordDeadline = started + Math.max(graceMs, recordWithinMs);
    this.outcomes.stopRetryingAt(this.recordDeadline);
    this.stopping = true;
    this.nudge();
    await this.loop;
    const unrecorded: string[] = [];
    // Buffered jobs never started: back to the queue at once, whatever their delivery.
    const unstarted = this.buffer;
    this.buffer = [];
    this.arrivedAt.clear();
    const workerId = this.deps.presence.workerId;
    let handedBack: string[] = [];
    if (workerId && unstarted.length > 0) {
      const back = await this.record(() => this.deps.db.handBack(workerId, [], unstarted));
      if (back === undefined) unrecorded.push(...unstarted.map((j) => j.id));
      handedBack = back ?? [];
    }
    const startedWith = this.running.size;
    while (this.running.size > 0 && this.clock.now() < deadline) {
      let cancel: (() => void) | undefined;
      await Promise.race([
        ...[...this.running.values()].map((r) => r.done),
        new Promise<void>((resolve) => (cancel = this.clock.setTimer(resolve, Math.max(0, deadline - this.clock.now())))),
      ]);
      cancel?.();
    }
    const left = [...this.running.values()];
    for (const run of left) this.letGo(run, new Error('worker stopping'));
    // A run of a revoked incarnation is the rescuer's already: its record stands.
    const ours = left.filter((r) => r.revokedFrom === undefined);
    const released = workerId
      ? await releaseUnfinished(this.deps.db, workerId, ours, (statement) => this.record(statement), this.deps.metrics)
      : { handedBack: [], failed: [], unrecorded: [] };
    handedBack = handedBack.concat(released.handedBack);
    unrecorded.push(...released.unrecorded);
    try {
      await this.flush();
    } catch (error) {
      this.deps.logger.error({ err: describeError(error) }, 'could not record every result before the stop deadline');
    }
    unrecorded.push(...this.outcomes.heldIds(), ...this.outcomes.unrecorded);
    this.deps.metrics?.inFlight.set(0);
    return { finished: startedWith - left.length + this.finishedDuringStop, handedBack, failed: released.failed, unrecorded };
  }

  /**
   * Record every run that ended and is not yet recorded. While stopping, transient errors are
   * retried until the stop's deadline; otherwise the first one is thrown.
   */
  async flush(): Promise<void> {
    await this.outcomes.whenPersisted();
    const workerId = this.deps.presence.workerId;
    for (let failures = 0; workerId && this.outcomes.pending > 0; ) {
      const batch = this.outcomes.takeBatch();
      try {
        this.outcomes.settled(workerId, batch, await this.settleOnly(workerId, batch));
      } catch (error) {
        this.outcomes.settleFailed(batch, error);
        if (isTransient(error)) {
          this.outcomes.putBack(batch);
          if (this.recordDeadline === undefined || !(await this.pauseBeforeRetry(++failures))) throw error;
          continue;
        }
        await this.outcomes.isolate(workerId, batch, (part) => this.settleOnly(workerId, part));
      }
    }
    await this.outcomes.whenPersisted();
  }

  /** Run a stop-time record statement through transient errors until the stop's deadline. */
  private async record<T>(statement: () => Promise<T>): Promise<T | undefined> {
    for (let failures = 1; ; failures++) {
      try {
        return await statement();
      } catch (error) {
        if (!isTransient(error)) throw error;
        this.deps.metrics?.dbErrors.inc({ component: 'stop' });
        if (!(await this.pauseBeforeRetry(failures))) {
          this.deps.logger.error({ err: describeError(error) }, 'the database did not come back before the stop deadline');
          return undefined;
        }
      }
    }
  }

  /** Wait before retry number `failures`; false when that would pass the stop's deadline. */
  private async pauseBeforeRetry(failures: number): Promise<boolean> {
    const pauseMs = backoffMs(failures, { baseMs: 100, maxMs: 2_000 });
    if (this.recordDeadline === undefined || this.clock.now() + pauseMs >= this.recordDeadline) return false;
    await sleep(this.clock, pauseMs);
    return true;
  }

  /**
   * Keep up to `pipeline` iterations in flight (one per pool connection, less the one kept for
   * failures, progress and maintenance): while one round trip is on the wire, the next batch
   * of outcomes builds up and goes out on the other connection.
   */
  private async runLoop(): Promise<void> {
    const pipeline = Math.max(1, this.options.pipeline ?? 1);
    const iterations = new Set<Promise<void>>();
    let failures = 0;
    let pauseUntil = 0;
    // Whether the queue may hold jobs for us: after a full claim, a notification or a poll.
    let more = true;
    while (!this.stopping) {
      if (!this.deps.presence.ready && this.outcomes.pending === 0) {
        await Promise.race([this.deps.presence.whenReady(), this.waker.wait(this.options.pollMs, this.stopping)]);
        more = true;
        continue;
      }
      if (this.notified) {
        this.notified = false;
        more = true;
      }
      if (this.ledger.wanted && this.deps.presence.ready && this.deps.presence.workerId) {
        if (this.clock.now() < pauseUntil) {
          await this.waker.wait(pauseUntil - this.clock.now(), this.stopping);
          continue;
        }
        try {
          // The claim failures go on counting: only a claim that worked ends the backoff.
          await this.reconcile();
        } catch (error) {
          failures++;
          this.deps.metrics?.dbErrors.inc({ component: 'claim' });
          const pauseMs = backoffMs(failures, { baseMs: 200, maxMs: 5_000 });
          pauseUntil = this.clock.now() + pauseMs;
          this.deps.logger.warn({ err: describeError(error), retryInMs: pauseMs }, 'could not look for lost claims; retrying');
        }
        more = true;
        continue;
      }
      const wanted = this.outcomes.pending > 0 || (more && this.room() > 0);
      if (wanted && iterations.size < pipeline && this.clock.now() >= pauseUntil) {
        more = false;
        const iteration = this.runOnce().then(
          (result) => {
            failures = 0;
            if (result.requested > 0 && result.claimed === result.requested) more = true;
          },
          (error: unknown) => {
            failures++;
            more = true;
            this.deps.metrics?.dbErrors.inc({ component: 'claim' });
            const pauseMs = backoffMs(failures, { baseMs: 200, maxMs: 5_000 });
            pauseUntil = this.clock.now() + pauseMs;
            this.deps.logger.warn({ err: describeError(error), retryInMs: pauseMs }, 'claim failed; retrying');
          },
        );
        iterations.add(iteration);
        void iteration.finally(() => {
          iterations.delete(iteration);
          this.nudge();
        });
        continue;
      }
      const now = this.clock.now();
      const waitMs = now < pauseUntil ? pauseUntil - now : this.options.pollMs;
      if (!(await this.waker.wait(waitMs, this.stopping)) && iterations.size === 0) more = true;
    }
    await Promise.all(iterations);
  }

  /** Record successes without claiming; the ids recorded. */
  private async settleOnly(workerId: string, batch: Succeeded[]): Promise<string[]> {
    return (await this.deps.db.settleAndClaim(workerId, 0, batch, 0, this.options.queues)).settled;
  }

  /**
   * Settle what the database says this worker runs and the worker does not hold, for the claims
   * up to the low-water mark and the failed ones (see ClaimLedger): claims still on the wire are
   * not judged, so this runs beside them. The loop calls it when the ledger asks; tests call it
   * directly.
   */
  async reconcile(): Promise<void> {
    const workerId = this.deps.presence.workerId!;
    const result = await this.deps.db.reconcile(workerId, this.ledger.request(this.heldIds()));
    this.ledger.looked();
    const { released, requeued, lost, cancelled } = result;
    if (released.length > 0) {
      this.deps.metrics?.jobEnded('unknown', 'released', released.length);
      this.deps.logger.warn({ jobs: released }, 'gave back jobs whose claim reply was lost');
    }
    if (requeued.length + lost.length > 0) {
      this.deps.metrics?.jobEnded('unknown', 'lost', requeued.length + lost.length);
      this.deps.logger.error({ requeued, lost }, 'jobs this worker received were still running under it after it let go of them (a lost commit?): requeued or failed as "outcome lost"');
    }
    if (cancelled.length > 0) this.deps.logger.info({ jobs: cancelled }, 'jobs whose claim reply was lost were cancelled meanwhile');
  }

  /** Jobs the worker can take now: free slots plus prefetch, less what is held or being claimed. */
  private room(): number {
    return this.options.concurrency + this.prefetch.target() - this.running.size - this.buffer.length - this.claiming;
  }

  private startJob(job: ClaimedJob): void {
    const buffered = this.clock.now() - (this.arrivedAt.get(job.id) ?? this.clock.now());
    this.arrivedAt.delete(job.id);
    // Both ends on the database's clock, plus the monotonic wait here: never the VM's own clock.
    const startedAt = new Date(job.startedAt.getTime() + buffered);
    const run: Run = { job, startedAt, abandoned: false, done: Promise.resolve() };
    this.running.set(job.id, run);
    this.deps.metrics?.inFlight.set(this.running.size);
    this.deps.metrics?.wait.observe(Math.max(0, startedAt.getTime() - job.runAfter.getTime()) / 1000);
    run.done = runJob(run, this.jobDeps).finally(() => {
      if (this.running.get(job.id) === run) this.running.delete(job.id);
      this.pump();
      if (this.stopping) this.finishedDuringStop++;
      this.deps.metrics?.inFlight.set(this.running.size);
      this.nudge();
    });
  }
}
