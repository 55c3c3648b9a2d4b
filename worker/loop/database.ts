/**
 * The database operations the worker loop is handed. The loop never sees SQL or a pool: tests
 * drive it with a fake, or with the real operations wrapped in a reply gate.
 */
import type pg from 'pg';
import * as run from '../sql/run.ts';

export type { Succeeded, SettleAndClaimResult, Finished } from '../sql/run.ts';

export interface LoopDatabase {
  /** Record successes and claim up to `limit` more, in one round trip. */
  settleAndClaim(workerId: string, succeeded: run.Succeeded[], limit: number, queues: readonly string[] | null): Promise<run.SettleAndClaimResult>;
  /** Put a failed run back in the queue after `delayMs`; false when it must not be retried. */
  retry(workerId: string, id: string, attempt: number, error: string, delayMs: number): Promise<boolean>;
  /** Move runs to the history in a final state; returns the ids moved. */
  finish(workerId: string, finished: run.Finished[]): Promise<string[]>;
  /** Give runs back to the queue without counting the attempt; returns the ids given back. */
  handBack(workerId: string, started: string[], notStarted?: string[]): Promise<string[]>;
  /** Give back the jobs the database says this worker runs but it does not hold (lost claim replies). */
  releaseUnheld(workerId: string, held: string[]): Promise<string[]>;
  /** Which of these runs this worker already recorded (a resend after a lost reply). */
  recordedBy(workerId: string, runs: { id: string; attempt: number }[]): Promise<string[]>;
  /** Store a running job's progress. */
  setProgress(workerId: string, id: string, attempt: number, progress: unknown): Promise<boolean>;
}

/** The real operations, on a pool. */
export function poolDatabase(pool: pg.Pool): LoopDatabase {
  return {
    settleAndClaim: (workerId, succeeded, limit, queues) => run.settleAndClaim(pool, workerId, succeeded, limit, queues),
    retry: (workerId, id, attempt, error, delayMs) => run.retryJob(pool, workerId, id, attempt, error, delayMs),
    finish: (workerId, finished) => run.finishJobs(pool, workerId, finished),
    handBack: (workerId, started, notStarted) => run.handBack(pool, workerId, started, notStarted),
    releaseUnheld: (workerId, held) => run.releaseUnheld(pool, workerId, held),
    setProgress: (workerId, id, attempt, progress) => run.setProgress(pool, workerId, id, attempt, progress),
    recordedBy: (workerId, runs) => run.recordedBy(pool, workerId, runs),
  };
}
