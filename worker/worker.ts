import type pg from 'pg';
import { CancelledError, PermanentError, describeError, isTransient } from './errors.ts';
import type { Logger } from './logger.ts';
import type { WorkerMetrics } from './metrics.ts';
import * as q from './queries.ts';
import type { TaskContext, TaskRegistry } from './tasks/types.ts';
import type { ThreadPool } from './thread-pool.ts';
import type { ClaimedJob } from './types.ts';

/** What the loop needs to know of the worker's presence connection. */
export interface PresenceView {
  readonly workerId: string | undefined;
  readonly ready: boolean;
  whenReady(): Promise<void>;
}

/** Everything the loop uses from outside, handed in so tests can drive it. */
export interface WorkerDeps {
  readonly pool: pg.Pool;
  readonly presence: PresenceView;
  readonly tasks: TaskRegistry;
  readonly threads: ThreadPool;
  readonly logger: Logger;
  readonly metrics?: WorkerMetrics;
  /** Source of randomness for retry jitter (tests pin it). */
  readonly random?: () => number;
}

export interface WorkerOptions {
  readonly concurrency: number;
  readonly batchSize: number;
  readonly queues: readonly string[] | null;
  readonly pollMs: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** Largest JSON result kept; a bigger one fails the run (default 1 MiB). */
  readonly maxResultBytes?: number;
}

/** What one iteration did. */
export interface IterationResult {
  /** Jobs this iteration asked for. */
  readonly requested: number;
  readonly claimed: number;
  /** Finished runs recorded. */
  readonly settled: number;
}

/** How a stop ended. */
export interface StopResult {
  /** Jobs that finished within the grace period. */
  readonly finished: number;
  /** At-least-once jobs given back to the queue. */
  readonly handedBack: string[];
  /** At-most-once jobs that could not finish and ended failed. */
  readonly failed: string[];
}

interface Running {
  readonly job: ClaimedJob;
  readonly controller: AbortController;
  readonly done: Promise<void>;
  /** Set when the job was handed back: whatever the handler does later no longer counts. */
  abandoned: boolean;
  progress?: { value: unknown; timer?: NodeJS.Timeout; writing?: Promise<void> };
}

const PROGRESS_INTERVAL_MS = 250;
const DEFAULT_MAX_RESULT_BYTES = 1024 * 1024;

/**
 * The worker loop: settle the runs that ended and claim more in one round trip, start the jobs,
 * wait for a job to end, a notification or the poll interval, repeat. One iteration is
 * `runOnce()`, which tests call directly.
 */
export class Worker {
  private readonly running = new Map<string, Running>();
  private succeeded: q.Succeeded[] = [];
  private readonly persisting = new Set<Promise<void>>();
  private stopping = false;
  private woken = false;
  private wakeResolve: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private finishedDuringStop = 0;
  /** Time of the last loop iteration, for /healthz. */
  lastIterationAt = Date.now();

  constructor(
    private readonly deps: WorkerDeps,
    private readonly options: WorkerOptions,
  ) {}

  /** Jobs executing now. */
  get inFlight(): number {
    return this.running.size;
  }

  /** Whether the loop is running (not stopped). */
  get active(): boolean {
    return this.loop !== undefined && !this.stopping;
  }

  /** A notification or event that may mean work: cut the current wait short. */
  wake(queue = ''): void {
    if (queue !== '' && this.options.queues && !this.options.queues.includes(queue)) return;
    this.woken = true;
    this.wakeResolve?.();
  }

  /** Abort the handlers of jobs whose cancellation was requested. */
  cancel(ids: string[]): void {
    for (const id of ids) {
      const run = this.running.get(id);
      if (run && !run.controller.signal.aborted) {
        this.deps.logger.info({ jobId: id }, 'job cancelled while running');
        run.controller.abort(new CancelledError('cancelled while running'));
      }
    }
  }

  /** Start the loop; resolves when stop() has ended it. */
  start(): Promise<void> {
    this.loop ??= this.runLoop();
    return this.loop;
  }

  /**
   * One iteration: record finished runs and claim as many jobs as there are free slots, in one
   * statement, then start the claimed jobs without waiting for them.
   */
  async runOnce(): Promise<IterationResult> {
    const workerId = this.deps.presence.workerId;
    if (!workerId) return { requested: 0, claimed: 0, settled: 0 };
    const free = this.options.concurrency - this.running.size;
    const limit = this.stopping || !this.deps.presence.ready ? 0 : Math.max(0, Math.min(free, this.options.batchSize));
    if (limit === 0 && this.succeeded.length === 0) return { requested: 0, claimed: 0, settled: 0 };
    const batch = this.succeeded;
    this.succeeded = [];
    let result: q.SettleAndClaimResult;
    try {
      result = await q.settleAndClaim(this.deps.pool, workerId, batch, limit, this.options.queues);
    } catch (error) {
      this.succeeded = batch.concat(this.succeeded);
      throw error;
    }
    this.recordSettled(batch, result.settled);
    for (const job of result.claimed) this.startJob(job);
    return { requested: limit, claimed: result.claimed.length, settled: result.settled.length };
  }

  /**
   * Stop claiming, give running jobs until `graceMs` to finish, then hand back at-least-once
   * jobs at once (another worker starts them without waiting for a lease) and fail at-most-once
   * ones (their handler may have done part of its work, so they must not run again).
   */
  async stop(graceMs: number): Promise<StopResult> {
    const deadline = Date.now() + graceMs;
    this.stopping = true;
    this.wake();
    await this.loop;
    const startedWith = this.running.size;
    while (this.running.size > 0 && Date.now() < deadline) {
      await Promise.race([
        ...[...this.running.values()].map((r) => r.done),
        new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline - Date.now()))),
      ]);
    }
    const left = [...this.running.values()];
    for (const run of left) {
      run.abandoned = true;
      run.controller.abort(new Error('worker stopping'));
      this.running.delete(run.job.id);
    }
    const workerId = this.deps.presence.workerId;
    const atLeastOnce = left.filter((r) => r.job.delivery === 'at_least_once').map((r) => r.job.id);
    const atMostOnce = left.filter((r) => r.job.delivery === 'at_most_once');
    let handedBack: string[] = [];
    let failed: string[] = [];
    if (workerId && atLeastOnce.length > 0) {
      handedBack = await q.handBack(this.deps.pool, workerId, atLeastOnce);
      for (const run of left) {
        if (handedBack.includes(run.job.id)) this.deps.metrics?.jobs.inc({ task: run.job.task, outcome: 'handed_back' });
      }
    }
    if (workerId && atMostOnce.length > 0) {
      failed = await q.finishJobs(
        this.deps.pool,
        workerId,
        atMostOnce.map((r) => ({
          id: r.job.id,
          attempt: r.job.attempt,
          state: 'failed' as const,
          error: 'the worker stopped before this at-most-once job finished; it is not run again',
        })),
      );
    }
    await this.flush();
    this.deps.metrics?.inFlight.set(0);
    return { finished: startedWith - left.length + this.finishedDuringStop, handedBack, failed };
  }

  /** Record every run that ended and is not yet recorded. */
  async flush(): Promise<void> {
    await Promise.all([...this.persisting]);
    const workerId = this.deps.presence.workerId;
    while (workerId && this.succeeded.length > 0) {
      const batch = this.succeeded;
      this.succeeded = [];
      const result = await q.settleAndClaim(this.deps.pool, workerId, batch, 0, this.options.queues);
      this.recordSettled(batch, result.settled);
    }
  }

  private async runLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      this.lastIterationAt = Date.now();
      if (!this.deps.presence.ready && this.succeeded.length === 0) {
        await Promise.race([this.deps.presence.whenReady(), this.waitForWake(this.options.pollMs)]);
        continue;
      }
      let result: IterationResult;
      try {
        result = await this.runOnce();
        failures = 0;
      } catch (error) {
        failures++;
        this.deps.metrics?.dbErrors.inc({ component: 'claim' });
        const pauseMs = Math.min(5_000, 100 * 2 ** Math.min(failures, 6));
        this.deps.logger.warn({ err: describeError(error), retryInMs: pauseMs }, 'claim failed; retrying');
        await this.waitForWake(pauseMs);
        continue;
      }
      // A full batch with slots still free means more jobs are probably waiting.
      if (result.requested > 0 && result.claimed === result.requested && this.running.size < this.options.concurrency) continue;
      await this.waitForWake(this.options.pollMs);
    }
  }

  private waitForWake(ms: number): Promise<void> {
    if (this.woken || this.stopping) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.wakeResolve = undefined;
        self.woken = false;
        resolve();
      }
      this.wakeResolve = done;
    });
  }

  private recordSettled(batch: q.Succeeded[], settled: string[]): void {
    if (settled.length === batch.length) return;
    const ok = new Set(settled);
    for (const s of batch) {
      if (!ok.has(s.id)) {
        // The rescuer gave the job to another worker (this one was late or cut off); its result is dropped.
        this.deps.logger.warn({ jobId: s.id, attempt: s.attempt }, 'job was taken from this worker before its result was recorded');
        this.deps.metrics?.jobs.inc({ task: 'unknown', outcome: 'lost' });
      }
    }
  }

  private startJob(job: ClaimedJob): void {
    const controller = new AbortController();
    const run: Running = { job, controller, abandoned: false, done: Promise.resolve() };
    this.running.set(job.id, run);
    this.deps.metrics?.inFlight.set(this.running.size);
    this.deps.metrics?.wait.observe(Math.max(0, (job.startedAt.getTime() - job.runAfter.getTime()) / 1000));
    (run as { done: Promise<void> }).done = this.execute(run).finally(() => {
      if (this.running.get(job.id) === run) this.running.delete(job.id);
      if (this.stopping) this.finishedDuringStop++;
      this.deps.metrics?.inFlight.set(this.running.size);
      this.wake();
    });
  }

  private async execute(run: Running): Promise<void> {
    const { job, controller } = run;
    const log = this.deps.logger.child({ jobId: job.id, task: job.task, attempt: job.attempt });
    const startedAt = performance.now();
    let outcome: { ok: true; result: unknown } | { ok: false; error: unknown };
    try {
      const handler = this.deps.tasks.get(job.task);
      if (!handler) {
        throw new PermanentError(`unknown task '${job.task}' (this worker knows: ${[...this.deps.tasks.keys()].join(', ')})`);
      }
      const ctx: TaskContext = {
        job,
        signal: controller.signal,
        logger: log,
        progress: (value) => this.reportProgress(run, value),
        runOnThread: (module, payload, exportName = 'default') =>
          this.deps.threads.run(module, payload, exportName, controller.signal),
      };
      outcome = { ok: true, result: await handler(job.payload, ctx) };
    } catch (error) {
      outcome = { ok: false, error: controller.signal.aborted ? controller.signal.reason : error };
    }
    this.deps.metrics?.duration.observe({ task: job.task }, (performance.now() - startedAt) / 1000);
    if (run.abandoned) return;
    await this.flushProgress(run);
    if (outcome.ok) {
      const serialised = serialiseResult(outcome.result, this.options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES);
      if (typeof serialised === 'string') {
        this.succeeded.push({ id: job.id, attempt: job.attempt, resultJson: serialised });
        this.deps.metrics?.jobs.inc({ task: job.task, outcome: 'succeeded' });
        return;
      }
      outcome = { ok: false, error: serialised };
    }
    await this.persist(() => this.settleFailure(job, outcome.error, log));
  }

  private async settleFailure(job: ClaimedJob, error: unknown, log: Logger): Promise<void> {
    const workerId = this.deps.presence.workerId!;
    const message = describeError(error).slice(0, 10_000);
    const permanent = error instanceof PermanentError;
    if (!permanent && job.delivery === 'at_least_once' && job.attempt < job.maxAttempts) {
      const delayMs = this.retryDelay(job.attempt);
      if (await q.retryJob(this.deps.pool, workerId, job.id, job.attempt, message, delayMs)) {
        log.info({ err: message, retryInMs: delayMs }, 'job failed; will retry');
        this.deps.metrics?.jobs.inc({ task: job.task, outcome: 'retried' });
        return;
      }
    }
    const moved = await q.finishJobs(this.deps.pool, workerId, [{ id: job.id, attempt: job.attempt, state: 'failed', error: message }]);
    const outcome = error instanceof CancelledError ? 'cancelled' : 'failed';
    if (moved.length > 0) {
      log.warn({ err: message }, outcome === 'cancelled' ? 'job cancelled' : 'job failed for good');
      this.deps.metrics?.jobs.inc({ task: job.task, outcome });
    }
  }

  /** Exponential backoff with jitter: base x 2^(attempt-1), capped, then a random 50-100% of it. */
  private retryDelay(attempt: number): number {
    const ceiling = Math.min(this.options.retryMaxMs, this.options.retryBaseMs * 2 ** Math.min(attempt - 1, 40));
    const random = this.deps.random ?? Math.random;
    return Math.round(ceiling * (0.5 + random() / 2));
  }

  /** Run a settle statement until it succeeds: a database outage must not lose an outcome. */
  private persist(fn: () => Promise<void>): Promise<void> {
    const task = (async () => {
      for (let failures = 0; ; failures++) {
        try {
          await fn();
          return;
        } catch (error) {
          this.deps.metrics?.dbErrors.inc({ component: 'settle' });
          if (!isTransient(error) || failures > 1000) {
            this.deps.logger.error({ err: describeError(error) }, 'could not record a job outcome; its lease will expire and it will be rescued');
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, Math.min(5_000, 100 * 2 ** Math.min(failures, 6))));
        }
      }
    })();
    this.persisting.add(task);
    void task.finally(() => this.persisting.delete(task));
    return task;
  }

  private reportProgress(run: Running, value: unknown): void {
    if (run.abandoned) return;
    const state = (run.progress ??= { value });
    state.value = value;
    if (state.timer || state.writing) return;
    state.timer = setTimeout(() => {
      state.timer = undefined;
      void this.writeProgress(run);
    }, PROGRESS_INTERVAL_MS);
  }

  private async writeProgress(run: Running): Promise<void> {
    const state = run.progress;
    const workerId = this.deps.presence.workerId;
    if (!state || !workerId) return;
    const value = state.value;
    state.writing = q
      .setProgress(this.deps.pool, workerId, run.job.id, run.job.attempt, value)
      .then(
        () => {},
        (error) => this.deps.logger.warn({ jobId: run.job.id, err: describeError(error) }, 'could not store progress'),
      );
    await state.writing;
    state.writing = undefined;
  }

  /** Write the last progress before the run is settled, so the history keeps it. */
  private async flushProgress(run: Running): Promise<void> {
    const state = run.progress;
    if (!state) return;
    if (state.writing) await state.writing;
    if (state.timer) {
      clearTimeout(state.timer);
      state.timer = undefined;
      await this.writeProgress(run);
    }
  }
}

/** The result as JSON, or the error that makes the run fail instead. */
function serialiseResult(result: unknown, maxBytes: number): string | Error {
  let json: string | undefined;
  try {
    json = JSON.stringify(result ?? null);
  } catch (error) {
    return new PermanentError(`result: not JSON-serialisable (${(error as Error).message})`);
  }
  if (json === undefined) return new PermanentError('result: not JSON-serialisable');
  if (json.includes('\\u0000')) return new PermanentError('result: contains a NUL character (\\u0000), which Postgres jsonb cannot store');
  const bytes = Buffer.byteLength(json);
  if (bytes > maxBytes) return new PermanentError(`result: ${bytes} bytes of JSON exceeds the ${maxBytes}-byte limit`);
  return json;
}
