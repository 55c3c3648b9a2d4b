import type { WorkerMetrics } from '../metrics.ts';
import type { LoopDatabase } from './database.ts';
import type { Run } from './execute.ts';

/**
 * Runs still going when a stopping worker's grace period ran out: at-least-once jobs go back to
 * the queue at once (another worker starts them without waiting for a lease); at-most-once ones
 * end failed, since their handler may have done part of its work and must not run again.
 */
export async function releaseUnfinished(
  db: LoopDatabase,
  workerId: string,
  left: readonly Run[],
  metrics?: WorkerMetrics,
): Promise<{ handedBack: string[]; failed: string[] }> {
  const atLeastOnce = left.filter((r) => r.job.delivery === 'at_least_once').map((r) => r.job.id);
  const atMostOnce = left.filter((r) => r.job.delivery === 'at_most_once');
  let handedBack: string[] = [];
  if (atLeastOnce.length > 0) {
    handedBack = await db.handBack(workerId, atLeastOnce);
    for (const run of left) {
      if (handedBack.includes(run.job.id)) metrics?.jobs.inc({ task: run.job.task, outcome: 'handed_back' });
    }
  }
  let failed: string[] = [];
  if (atMostOnce.length > 0) {
    failed = await db.finish(
      workerId,
      atMostOnce.map((r) => ({
        id: r.job.id,
        attempt: r.job.attempt,
        state: 'failed' as const,
        error: 'the worker stopped before this at-most-once job finished; it is not run again',
      })),
    );
  }
  return { handedBack, failed };
}
