/**
 * The run path: one round trip that records successes and claims more, then retry, finish,
 * hand-back and progress, each matched on the run (job id, attempt, worker) it belongs to.
 */
import type { ClaimedJob, JobState } from '../types.ts';
import { CLAIMED_COLUMNS, moveToHistory, notify, queuedPriorities, toClaimed, type ClaimedRow, type Queryable } from './shared.ts';

/** One run of a job: its id, its attempt number and the claim (under the worker's incarnation) that began it. */
export interface RunRef {
  id: string;
  attempt: number;
  claimSeq: number;
  /**
   * When the job was enqueued. After a promotion that lost commits, a job id can be given again
   * to another job: the failover's take-back matches this too, so it never takes that one.
   */
  createdAt?: Date;
}

/** A finished run to record, with its result. */
export interface Succeeded extends RunRef {
  /** When the handler started (later than the claim for a job that waited in the buffer). */
  startedAt: Date;
  /** The result, already serialised to JSON. */
  resultJson: string;
}

/**
 * The outcomes as one JSON object keyed by job id: {"id": [startedAtMs, result, claim]}.
 * The statement looks each deleted row up by key; a join against unnest() arrays instead was
 * planned as a nested loop (batch x batch comparisons) whenever the table statistics were stale,
 * which they are right after a burst fills an empty queue.
 */
function outcomesJson(succeeded: Succeeded[]): string {
  return `{${succeeded.map((s) => `"${s.id}":[${s.startedAt.getTime()},${s.resultJson},${s.claimSeq}]`).join(',')}}`;
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
 * A worker whose row is gone (declared dead) claims nothing until it registers again. The
 * claimed rows carry the claim's number `claimSeq`: with the worker id, the runs' fencing token.
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
  claimSeq: number,
  succeeded: Succeeded[],
  limit: number,
  queues: readonly string[] | null,
): Promise<SettleAndClaimResult> {
  const { rows } = await db.query<ClaimedRow & { settled: string[] }>({
    name: queues ? 'pgq_settle_claim_queues' : 'pgq_settle_claim',
    text: `with recursive done as (
        delete from pgq.jobs j
         where j.id = any($2::bigint[]) and j.worker_id = $1 and j.state = 'running'
           -- The token (worker, claim) names the run: no attempt number is needed beside it.
           and j.claim_seq = ($3::jsonb -> (j.id::text) ->> 2)::bigint
        returning j.*, 'succeeded'::text as final_state, $3::jsonb -> (j.id::text) -> 1 as final_result,
                  null::text as final_error,
                  to_timestamp(($3::jsonb -> (j.id::text) ->> 0)::float8 / 1000) as final_started),
      moved as (${moveToHistory()}),
      ${queuedPriorities(queues ? 'and queue = any($5::text[])' : '', 'exists (select 1 from pgq.workers where id = $1)')},
      candidates as (
        select c.id from priorities, lateral (
          select id from pgq.jobs
           where state = 'queued' and priority = priorities.p and run_after <= now()
             and (expires_at is null or expires_at > now())
             ${queues ? 'and queue = any($5::text[])' : ''}
           order by run_after, id
           limit $4
           for update skip locked) c
         where priorities.p is not null
         limit $4),
      claimed as (
        update pgq.jobs j
           set state = 'running', worker_id = $1, claim_seq = $${queues ? 6 : 5}, attempts = j.attempts + 1, started_at = now()
         where j.id = any(array(select id from candidates))
        returning ${CLAIMED_COLUMNS})
      -- The settled ids ride on the first row only: repeated on every claimed row they would make
      -- the client parse batch x batch array elements. An UPDATE returns its rows in no
      -- particular order; they come back in the claim's, which is the order they start in.
      select case when c.n is null or c.n = 1 then s.settled end as settled, c.*
        from (select coalesce(array_agg(id), '{}')::text[] as settled from moved) s
        left join (select *, row_number() over (order by priority desc, run_after_ms, id::bigint) as n from claimed) c on true
       order by c.n`,
    values: [
      workerId,
      succeeded.map((s) => s.id),
      outcomesJson(succeeded),
      limit,
      ...(queues ? [queues] : []),
      claimSeq,
    ],
  });
  return {
    settled: rows[0]?.settled ?? [],
    claimed: rows.filter((r) => r.id !== null).map((r) => toClaimed(r, workerId, claimSeq)),
  };
}

/**
 * What an outcome statement says of each run it carried: recorded now, recorded already by this
 * very token (a resend after a lost reply), or not this run's to record (the job was taken away).
 */
export type Answer = 'recorded' | 'already' | 'not-yours';

/**
 * Put a failed run back in the queue to run again after `delayMs`. `refused` when the job must
 * not be retried after all (its cancel was requested, or the run is no longer the job's
 * current one): the caller finishes it instead, and that statement answers whose it was.
 */
export async function retryJob(
  db: Queryable,
  workerId: string,
  run: RunRef,
  error: string,
  delayMs: number,
): Promise<'recorded' | 'already' | 'refused'> {
  const { rows } = await db.query<{ answer: 'recorded' | 'already' | 'refused' }>(
    `with retried as (
        update pgq.jobs
           set state = 'queued', worker_id = null, claim_seq = null, retried_by = $1::bigint::text || ':' || $6::bigint,
               last_error = $4, run_after = now() + make_interval(secs => $5::double precision / 1000)
         where id = $2 and worker_id = $1 and claim_seq = $6 and attempts = $3 and state = 'running' and not cancel_requested
        returning id)
      -- Read in the statement's snapshot, before the update: only a resend finds its own token.
      select case when exists (select 1 from retried) then 'recorded'
                  when exists (select 1 from pgq.jobs where id = $2 and retried_by = $1::bigint::text || ':' || $6::bigint) then 'already'
                  else 'refused' end as answer`,
    [workerId, run.id, run.attempt, error, delayMs, run.claimSeq],
  );
  return rows[0]!.answer;
}

/** A run that ended for good, with the state it ends in. */
export interface Finished extends RunRef {
  state: Exclude<JobState, 'queued' | 'running'>;
  error: string | null;
}

/** Move runs of this worker to the history in a final state. Returns the ids moved. */
export async function finishJobs(db: Queryable, workerId: string, finished: Finished[]): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `with done as (
        delete from pgq.jobs j
         using unnest($2::bigint[], $3::int[], $4::text[], $5::text[], $6::bigint[]) as d(id, attempt, state, error, claim_seq)
         where j.id = any($2::bigint[]) and j.id = d.id and j.claim_seq = d.claim_seq and j.attempts = d.attempt
           and j.worker_id = $1 and j.state = 'running'
        returning j.*, d.state as final_state, null::jsonb as final_result, d.error as final_error,
                  null::timestamptz as final_started)
      ${moveToHistory('text')}`,
    [
      workerId,
      finished.map((f) => f.id),
      finished.map((f) => f.attempt),
      finished.map((f) => f.state),
      finished.map((f) => f.error),
      finished.map((f) => f.claimSeq),
    ],
  );
  return rows.map((r) => r.id);
}

/**
 * Give runs back to the queue at once (a stopping worker), without counting the run as an
 * attempt: the job did not fail, its worker left. Started jobs go back only if at-least-once;
 * jobs that never left the worker's prefetch buffer go back whatever their delivery.
 */
export async function handBack(db: Queryable, workerId: string, started: RunRef[], notStarted: RunRef[] = []): Promise<string[]> {
  const runs = [...started, ...notStarted];
  const { rows } = await db.query<{ id: string }>(
    `with mine as (
        select r.id, r.claim_seq, r.started from unnest($2::bigint[], $3::bigint[], $4::boolean[]) as r(id, claim_seq, started)),
      ${CANCELLED_ON_RELEASE('(j.id, j.claim_seq) in (select id, claim_seq from mine)')}
      update pgq.jobs j
        set state = 'queued', worker_id = null, claim_seq = null, attempts = j.attempts - 1, started_at = null, run_after = now()
       from mine m
      where j.id = m.id and j.claim_seq = m.claim_seq and j.worker_id = $1 and j.state = 'running' and not j.cancel_requested
        and (not m.started or j.delivery = 'at_least_once')
      returning j.id::text`,
    [workerId, runs.map((r) => r.id), runs.map((r) => r.claimSeq), runs.map((_, i) => i < started.length)],
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
export async function setProgress(db: Queryable, workerId: string, run: RunRef, progress: unknown): Promise<boolean> {
  const { rowCount } = await db.query(
    `update pgq.jobs set progress = $4 where id = $2 and claim_seq = $5 and attempts = $3 and worker_id = $1 and state = 'running'`,
    [workerId, run.id, run.attempt, JSON.stringify(progress ?? null), run.claimSeq],
  );
  return rowCount === 1;
}

