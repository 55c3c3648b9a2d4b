/** Statements on one job by id: read it (live or finished) and cancel it. */
import type { Delivery, Job, JobState } from '../types.ts';
import { moveToHistory, type Queryable } from './shared.ts';

/**
 * Cancel a job. A queued job moves to the history as `cancelled` at once; a running one is
 * flagged, its worker aborts it at the next heartbeat, and it ends `cancelled` (also when its
 * worker dies or stops: it is never queued again). Returns the state the job is in afterwards,
 * or null when there is no such job.
 *
 * The statement reads one snapshot: racing a claim, retry or settle that changed the row while
 * it waited for the row's lock, it matches neither the queued nor the running row and finds no
 * history yet. It is then sent again, with a new snapshot, for as long as the job exists.
 */
export async function cancelJob(db: Queryable, id: string): Promise<JobState | null> {
  for (;;) {
    const { rows } = await db.query<{ state: JobState | null }>(
      `with done as (
          delete from pgq.jobs j where j.id = $1 and j.state = 'queued'
          returning j.*, 'cancelled'::text as final_state, null::jsonb as final_result, null::text as final_error,
                    null::timestamptz as final_started),
        moved as (${moveToHistory()}),
        flagged as (
          update pgq.jobs set cancel_requested = true where id = $1 and state = 'running' returning id)
        select coalesce(
          (select 'cancelled' from moved),
          (select 'running' from flagged),
          (select state from pgq.finished_jobs where id = $1)) as state`,
      [id],
    );
    const state = rows[0]?.state ?? null;
    if (state !== null) return state;
    const again = await db.query<{ live: boolean }>(
      `select exists (select 1 from pgq.jobs where id = $1) or exists (select 1 from pgq.finished_jobs where id = $1) as live`,
      [id],
    );
    if (!again.rows[0]!.live) return null;
  }
}

interface JobRow {
  id: string;
  queue: string;
  task: string;
  payload: unknown;
  priority: number;
  state: JobState;
  attempts: number;
  max_attempts: number;
  delivery: Delivery;
  idempotency_key: string | null;
  result: unknown;
  error: string | null;
  progress: unknown;
  worker_id: string | null;
  created_at: Date;
  run_after: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

/** One job by id, live or finished. */
export async function getJob(db: Queryable, id: string): Promise<Job | null> {
  const { rows } = await db.query<JobRow>(
    `select id::text, queue, task, payload, priority, state, attempts, max_attempts, delivery, idempotency_key,
            result, error, progress, worker_id::text, created_at, run_after, started_at, finished_at
       from pgq.all_jobs where id = $1`,
    [id],
  );
  const r = rows[0];
  if (!r) return null;
  return {
    id: r.id,
    queue: r.queue,
    task: r.task,
    payload: r.payload,
    priority: r.priority,
    state: r.state,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    delivery: r.delivery,
    idempotencyKey: r.idempotency_key,
    result: r.result,
    error: r.error,
    progress: r.progress,
    workerId: r.worker_id,
    createdAt: r.created_at,
    runAfter: r.run_after,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
  };
}
