/**
 * The database operations the worker loop is handed. The loop never sees SQL or a pool: tests
 * drive it with a fake, or with the real operations wrapped in a reply gate.
 */
import type pg from 'pg';
import * as ownership from '../sql/ownership.ts';
import * as run from '../sql/run.ts';

export type { Succeeded, SettleAndClaimResult, Finished, RunRef } from '../sql/run.ts';
export type { LateOutcome, ReclaimResult, ReconcileRequest, ReconcileResult } from '../sql/ownership.ts';

export interface LoopDatabase {
  /** Record successes and claim up to `limit` more under claim number `claimSeq`, in one round trip. */
  settleAndClaim(workerId: string, claimSeq: number, succeeded: run.Succeeded[], limit: number, queues: readonly string[] | null): Promise<run.SettleAndClaimResult>;
  /** Put a failed run back in the queue after `delayMs`; `refused` when it must be finished instead. */
  retry(workerId: string, ref: run.RunRef, error: string, delayMs: number): Promise<'recorded' | 'already' | 'refused'>;
  /** Move runs to the history in a final state; returns the ids moved. */
  finish(workerId: string, finished: run.Finished[]): Promise<string[]>;
  /** Give runs back to the queue without counting the attempt; returns the ids given back. */
  handBack(workerId: string, started: run.RunRef[], notStarted?: run.RunRef[]): Promise<string[]>;
  /** Settle what the database says this worker runs and the worker does not hold. */
  reconcile(workerId: string, request: ownership.ReconcileRequest): Promise<ownership.ReconcileResult>;
  /** For outcomes that found no running job: recorded already by the same token, or replacing "outcome unknown". */
  answerUnrecorded(workerId: string, outcomes: ownership.LateOutcome[]): Promise<Map<string, 'already' | 'replaced'>>;
  /** After a failover: take back, under their own tokens, runs that came back queued. */
  reclaimRuns(workerId: string, runs: run.RunRef[]): Promise<ownership.ReclaimResult>;
  /** Store a running job's progress. */
  setProgress(workerId: string, ref: run.RunRef, progress: unknown): Promise<boolean>;
}

/** The real operations, on a pool. */
export function poolDatabase(pool: pg.Pool): LoopDatabase {
  return {
    settleAndClaim: (workerId, claimSeq, succeeded, limit, queues) => run.settleAndClaim(pool, workerId, claimSeq, succeeded, limit, queues),
    retry: (workerId, ref, error, delayMs) => run.retryJob(pool, workerId, ref, error, delayMs),
    finish: (workerId, finished) => run.finishJobs(pool, workerId, finished),
    handBack: (workerId, started, notStarted) => run.handBack(pool, workerId, started, notStarted),
    reconcile: (workerId, request) => ownership.reconcile(pool, workerId, request),
    answerUnrecorded: (workerId, outcomes) => ownership.answerUnrecorded(pool, workerId, outcomes),
    reclaimRuns: (workerId, runs) => ownership.reclaimRuns(pool, workerId, runs),
    setProgress: (workerId, ref, progress) => run.setProgress(pool, workerId, ref, progress),
  };
}
