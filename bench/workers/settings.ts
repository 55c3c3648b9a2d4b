/**
 * How each system's worker is configured in the throughput and latency scenarios ("tuned") —
 * each one's fastest documented configuration at the same concurrency — and in the crash
 * scenario ("default": exactly what a user gets without tuning). Read by the worker entries
 * and printed in the report, so the table always says what was run.
 */

/** Jobs in flight per worker process in the tuned scenarios, for every system alike. */
export const CONCURRENCY = 16;

export const PGQUEUE_TUNED = {
  /** Only the concurrency is set: every other knob is measured at its default, as users get it. */
  env: { WORKER_CONCURRENCY: String(CONCURRENCY) },
  describe: `WORKER_CONCURRENCY=${CONCURRENCY}, every other setting at its default; enqueue through one shared pg.Pool (concurrent enqueue() calls share an INSERT)`,
};

export const GRAPHILE_TUNED = {
  concurrency: CONCURRENCY,
  /** graphile-worker's own sizing advice: 10 or concurrentJobs + 2, whichever is larger. */
  maxPoolSize: CONCURRENCY + 2,
  /**
   * The batching options of graphile-worker's performance page
   * (https://worker.graphile.org/docs/performance), whose quick stats were taken with
   * localQueue.size 500 and both batch delays 0.
   */
  preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
  describe: `concurrency ${CONCURRENCY}, maxPoolSize ${CONCURRENCY + 2}, localQueue.size 500, completeJobBatchDelay 0, failJobBatchDelay 0 (the batching setup of its performance page); enqueue with WorkerUtils.addJob / addJobs over a shared pool`,
};

/**
 * Jobs fetched per loop iteration, its documented lever for throughput. A loop sleeps out the
 * polling interval after a batch, so throughput is at most loops x batchSize / interval; but
 * every fetch also sorts the whole backlog, and bigger batches made that cost grow faster.
 * Drain of 50,000 jobs on this 2-core machine, 2026-11-26 (1 process / 2 processes, medians):
 * batchSize 100: 2,661 / 1,868 jobs/s (3 runs); 250: 3,004 / 1,355 (3 runs); 500: 1,432 / 753
 * (1 run); 1000: 1,048 / 547 (1 run). 250 drains fastest with one process.
 */
const PGBOSS_BATCH_SIZE = 250;

export const PGBOSS_TUNED = {
  /**
   * pg-boss 10 has no per-job concurrency (teamSize was removed): one work() call is one
   * fetch-handle-complete loop. CONCURRENCY loops give it the same parallelism as the others.
   */
  loops: CONCURRENCY,
  batchSize: PGBOSS_BATCH_SIZE,
  /** The smallest interval pg-boss accepts. */
  pollingIntervalSeconds: 0.5,
  poolMax: CONCURRENCY + 4,
  describe: `${CONCURRENCY} work() loops x batchSize ${PGBOSS_BATCH_SIZE} (the fastest in trials, see bench/workers/settings.ts), pollingIntervalSeconds 0.5 (its minimum), pool max ${CONCURRENCY + 4}; enqueue with send() / insert()`,
};

/** What "default" means for the crash scenario. */
export const DEFAULTS_DESCRIBED = {
  pgqueue: 'no settings (WORKER_LEASE_MS 15 s, WORKER_RESCUE_INTERVAL_MS 1 s, presence lock)',
  'graphile-worker': 'run() with defaults (a locked job is released after 4 h)',
  'pg-boss': 'work() with defaults (an active job expires after expireInSeconds, 15 min)',
};
