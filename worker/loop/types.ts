import type { Clock } from '../clock.ts';
import type { StatementHealth } from '../local-faults.ts';
import type { Logger } from '../logger.ts';
import type { WorkerMetrics } from '../metrics.ts';
import type { TaskRegistry } from '../tasks/types.ts';
import type { ThreadPool } from '../thread-pool.ts';
import type { LoopDatabase } from './database.ts';

/** What the loop needs to know of the worker's presence connection. */
export interface PresenceView {
  readonly workerId: string | undefined;
  readonly ready: boolean;
  /**
   * Whether the worker's own lease holds (its last acknowledged heartbeat is recent enough):
   * no job starts and no claim goes out while it does not. Absent means always.
   */
  readonly leaseValid?: boolean;
  whenReady(): Promise<void>;
}

/** Everything the loop uses from outside, handed in so tests can drive it. */
export interface WorkerDeps {
  readonly db: LoopDatabase;
  readonly presence: PresenceView;
  readonly tasks: TaskRegistry;
  readonly threads: ThreadPool;
  readonly logger: Logger;
  readonly metrics?: WorkerMetrics;
  /** Monotonic clock for every wait and deadline (default: performance.now and timers). */
  readonly clock?: Clock;
  /** Source of randomness for retry jitter (tests pin it). */
  readonly random?: () => number;
  /** Told how each claim and record statement ended, for /healthz. */
  readonly statements?: StatementHealth;
}

export interface WorkerOptions {
  readonly concurrency: number;
  readonly batchSize: number;
  readonly queues: readonly string[] | null;
  readonly pollMs: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** Most result bytes one settle carries (default 4 MiB). */
  readonly maxSettleBytes?: number;
  /** Largest JSON result kept; a bigger one fails the run (default 1 MiB). */
  readonly maxResultBytes?: number;
  /** About how much work (ms) the prefetch buffer holds; see PrefetchOptions (default 50 ms). */
  readonly prefetchHorizonMs?: number;
  /** Most jobs held in the prefetch buffer (default 2000: two full claims can be in flight). */
  readonly maxPrefetch?: number;
  /** Most payload bytes (as stored) held in the prefetch buffer (default 16 MiB). */
  readonly maxPrefetchBytes?: number;
  /** Round trips in flight at once (default 1); at most the pool size. */
  readonly pipeline?: number;
  /**
   * After a claim fails without a reply, how long its number is sent with every reconciliation
   * (default 30 s; the runtime uses a lease plus the statement timeout): a statement can commit
   * after its client gave up.
   */
  readonly failedClaimWindowMs?: number;
  /** Reconcile at least this often (default 15 s; the runtime uses the lease): the backstop for lost commits. */
  readonly reconcileEveryMs?: number;
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
  /**
   * Jobs whose outcome or hand-back the database never acknowledged before the stop deadline:
   * they stay `running` under this worker until maintenance finds it gone.
   */
  readonly unrecorded: string[];
}

