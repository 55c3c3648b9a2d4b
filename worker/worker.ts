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
  /**
   * Short jobs are claimed ahead into a local buffer holding about this much work, so slots
   * never wait for a round trip (default 50 ms). Jobs longer than this are never prefetched:
   * holding them would keep them from idle workers, and from new VMs when the group scales out.
   */
  readonly prefetchHorizonMs?: number;
  /** Most jobs held in the prefetch buffer (default 2000: two full claims can be in flight). */
  readonly maxPrefetch?: number;
  /** Round trips in flight at once (default 1); at most the pool size. */
  readonly pipeline?: number;
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
  /** Made on first use of ctx.signal: most handlers never look, and a controller per job costs. */
  controller?: AbortController;
  /** Why the run was aborted (cancel, hand-back), if it was. */
  abortReason?: unknown;
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
  /** Claimed, not started yet: waiting for a free slot. */
  private buffer: ClaimedJob[] = [];
  /** Moving average of recent run times (ms), which sizes the prefetch. */
  private averageRunMs: number | undefined;
  private succeeded: q.Succeeded[] = [];
  private readonly persisting = new Set<Promise<void>>();
  private stopping = false;
  private woken = false;
  /** A job notification arrived since the loop last looked. */
  private notified = false;
  /** Jobs asked for by claims in flight. */
  private claiming = 0;
  private wakeResolve: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private finishedDuringStop = 0;

  constructor(
    private readonly deps: WorkerDeps,
    private readonly options: WorkerOptions,
  ) {}

  /** Jobs executing now or claimed and waiting in the buffer. */
  get inFlight(): number {
    return this.running.size + this.buffer.length;
  }

  /**
   * How many jobs to hold beyond the free slots: enough for `prefetchHorizonMs` of work at the
   * recent run time, none until run times are known or when jobs are long.
   */
  prefetchTarget(): number {
    const horizon = this.options.prefetchHorizonMs ?? 50;
    const avg = this.averageRunMs;
    if (avg === undefined || avg >= horizon) return 0;
    return Math.min(this.options.maxPrefetch ?? 2000, Math.floor((this.options.concurrency * horizon) / Math.max(avg, 0.01)));
  }

  /** A notification or event that may mean work: cut the current wait short. */
  wake(queue = ''): void {
    if (queue !== '' && this.options.queues && !this.options.queues.includes(queue)) return;
    this.notified = true;
    this.nudge();
  }

  /** Cut the loop's wait short to look at its own state (a job ended, a round trip returned). */
  private nudge(): void {
    this.woken = true;
    this.wakeResolve?.();
  }

  /** Abort the handlers of jobs whose cancellation was requested; drop buffered ones. */
  cancel(ids: string[]): void {
    const buffered = this.buffer.filter((j) => ids.includes(j.id));
    if (buffered.length > 0) {
      this.buffer = this.buffer.filter((j) => !ids.includes(j.id));
      const workerId = this.deps.presence.workerId!;
      void this.persist(async () => {
        // The history marks them cancelled: their cancel_requested flag is set.
        await q.finishJobs(this.deps.pool, workerId, buffered.map((j) => ({ id: j.id, attempt: j.attempt, state: 'failed' as const, error: 'cancelled before it started' })));
      });
    }
    for (const id of ids) {
      const run = this.running.get(id);
      if (run && run.abortReason === undefined) {
        this.deps.logger.info({ jobId: id }, 'job cancelled while running');
        abort(run, new CancelledError('cancelled while running'));
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
    const limit = this.stopping || !this.deps.presence.ready ? 0 : Math.max(0, Math.min(this.room(), this.options.batchSize));
    if (limit === 0 && this.succeeded.length === 0) return { requested: 0, claimed: 0, settled: 0 };
    const batch = this.succeeded;
    this.succeeded = [];
    let result: q.SettleAndClaimResult;
    this.claiming += limit;
    try {
      result = await q.settleAndClaim(this.deps.pool, workerId, batch, limit, this.options.queues);
    } catch (error) {
      this.succeeded = batch.concat(this.succeeded);
      throw error;
    } finally {
      this.claiming -= limit;
    }
    this.recordSettled(batch, result.settled);
    this.buffer.push(...result.claimed);
    this.pump();
    return { requested: limit, claimed: result.claimed.length, settled: result.settled.length };
  }

  /** Start buffered jobs while slots are free. */
  private pump(): void {
    while (this.running.size < this.options.concurrency && this.buffer.length > 0 && !this.stopping) {
      this.startJob(this.buffer.shift()!);
    }
  }

  /**
   * Stop claiming, give running jobs until `graceMs` to finish, then hand back at-least-once
   * jobs at once (another worker starts them without waiting for a lease) and fail at-most-once
   * ones (their handler may have done part of its work, so they must not run again).
   */
  async stop(graceMs: number): Promise<StopResult> {
    const deadline = Date.now() + graceMs;
    this.stopping = true;
    this.nudge();
    await this.loop;
    // Buffered jobs never started: back to the queue at once, whatever their delivery.
    const unstarted = this.buffer.map((j) => j.id);
    this.buffer = [];
    const workerId = this.deps.presence.workerId;
    let handedBack: string[] = [];
    if (workerId && unstarted.length > 0) handedBack = await q.handBack(this.deps.pool, workerId, [], unstarted);
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
      abort(run, new Error('worker stopping'));
      this.running.delete(run.job.id);
    }
    const atLeastOnce = left.filter((r) => r.job.delivery === 'at_least_once').map((r) => r.job.id);
    const atMostOnce = left.filter((r) => r.job.delivery === 'at_most_once');
    let failed: string[] = [];
    if (workerId && atLeastOnce.length > 0) {
      const back = await q.handBack(this.deps.pool, workerId, atLeastOnce);
      for (const run of left) {
        if (back.includes(run.job.id)) this.deps.metrics?.jobs.inc({ task: run.job.task, outcome: 'handed_back' });
      }
      handedBack = handedBack.concat(back);
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
      if (!this.deps.presence.ready && this.succeeded.length === 0) {
        await Promise.race([this.deps.presence.whenReady(), this.waitForWake(this.options.pollMs)]);
        more = true;
        continue;
      }
      if (this.notified) {
        this.notified = false;
        more = true;
      }
      const wanted = this.succeeded.length > 0 || (more && this.room() > 0);
      if (wanted && iterations.size < pipeline && Date.now() >= pauseUntil) {
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
            const pauseMs = Math.min(5_000, 100 * 2 ** Math.min(failures, 6));
            pauseUntil = Date.now() + pauseMs;
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
      const waitMs = Date.now() < pauseUntil ? pauseUntil - Date.now() : this.options.pollMs;
      if (!(await this.waitForWake(waitMs)) && iterations.size === 0) more = true;
    }
    await Promise.all(iterations);
  }

  /** Jobs the worker can take now: free slots plus prefetch, less what is held or being claimed. */
  private room(): number {
    return this.options.concurrency + this.prefetchTarget() - this.running.size - this.buffer.length - this.claiming;
  }

  /** Resolves true when woken, false when `ms` passed. */
  private waitForWake(ms: number): Promise<boolean> {
    if (this.woken || this.stopping) {
      this.woken = false;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), ms);
      const done = (woken: boolean) => {
        clearTimeout(timer);
        this.wakeResolve = undefined;
        this.woken = false;
        resolve(woken);
      };
      this.wakeResolve = () => done(true);
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
    const run: Running = { job, abandoned: false, done: Promise.resolve() };
    this.running.set(job.id, run);
    this.deps.metrics?.inFlight.set(this.running.size);
    this.deps.metrics?.wait.observe(Math.max(0, (Date.now() - job.runAfter.getTime()) / 1000));
    (run as { done: Promise<void> }).done = this.execute(run).finally(() => {
      if (this.running.get(job.id) === run) this.running.delete(job.id);
      this.pump();
      if (this.stopping) this.finishedDuringStop++;
      this.deps.metrics?.inFlight.set(this.running.size);
      this.nudge();
    });
  }

  private async execute(run: Running): Promise<void> {
    const { job } = run;
    // A child logger per job costs an allocation most jobs never use: made on first use.
    let child: Logger | undefined;
    const log = () => (child ??= this.deps.logger.child({ jobId: job.id, task: job.task, attempt: job.attempt }));
    const startedAt = performance.now();
    const startedAtDate = new Date();
    let outcome: { ok: true; result: unknown } | { ok: false; error: unknown };
    try {
      const handler = this.deps.tasks.get(job.task);
      if (!handler) {
        throw new PermanentError(`unknown task '${job.task}' (this worker knows: ${[...this.deps.tasks.keys()].join(', ')})`);
      }
      const ctx: TaskContext = {
        job,
        get signal() {
          return signalOf(run);
        },
        get logger() {
          return log();
        },
        progress: (value) => this.reportProgress(run, value),
        runOnThread: (module, payload, exportName = 'default') =>
          this.deps.threads.run(module, payload, exportName, signalOf(run)),
      };
      outcome = { ok: true, result: await handler(job.payload, ctx) };
    } catch (error) {
      outcome = { ok: false, error: run.abortReason ?? error };
    }
    const runMs = performance.now() - startedAt;
    this.averageRunMs = this.averageRunMs === undefined ? runMs : this.averageRunMs * 0.9 + runMs * 0.1;
    this.deps.metrics?.duration.observe({ task: job.task }, runMs / 1000);
    if (run.abandoned) return;
    await this.flushProgress(run);
    if (outcome.ok) {
      const serialised = serialiseResult(outcome.result, this.options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES);
      if (typeof serialised === 'string') {
        this.succeeded.push({ id: job.id, attempt: job.attempt, resultJson: serialised, startedAt: startedAtDate });
        this.deps.metrics?.jobs.inc({ task: job.task, outcome: 'succeeded' });
        return;
      }
      outcome = { ok: false, error: serialised };
    }
    await this.persist(() => this.settleFailure(job, outcome.error, log));
  }

  private async settleFailure(job: ClaimedJob, error: unknown, log: () => Logger): Promise<void> {
    const workerId = this.deps.presence.workerId!;
    const message = describeError(error).slice(0, 10_000);
    const permanent = error instanceof PermanentError;
    if (!permanent && job.delivery === 'at_least_once' && job.attempt < job.maxAttempts) {
      const delayMs = this.retryDelay(job.attempt);
      if (await q.retryJob(this.deps.pool, workerId, job.id, job.attempt, message, delayMs)) {
        log().info({ err: message, retryInMs: delayMs }, 'job failed; will retry');
        this.deps.metrics?.jobs.inc({ task: job.task, outcome: 'retried' });
        return;
      }
    }
    const moved = await q.finishJobs(this.deps.pool, workerId, [{ id: job.id, attempt: job.attempt, state: 'failed', error: message }]);
    const outcome = error instanceof CancelledError ? 'cancelled' : 'failed';
    if (moved.length > 0) {
      log().warn({ err: message }, outcome === 'cancelled' ? 'job cancelled' : 'job failed for good');
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

function signalOf(run: Running): AbortSignal {
  if (!run.controller) {
    run.controller = new AbortController();
    if (run.abortReason !== undefined) run.controller.abort(run.abortReason);
  }
  return run.controller.signal;
}

function abort(run: Running, reason: unknown): void {
  run.abortReason = reason;
  run.controller?.abort(reason);
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
