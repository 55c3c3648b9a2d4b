import type { WorkerMetrics } from '../metrics.ts';
import type { LoopDatabase } from './database.ts';
import type { Run } from './execute.ts';

/** Runs a record statement through transient errors until the stop's deadline; undefined if it never got through. */
export type Recorder = <T>(statement: () => Promise<T>) => Promise<T | undefined>;

/**
 * Runs still going when a stopping worker's grace period ran out: at-least-once jobs go back to
 * the queue at once (another worker starts them without waiting for a lease); at-most-once ones
 * end failed, since their handler may have done part of its work and must not run again.
 */
export async function releaseUnfinished(
  db: LoopDatabase,
  workerId: string,
  left: readonly Run[],
  record: Recorder,
  metrics?: WorkerMetrics,
): Promise<{ handedBack: string[]; failed: string[]; unrecorded: string[] }> {
  const atLeastOnce = left.filter((r) => r.job.delivery === 'at_least_once').map((r) => r.job);
  const atMostOnce = left.filter((r) => r.job.delivery === 'at_most_once');
  const unrecorded: string[] = [];
  let handedBack: string[] = [];
  if (atLeastOnce.length > 0) {
    const back = await record(() => db.handBack(workerId, atLeastOnce));
    if (back === undefined) unrecorded.push(...atLeastOnce.map((j) => j.id));
    handedBack = back ?? [];
    for (const run of left) {
      if (handedBack.includes(run.job.id)) metrics?.jobEnded(run.job.task, 'handed_back');
    }
  }
  let failed: string[] = [];
  if (atMostOnce.length > 0) {
    const ended = await record(() => db.finish(
      workerId,
      atMostOnce.map((r) => ({
        id: r.job.id,
        attempt: r.job.attempt,
        claimSeq: r.job.claimSeq,
        state: 'failed' as const,
        error: 'the worker stopped before this at-most-once job finished; it is not run again',
      })),
    ));
    if (ended === undefined) unrecorded.push(...atMostOnce.map((r) => r.job.id));
    failed = ended ?? [];
  }
  return { handedBack, failed, unrecorded };
}
