/**
 * What the statement files share: the query target, the move of finished rows to the history,
 * and the columns a claim returns.
 */
import type pg from 'pg';
import type { ClaimedJob, Delivery } from '../types.ts';

/** A pool, a pool client or a plain client: anything that runs a query. */
export type Queryable = Pick<pg.ClientBase, 'query'>;

/** The channel workers LISTEN on; the payload is a queue name, or empty for "any queue". */
export const JOBS_CHANNEL = 'pgq_jobs';

/**
 * The tail of a statement that moves the rows of a CTE named `done` (jobs deleted from the hot
 * table, with final_state, final_result, final_error and final_started attached) into the
 * history, returning their ids as `idType` (bigint for a CTE that a statement aggregates, text
 * for ids handed to the caller). final_started is when the handler really started, for jobs that
 * waited in a worker's prefetch buffer after their claim. A job whose cancel was requested ends
 * `cancelled` whatever happened.
 */
export function moveToHistory(idType: 'bigint' | 'text' = 'bigint'): string {
  return `
  insert into pgq.finished_jobs (id, queue, task, payload, priority, state, attempts, max_attempts, delivery,
                                 idempotency_key, result, error, progress, worker_id, claim_seq, created_at, run_after, started_at)
  select id, queue, task, payload, priority,
         case when cancel_requested then 'cancelled' else final_state end,
         attempts, max_attempts, delivery, idempotency_key, final_result, final_error, progress, worker_id,
         claim_seq, created_at, run_after, coalesce(final_started, started_at)
    from done
  returning ${idType === 'text' ? 'id::text' : 'id'}`;
}

// Times as epoch milliseconds: a number is parsed far faster than a timestamp string, and a
// claim returns hundreds of rows at a time.
export const CLAIMED_COLUMNS = `j.id::text, j.queue, j.task, j.payload, j.priority, j.attempts, j.max_attempts, j.delivery,
                         (extract(epoch from j.created_at) * 1000)::float8 as created_ms,
                         (extract(epoch from j.run_after) * 1000)::float8 as run_after_ms,
                         (extract(epoch from j.started_at) * 1000)::float8 as started_ms,
                         (extract(epoch from j.expires_at) * 1000)::float8 as expires_ms,
                         pg_column_size(j.payload) as payload_bytes`;

export interface ClaimedRow {
  id: string;
  queue: string;
  task: string;
  payload: unknown;
  priority: number;
  attempts: number;
  max_attempts: number;
  delivery: Delivery;
  created_ms: number;
  run_after_ms: number;
  started_ms: number;
  expires_ms: number | null;
  payload_bytes: number;
}

/** A claimed row as the job its worker runs, under the claim's token. */
export const toClaimed = (r: ClaimedRow, workerId: string, claimSeq: number): ClaimedJob => ({
  id: r.id,
  queue: r.queue,
  task: r.task,
  payload: r.payload,
  priority: r.priority,
  attempt: r.attempts,
  maxAttempts: r.max_attempts,
  delivery: r.delivery,
  createdAt: new Date(r.created_ms),
  runAfter: new Date(r.run_after_ms),
  startedAt: new Date(r.started_ms),
  expiresAt: r.expires_ms === null ? null : new Date(r.expires_ms),
  payloadBytes: r.payload_bytes,
  claimSeq,
  token: `${workerId}:${claimSeq}`,
});

/**
 * A recursive CTE `priorities(p)`: the priorities that have queued jobs (and match `filter`),
 * highest first, one index descent each, produced only as far as the query reads them. Within
 * one priority the due jobs come first in the claim index, so a range scan per priority stops at
 * the first job scheduled for later: without this, Postgres before 18 (no skip scan) walks every
 * scheduled job. `startIf` gates the whole walk (no row at all when false). Needs `with recursive`.
 */
export function queuedPriorities(filter = '', startIf = ''): string {
  return `priorities as (
        (select priority as p from pgq.jobs
          where state = 'queued' ${filter} ${startIf ? `and ${startIf}` : ''}
          order by priority desc limit 1)
        union all
        select (select priority from pgq.jobs
                 where state = 'queued' ${filter} and priority < prev.p
                 order by priority desc limit 1)
          from priorities prev where prev.p is not null)`;
}

/** Wake listening workers: jobs became due outside an insert (retries, hand-backs, rescues). */
export async function notify(db: Queryable, queue = ''): Promise<void> {
  await db.query('select pg_notify($1, $2)', [JOBS_CHANNEL, queue]);
}
