/**
 * How each system's worker is configured in the throughput and latency scenarios ("tuned") —
 * each one's fastest documented configuration at the same concurrency — and in the crash
 * scenario ("default": exactly what a user gets without tuning). Read by the worker entries
 * and printed in the report, so the table always says what was run.
 */
import type { ConstructorOptions, WorkOptions } from 'pg-boss';

/** Jobs in flight per worker process in the tuned scenarios, for every system alike. */
export const CONCURRENCY = 16;

export const PGQUEUE_TUNED = {
  /** Only the concurrency is set: every other knob is measured at its default, as users get it. */
  env: { WORKER_CONCURRENCY: String(CONCURRENCY) },
  describe: `WORKER_CONCURRENCY=${CONCURRENCY}, every other setting at its default; the image's NODE_OPTIONS (--max-semi-space-size=16, from the Dockerfile); enqueue through one shared pg.Pool (concurrent enqueue() calls share an INSERT)`,
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
 * Jobs fetched per loop iteration, its documented lever for throughput. With burstWhenBatchFull
 * a loop fetches again at once after a full batch, and fewer, bigger fetches drained faster;
 * with pg-boss 10, whose loops slept after every batch, 250 had been fastest. Drain of 50,000
 * jobs, this 2-core machine, Node 24, 2026-12-02, the settings below, 3 runs each, medians for
 * 1 process / 2 processes: batchSize 250: 8,779 / 8,091 jobs/s; 500: 13,712 / 10,929; 1000:
 * 15,833 / 15,644; 2000: 15,617 / 13,204. An earlier trial with LISTEN/NOTIFY on (which a
 * pre-filled drain does not use) gave 100: 6,466 / 5,777; 1000: 14,715 / 14,029; 2000: 18,730
 * / 21,504; and 250 without burstWhenBatchFull (1 run) 8,249 / 11,515. 1000 it is: fastest with
 * these settings, and the largest size at which two processes' loops together hold fewer jobs
 * (2 x 16 x 1000) than the backlog; at 2000 the first process to start can take 32,000 of
 * the 50,000.
 */
const PGBOSS_BATCH_SIZE = 1000;

export const PGBOSS_TUNED = {
  /**
   * Polling only. pg-boss 12's LISTEN/NOTIFY (useListenNotify, a queue with `notify`) was tried
   * and is slower here on both counts it touches, so it is not its fast configuration for this
   * load. Each NOTIFY wakes every one of the 16 loops (16 fetches for one job), and at 200
   * jobs/s the latency grew: one worker process, 400 jobs sent at 200/s over one connection (a
   * script of the latency scenario's shape, 2026-12-02), p50 / p95 1,224 / 2,088 ms with it
   * against 257 / 479 ms polling (8 / 39 ms with a single loop); the bench's own latency
   * scenario with it gave 519 / 1,182 ms. And Postgres queues a NOTIFY under one global lock
   * held through the commit, so notifying sends commit one at a time: 8 callers sent 474-496
   * jobs/s with it, 847-860 without.
   */
  instance: { max: CONCURRENCY + 4 },
  work: {
    /** pg-boss's own per-process concurrency: that many fetch-handle-complete loops. */
    localConcurrency: CONCURRENCY,
    batchSize: PGBOSS_BATCH_SIZE,
    /** A loop that fetched a full batch fetches again at once instead of sleeping out its poll. */
    burstWhenBatchFull: true,
    /** The smallest interval pg-boss accepts. */
    pollingIntervalSeconds: 0.5,
  },
  describe: `work() with localConcurrency ${CONCURRENCY} x batchSize ${PGBOSS_BATCH_SIZE} (chosen by a trial, see bench/workers/settings.ts), burstWhenBatchFull, pollingIntervalSeconds 0.5 (its minimum; LISTEN/NOTIFY tried and slower, see there), pool max ${CONCURRENCY + 4}; enqueue with send() / insert()`,
} satisfies { instance: ConstructorOptions; work: WorkOptions; describe: string };

/** What "default" means for the crash scenario. */
export const DEFAULTS_DESCRIBED = {
  pgqueue: 'no settings (WORKER_LEASE_MS 15 s, WORKER_RESCUE_INTERVAL_MS 1 s, presence lock)',
  'graphile-worker': 'run() with defaults (a locked job is released after 4 h)',
  'pg-boss': 'work() with defaults (an active job expires after expireInSeconds, 15 min)',
};
