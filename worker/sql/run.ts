/**
 * The run path: one round trip that records successes and claims more, then retry, finish,
 * hand-back and progress, each matched on the run (job id, attempt, worker) it belongs to.
 */
import type { ClaimedJob, JobState } from '../types.ts';
import { CLAIMED_COLUMNS, moveToHistory, notify, toClaimed, type ClaimedRow, type Queryable } from './shared.ts';

/** A finished run to record: the job, which run it was, and its result. */
export interface Succeeded {
  id: string;
  attempt: number;
  /** When the handler started (later than the claim for a job that waited in the buffer). */
  startedAt: Date;
  /** The result, already serialised to JSON. */
  resultJson: string;
}

/**
 * The outcomes as one JSON object keyed by job id: {"id": [attempt, startedAtMs, result]}. The
 * statement looks each deleted row up by key; a join against unnest() arrays instead was planned
 * as a nested loop (batch x batch comparisons) whenever the table statistics were stale, which
 * they are right after a burst fills an empty queue.
 */
function outcomesJson(succeeded: Succeeded[]): string {
  return `{${succeeded.map((s) => `"${s.id}":[${s.attempt},${s.startedAt.getTime()},${s.resultJson}]`).join(',')}}`;
}

export interface SettleAndClaimResult {
  /** Ids that were recorded as finished; the others had been taken from this worker meanwhile. */
  settled: string[];
  claimed: ClaimedJob[];
}

/**
 * The worker's one round trip: record the jobs that succeeded since the last call and claim up
 * to `limit` more. Claiming takes the next due, unexpired jobs by priority then run-after with
 * FOR UPDATE SKIP LOCKED, so concurrent workers never wait on each other or take the same job.
 * A worker whose row is gone (declared dead) claims nothing until it registers again.
 *
 * Why one statement: settling and claiming together costs one commit and one round trip per
 * batch, and claiming short jobs ahead keeps slots busy while the next batch is on the wire.
 * The settled ids ride once, on the first row, and the outcomes are looked up by key; the
 * alternatives measured (separate statements, ids on every row, a join against unnest()) and
 * their figures are in BENCHMARKS.md ("Claim path designs").
 */
export async function settleAndClaim(
  db: Queryable,
  workerId: string,
  succeeded: Succeeded[],
  limit: number,
  queues: readonly string[] | null,
): Promise<SettleAndClaimResult> {
  const { rows } = await db.query<ClaimedRow & { settled: string[] }>({
    name: queues ? 'pgq_settle_claim_queues' : 'pgq_settle_claim',
    text: `with done as (
        delete from pgq.jobs j
         where j.id = any($2::bigint[]) and j.worker_id = $1 and j.state = 'running'
           and j.attempts = ($3::jsonb -> (j.id::text) ->> 0)::int
        returning j.*, 'succeeded'::text as final_state, $3::jsonb -> (j.id::text) -> 2 as final_result,
                  null::text as final_error,
                  to_timestamp(($3::jsonb -> (j.id::text) ->> 1)::float8 / 1000) as final_started),
      moved as (${moveToHistory()}),
      candidates as (
        select id from pgq.jobs
         where state = 'queued' and run_after <= now() and (expires_at is null or expires_at > now())
           ${queues ? 'and queue = any($5::text[])' : ''}
           and exists (select 1 from pgq.workers where id = $1)
         order by priority desc, run_after, id
         limit $4
         for update skip locked),
      claimed as (
        update pgq.jobs j
           set state = 'running', worker_id = $1, attempts = j.attempts + 1, started_at = now()
         where j.id = any(array(select id from candidates))
        returning ${CLAIMED_COLUMNS})
      -- The settled ids ride on the first row only: repeated on every claimed row they would make
      -- the client parse batch x batch array elements.
      select case when c.n is null or c.n = 1 then s.settled end as settled, c.*
        from (select coalesce(array_agg(id), '{}')::text[] as settled from moved) s
        left join (select *, row_number() over () as n from claimed) c on true`,
    values: [
      workerId,
      succeeded.map((s) => s.id),
      outcomesJson(succeeded),
      limit,
      ...(queues ? [queues] : []),
    ],
  });
  return {
    settled: rows[0]?.settled ?? [],
    claimed: rows.filter((r) => r.id !== null).map(toClaimed),
  };
}

/**
 * Put a failed run back in the queue to run again after `delayMs`. Returns false when the job
 * must not be retried after all (its cancel was requested, or it is no longer this run's).
 */
export async function retryJob(
  db: Queryable,
  workerId: string,
  id: string,
  attempt: number,
  error: string,
  delayMs: number,
): Promise<boolean> {
  const { rowCount } = await db.query(
    `update pgq.jobs
        set state = 'queued', worker_id = null, last_error = $4,
            run_after = now() + make_interval(secs => $5::double precision / 1000)
      where id = $2 and attempts = $3 and worker_id = $1 and state = 'running' and not cancel_requested`,
    [workerId, id, attempt, error, delayMs],
  );
  return rowCount === 1;
}

/** A run that ended for good, with the state it ends in. */
export interface Finished {
  id: string;
  attempt: number;
  state: Exclude<JobState, 'queued' | 'running'>;
  error: string | null;
}

/** Move runs of this worker to the history in a final state. Returns the ids moved. */
export async function finishJobs(db: Queryable, workerId: string, finished: Finished[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `with done as (
        delete from pgq.jobs j
         using unnest($2::bigint[], $3::int[], $4::text[], $5::text[]) as d(id, attempt, state, error)
         where j.id = any($2::bigint[]) and j.id = d.id and j.attempts = d.attempt and j.worker_id = $1 and j.state = 'running'
        returning j.*, d.state as final_state, null::jsonb as final_result, d.error as final_error,
                  null::timestamptz as final_started)
      ${moveToHistory('text')}`,
    [workerId, finished.map((f) => f.id), finished.map((f) => f.attempt), finished.map((f) => f.state), finished.map((f) => f.error)],
  );
  return rows.map((r) => r.id);
}

/**
 * Give jobs back to the queue at once (a stopping worker), without counting the run as an
 * attempt: the job did not fail, its worker left. Started jobs go back only if at-least-once;
 * jobs that never left the worker's prefetch buffer go back whatever their delivery.
 */
export async function handBack(db: Queryable, workerId: string, started: string[], notStarted: string[] = []): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `with ${CANCELLED_ON_RELEASE('(j.id = any($2::bigint[]) or j.id = any($3::bigint[]))')}
      update pgq.jobs
        set state = 'queued', worker_id = null, attempts = attempts - 1, started_at = null, run_after = now()
      where worker_id = $1 and state = 'running' and not cancel_requested
        and ((id = any($2::bigint[]) and delivery = 'at_least_once') or id = any($3::bigint[]))
      returning id::text`,
    [workerId, started, notStarted],
  );
  if (rows.length > 0) await notify(db);
  return rows.map((r) => r.id);
}

/**
 * The head of a statement that releases jobs of worker $1: those of them (matching `which`) whose
 * cancel was requested end `cancelled` in the history instead of going back to the queue.
 */
const CANCELLED_ON_RELEASE = (which: string) => `done as (
        delete from pgq.jobs j
         where j.worker_id = $1 and j.state = 'running' and j.cancel_requested and ${which}
        returning j.*, 'cancelled'::text as final_state, null::jsonb as final_result,
                  'cancelled; its worker let go of it before it ended' as final_error, null::timestamptz as final_started),
      moved as (${moveToHistory()})`;

/** Store a running job's progress report, readable while it runs. */
export async function setProgress(db: Queryable, workerId: string, id: string, attempt: number, progress: unknown): Promise<boolean> {
  const { rowCount } = await db.query(
    `update pgq.jobs set progress = $4 where id = $2 and attempts = $3 and worker_id = $1 and state = 'running'`,
    [workerId, id, attempt, JSON.stringify(progress ?? null)],
  );
  return rowCount === 1;
}

/**
 * Give back every job the database says this worker runs but the worker does not hold: the
 * claims whose reply never reached it (the server committed, then the connection broke). They
 * never started here, so the attempt is restored whatever their delivery. Call it only while no
 * claim of this worker is in flight, or a claim still on the wire would be taken back.
 */
export async function releaseUnheld(db: Queryable, workerId: string, held: string[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `with ${CANCELLED_ON_RELEASE('j.id <> all($2::bigint[])')}
      update pgq.jobs
        set state = 'queued', worker_id = null, attempts = attempts - 1, started_at = null
      where worker_id = $1 and state = 'running' and id <> all($2::bigint[]) and not cancel_requested
      returning id::text`,
    [workerId, held],
  );
  if (rows.length > 0) await notify(db);
  return rows.map((r) => r.id);
}

/**
 * Which of these runs are in the history as recorded by this worker: a record sent again after
 * its reply was lost finds its job gone from the hot table, and is not a job taken away.
 */
export async function recordedBy(db: Queryable, workerId: string, runs: { id: string; attempt: number }[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `select f.id::text from pgq.finished_jobs f
       join unnest($2::bigint[], $3::int[]) as r(id, attempt) on r.id = f.id
      where f.worker_id = $1 and f.attempts = r.attempt`,
    [workerId, runs.map((r) => r.id), runs.map((r) => r.attempt)],
  );
  return rows.map((r) => r.id);
}
