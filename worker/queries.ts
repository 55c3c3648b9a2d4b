/**
 * Every SQL statement of the queue, one named function each. Values always travel as $n
 * parameters; arrays go through unnest() so a batch is one statement and one round trip.
 */
import type pg from 'pg';
import { ADVISORY_CLASS, MAINTENANCE_LOCK } from './locks.ts';
import type { ClaimedJob, Delivery, Job, JobState } from './types.ts';

/** A pool, a pool client or a plain client: anything that runs a query. */
export type Queryable = Pick<pg.ClientBase, 'query'>;

/** The channel workers LISTEN on; the payload is a queue name, or empty for "any queue". */
export const JOBS_CHANNEL = 'pgq_jobs';

/** A job to insert, already validated and serialised. */
export interface NewJobRow {
  task: string;
  payload: string;
  queue: string;
  priority: number;
  runAfter: Date | null;
  expiresAt: Date | null;
  maxAttempts: number;
  delivery: Delivery;
  idempotencyKey: string | null;
}

const columns = (rows: NewJobRow[]) => [
  rows.map((r) => r.task),
  rows.map((r) => r.payload),
  rows.map((r) => r.queue),
  rows.map((r) => r.priority),
  rows.map((r) => r.runAfter),
  rows.map((r) => r.expiresAt),
  rows.map((r) => r.maxAttempts),
  rows.map((r) => r.delivery),
];

const INPUT = `select * from unnest($1::text[], $2::jsonb[], $3::text[], $4::int[], $5::timestamptz[],
                                    $6::timestamptz[], $7::int[], $8::text[])
                 with ordinality as t(task, payload, queue, priority, run_after, expires_at, max_attempts, delivery, ord)`;
const KEYED_INPUT = `select * from unnest($1::text[], $2::jsonb[], $3::text[], $4::int[], $5::timestamptz[],
                                    $6::timestamptz[], $7::int[], $8::text[], $9::text[])
                 with ordinality as t(task, payload, queue, priority, run_after, expires_at, max_attempts, delivery, key, ord)`;

/**
 * Insert jobs without idempotency keys. Identity values are drawn in the order rows are produced,
 * and rows are produced in input order, so the returned ids sorted ascending match the input.
 */
export async function insertJobs(db: Queryable, rows: NewJobRow[]): Promise<string[]> {
  const { rows: out } = await db.query<{ ids: string[] }>({
    name: 'pgq_insert_jobs',
    text: `with input as (${INPUT}),
      ins as (
        insert into pgq.jobs (task, payload, queue, priority, run_after, expires_at, max_attempts, delivery)
        select task, payload, queue, priority, coalesce(run_after, now()), expires_at, max_attempts, delivery
          from input order by ord
        returning id)
      select coalesce(array_agg(id order by id), '{}')::text[] as ids from ins`,
    values: columns(rows),
  });
  return out[0]!.ids;
}

/**
 * Insert jobs that carry idempotency keys. A key is claimed in pgq.job_keys first; only rows whose
 * key was free are inserted, with the id reserved for them. Returns, per input row, the job id
 * and whether it was created; a taken key yields the id of the job that holds it.
 */
export async function insertKeyedJobs(db: Queryable, rows: NewJobRow[]): Promise<{ id: string; created: boolean }[]> {
  const { rows: out } = await db.query<{ ord: string; id: string | null; created: boolean }>({
    name: 'pgq_insert_keyed_jobs',
    text: `with input as (
        select i.*, nextval(pg_get_serial_sequence('pgq.jobs', 'id')) as new_id from (${KEYED_INPUT}) i),
      keys as (
        insert into pgq.job_keys (key, job_id)
        select key, new_id from input order by ord
        on conflict (key) do nothing
        returning key, job_id),
      ins as (
        insert into pgq.jobs (id, task, payload, queue, priority, run_after, expires_at, max_attempts, delivery, idempotency_key)
        select i.new_id, i.task, i.payload, i.queue, i.priority, coalesce(i.run_after, now()), i.expires_at,
               i.max_attempts, i.delivery, i.key
          from input i join keys k on k.job_id = i.new_id
        returning id)
      select i.ord::text, coalesce(k.job_id, old.job_id)::text as id, k.job_id is not null as created
        from input i
        left join keys k on k.job_id = i.new_id
        left join pgq.job_keys old on old.key = i.key and k.job_id is null
       order by i.ord`,
    values: [...columns(rows), rows.map((r) => r.idempotencyKey)],
  });
  return out.map((r) => ({ id: r.id ?? '', created: r.created }));
}

/** Ids of jobs holding these keys (for keys that were taken by a transaction still in flight). */
export async function jobIdsForKeys(db: Queryable, keys: string[]): Promise<Map<string, string>> {
  const { rows } = await db.query<{ key: string; job_id: string }>(
    'select key, job_id::text from pgq.job_keys where key = any($1::text[])',
    [keys],
  );
  return new Map(rows.map((r) => [r.key, r.job_id]));
}

// Moves the rows of `done` (jobs deleted from the hot table, with final_state, final_result,
// final_error and final_started attached) into the history. final_started is when the handler
// really started, for jobs that waited in a worker's prefetch buffer after their claim. A job whose cancel was requested ends `cancelled` whatever happened.
const MOVE_TO_HISTORY = `
  insert into pgq.finished_jobs (id, queue, task, payload, priority, state, attempts, max_attempts, delivery,
                                 idempotency_key, result, error, progress, worker_id, created_at, run_after, started_at)
  select id, queue, task, payload, priority,
         case when cancel_requested then 'cancelled' else final_state end,
         attempts, max_attempts, delivery, idempotency_key, final_result, final_error, progress, worker_id,
         created_at, run_after, coalesce(final_started, started_at)
    from done
  returning id`;

// Times as epoch milliseconds: a number is parsed far faster than a timestamp string, and a
// claim returns hundreds of rows at a time.
const CLAIMED_COLUMNS = `j.id::text, j.queue, j.task, j.payload, j.priority, j.attempts, j.max_attempts, j.delivery,
                         (extract(epoch from j.created_at) * 1000)::float8 as created_ms,
                         (extract(epoch from j.run_after) * 1000)::float8 as run_after_ms,
                         (extract(epoch from j.started_at) * 1000)::float8 as started_ms,
                         (extract(epoch from j.expires_at) * 1000)::float8 as expires_ms`;

interface ClaimedRow {
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
}

const toClaimed = (r: ClaimedRow): ClaimedJob => ({
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
});

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
 * Designs measured for the drain, 50,000 short jobs, one worker process x concurrency 16, this
 * 2-core machine with fsync on (2026-11-26; BENCHMARKS.md has the full comparison):
 * - settle folded into the next claim, claiming only free slots (16): ~3,500 jobs/s, one commit
 *   per 16 jobs;
 * - plus claiming short jobs ahead (prefetch up to 2,000): 8,600 jobs/s, held back because the
 *   settled ids rode on every returned row (batch x batch array elements to parse, 353 ms per
 *   round trip at 1,000); sent once: 24 ms per round trip, 20,700 no-op jobs/s;
 * - outcomes joined from unnest() arrays: planned as a nested loop on stale statistics (50 ms per
 *   500); looked up by key in one jsonb object instead: 8 ms, 22,600-25,500 no-op jobs/s.
 * In the bench run of BENCHMARKS.md (11:39 UTC) this design drained 24,546 jobs/s, graphile-worker
 * 17,862, and the batched SQL floor (claim + delete, 100 per statement) 42,770.
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
      moved as (${MOVE_TO_HISTORY}),
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
      ${MOVE_TO_HISTORY.replace('returning id', 'returning id::text')}`,
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
    `update pgq.jobs
        set state = 'queued', worker_id = null, attempts = attempts - 1, started_at = null, run_after = now()
      where worker_id = $1 and state = 'running'
        and ((id = any($2::bigint[]) and delivery = 'at_least_once') or id = any($3::bigint[]))
      returning id::text`,
    [workerId, started, notStarted],
  );
  if (rows.length > 0) await notify(db);
  return rows.map((r) => r.id);
}

/** Wake listening workers: jobs became due outside an insert (retries, hand-backs, rescues). */
export async function notify(db: Queryable, queue = ''): Promise<void> {
  await db.query('select pg_notify($1, $2)', [JOBS_CHANNEL, queue]);
}

/** Store a running job's progress report, readable while it runs. */
export async function setProgress(db: Queryable, workerId: string, id: string, attempt: number, progress: unknown): Promise<boolean> {
  const { rowCount } = await db.query(
    `update pgq.jobs set progress = $4 where id = $2 and attempts = $3 and worker_id = $1 and state = 'running'`,
    [workerId, id, attempt, JSON.stringify(progress ?? null)],
  );
  return rowCount === 1;
}

/**
 * Cancel a job. A queued job moves to the history as `cancelled` at once; a running one is
 * flagged, its worker aborts it at the next heartbeat, and it ends `cancelled`. Returns the
 * state the job is in afterwards, or null when there is no such job.
 */
export async function cancelJob(db: Queryable, id: string): Promise<JobState | null> {
  const { rows } = await db.query<{ state: JobState | null }>(
    `with done as (
        delete from pgq.jobs j where j.id = $1 and j.state = 'queued'
        returning j.*, 'cancelled'::text as final_state, null::jsonb as final_result, null::text as final_error,
                  null::timestamptz as final_started),
      moved as (${MOVE_TO_HISTORY}),
      flagged as (
        update pgq.jobs set cancel_requested = true where id = $1 and state = 'running' returning id)
      select coalesce(
        (select 'cancelled' from moved),
        (select 'running' from flagged),
        (select state from pgq.finished_jobs where id = $1)) as state`,
    [id],
  );
  return rows[0]?.state ?? null;
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

/** Register a worker; the caller takes its presence lock in the same transaction. */
export async function insertWorker(
  db: Queryable,
  w: { id?: string; host: string; pid: number; queues: readonly string[] | null; concurrency: number; version: string },
): Promise<string> {
  const { rows } = await db.query<{ id: string }>(
    `insert into pgq.workers (id, host, pid, queues, concurrency, version)
     values (coalesce($1::bigint, nextval(pg_get_serial_sequence('pgq.workers', 'id'))), $2, $3, $4, $5, $6)
     on conflict (id) do update set heartbeat_at = now()
     returning id::text`,
    [w.id ?? null, w.host, w.pid, w.queues, w.concurrency, w.version],
  );
  return rows[0]!.id;
}

/** Take (blocking) the session lock that marks this worker alive for as long as the connection lives. */
export async function lockWorkerPresence(db: Queryable, lockKey: number): Promise<void> {
  await db.query('select pg_advisory_lock($1, $2)', [ADVISORY_CLASS, lockKey]);
}

/** Take the presence lock if free; false when another session (an old one of ours) holds it. */
export async function tryLockWorkerPresence(db: Queryable, lockKey: number): Promise<boolean> {
  const { rows } = await db.query<{ ok: boolean }>('select pg_try_advisory_lock($1, $2) as ok', [ADVISORY_CLASS, lockKey]);
  return rows[0]!.ok;
}

/**
 * Record that the worker is alive, with its load. Returns null when the worker's row is gone
 * (it was declared dead and must register again); otherwise the ids of its running jobs whose
 * cancellation was requested.
 */
export async function heartbeat(
  db: Queryable,
  workerId: string,
  jobsInFlight: number,
  cpu: number | null,
): Promise<string[] | null> {
  const { rows } = await db.query<{ cancel: string[] }>(
    `update pgq.workers set heartbeat_at = now(), jobs_in_flight = $2, cpu = $3 where id = $1
     returning (select coalesce(array_agg(id::text), '{}') from pgq.jobs
                 where worker_id = $1 and state = 'running' and cancel_requested) as cancel`,
    [workerId, jobsInFlight, cpu],
  );
  return rows[0]?.cancel ?? null;
}

/** Remove a stopping worker's row. */
export async function deleteWorker(db: Queryable, workerId: string): Promise<void> {
  await db.query('delete from pgq.workers where id = $1', [workerId]);
}

/** Only one process runs maintenance at a time; the others skip their turn. Call inside a transaction. */
export async function tryMaintenanceLock(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ ok: boolean }>('select pg_try_advisory_xact_lock($1, $2) as ok', [
    ADVISORY_CLASS,
    MAINTENANCE_LOCK,
  ]);
  return rows[0]!.ok;
}

/**
 * Delete the rows of dead workers and return their ids. Dead means: its presence lock is gone
 * although it heartbeated since the server started (the connection closed: a killed process),
 * or it has not heartbeated for `leaseMs` (a VM that vanished, whose connection the server
 * still believes open). A worker that last heartbeated before a server restart gets its lease
 * to reconnect, so restarting Postgres does not declare every worker dead.
 */
export async function deleteDeadWorkers(db: Queryable, leaseMs: number): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `delete from pgq.workers w
      where w.heartbeat_at < now() - make_interval(secs => $1::double precision / 1000)
         or (w.heartbeat_at >= pg_postmaster_start_time()
             and not exists (
               select 1 from pg_locks l
                where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                  and l.database = (select oid from pg_database where datname = current_database())
                  and l.classid = $2::int::oid
                  and l.objid = (w.id % 2147483647)::int::oid))
     returning id::text`,
    [leaseMs, ADVISORY_CLASS],
  );
  return rows.map((r) => r.id);
}

/** Outcome of returning orphaned jobs. */
export interface RescueResult {
  /** Put back in the queue to run again. */
  requeued: string[];
  /** Ended `failed`: at-most-once, or out of attempts. */
  failed: string[];
}

/**
 * Return running jobs whose worker is gone: those of `deadWorkers`, or with `sweep`, every
 * running job whose worker row no longer exists. At-least-once jobs with attempts left run again
 * (the lost run counts as an attempt, so a job that kills its worker cannot loop forever); the
 * others end `failed`, never run twice.
 */
export async function rescueOrphans(db: Queryable, deadWorkers: string[], sweep = false): Promise<RescueResult> {
  if (deadWorkers.length === 0 && !sweep) return { requeued: [], failed: [] };
  const { rows } = await db.query<{ id: string; requeue: boolean; worker_id: string }>(
    `select j.id::text, j.worker_id::text, (j.delivery = 'at_least_once' and j.attempts < j.max_attempts) as requeue
       from pgq.jobs j
      where j.state = 'running'
        and (j.worker_id = any($1::bigint[])
             or ($2 and not exists (select 1 from pgq.workers w where w.id = j.worker_id)))
      for update of j skip locked`,
    [deadWorkers, sweep],
  );
  const requeueIds = rows.filter((r) => r.requeue).map((r) => r.id);
  const fail = rows.filter((r) => !r.requeue);
  let requeued: string[] = [];
  if (requeueIds.length > 0) {
    const res = await db.query<{ id: string }>(
      `update pgq.jobs
          set state = 'queued', last_error = 'worker ' || worker_id || ' died while running attempt ' || attempts,
              worker_id = null, run_after = now()
        where id = any($1::bigint[]) and state = 'running'
        returning id::text`,
      [requeueIds],
    );
    requeued = res.rows.map((r) => r.id);
    await notify(db);
  }
  let failed: string[] = [];
  if (fail.length > 0) {
    const res = await db.query<{ id: string }>(
      `with done as (
          delete from pgq.jobs j where j.id = any($1::bigint[]) and j.state = 'running'
          returning j.*, 'failed'::text as final_state, null::jsonb as final_result,
                    case when j.delivery = 'at_most_once'
                         then 'worker ' || j.worker_id || ' died while running this at-most-once job; it is not run again'
                         else 'worker ' || j.worker_id || ' died while running the last of ' || j.max_attempts || ' attempts'
                    end as final_error,
                    null::timestamptz as final_started)
        ${MOVE_TO_HISTORY.replace('returning id', 'returning id::text')}`,
      [fail.map((r) => r.id)],
    );
    failed = res.rows.map((r) => r.id);
  }
  return { requeued, failed };
}

/** Move queued jobs past their expiry to the history as `expired`. Returns how many. */
export async function expireJobs(db: Queryable, limit: number): Promise<number> {
  const { rows } = await db.query<{ id: string }>(
    `with done as (
        delete from pgq.jobs j
         where j.id in (select id from pgq.jobs
                         where state = 'queued' and expires_at is not null and expires_at <= now()
                         limit $1 for update skip locked)
        returning j.*, 'expired'::text as final_state, null::jsonb as final_result,
                  'expired at ' || j.expires_at || ' before it could start' as final_error,
                  null::timestamptz as final_started)
      ${MOVE_TO_HISTORY}`,
    [limit],
  );
  return rows.length;
}

/**
 * ANALYZE the hot table when it changed a lot since its last statistics. It goes from empty to a
 * large backlog in a second, long before autovacuum's next look (a minute by default); planning
 * the claim and settle statements on statistics of an empty table sorts the whole backlog.
 */
export async function analyzeIfStale(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ stale: boolean }>(
    `select s.n_mod_since_analyze > greatest(1000, 0.2 * greatest(c.reltuples, 0)) as stale
       from pg_stat_user_tables s join pg_class c on c.oid = s.relid
      where s.schemaname = 'pgq' and s.relname = 'jobs'`,
  );
  if (!rows[0]?.stale) return false;
  await db.query('analyze pgq.jobs');
  return true;
}

/** Delete finished jobs older than the retention, and idempotency keys whose job is gone. */
export async function pruneFinished(db: Queryable, retentionMs: number, limit: number): Promise<number> {
  const { rows } = await db.query<{ jobs: number }>(
    `with old as (
        delete from pgq.finished_jobs
         where id in (select id from pgq.finished_jobs
                       where finished_at < now() - make_interval(secs => $1::double precision / 1000)
                       order by finished_at limit $2)
        returning id),
      keys as (
        delete from pgq.job_keys k
         where k.key in (select key from pgq.job_keys kk
                          where kk.created_at < now() - make_interval(secs => $1::double precision / 1000)
                            and not exists (select 1 from pgq.jobs j where j.id = kk.job_id)
                            and not exists (select 1 from pgq.finished_jobs f where f.id = kk.job_id
                                              and f.id not in (select id from old))
                          limit $2)
        returning key)
      select (select count(*) from old)::int as jobs`,
    [retentionMs, limit],
  );
  return rows[0]!.jobs;
}

/** Jobs per state, live and finished. */
export async function countByState(db: Queryable): Promise<Record<JobState, number>> {
  const { rows } = await db.query<{ state: JobState; n: number }>(
    `select state, count(*)::int as n from pgq.jobs group by state
     union all
     select state, count(*)::int as n from pgq.finished_jobs group by state`,
  );
  const counts: Record<JobState, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, expired: 0, cancelled: 0 };
  for (const r of rows) counts[r.state] += r.n;
  return counts;
}

/** Queued jobs that are due now, per queue (for the queue-depth metric). */
export async function queueDepth(db: Queryable): Promise<{ queue: string; due: number; scheduled: number }[]> {
  const { rows } = await db.query<{ queue: string; due: number; scheduled: number }>(
    `select queue, count(*) filter (where run_after <= now())::int as due,
            count(*) filter (where run_after > now())::int as scheduled
       from pgq.jobs where state = 'queued' group by queue`,
  );
  return rows;
}

/** A live worker as shown by observe. */
export interface WorkerRow {
  id: string;
  host: string;
  pid: number;
  concurrency: number;
  jobsInFlight: number;
  cpu: number | null;
  startedAt: Date;
  heartbeatAt: Date;
}

/** Registered workers (the rescuer removes dead ones within a pass). */
export async function listWorkers(db: Queryable): Promise<WorkerRow[]> {
  const { rows } = await db.query<{
    id: string; host: string; pid: number; concurrency: number; jobs_in_flight: number; cpu: number | null;
    started_at: Date; heartbeat_at: Date;
  }>(`select id::text, host, pid, concurrency, jobs_in_flight, cpu, started_at, heartbeat_at from pgq.workers order by id`);
  return rows.map((r) => ({
    id: r.id,
    host: r.host,
    pid: r.pid,
    concurrency: r.concurrency,
    jobsInFlight: r.jobs_in_flight,
    cpu: r.cpu,
    startedAt: r.started_at,
    heartbeatAt: r.heartbeat_at,
  }));
}

/** The system at a glance, for observe and the local demo. */
export interface Snapshot {
  at: Date;
  counts: Record<JobState, number>;
  /** Seconds the oldest due queued job has waited; 0 when none waits. */
  oldestQueuedSeconds: number;
  /** Jobs enqueued / finished in the last minute. */
  enqueuedLastMinute: number;
  finishedLastMinute: number;
  /** Enqueue-to-start and run time of jobs finished in the last minute, in seconds. */
  latency: { p50: number | null; p95: number | null; p99: number | null; max: number | null };
  runTime: { p50: number | null; p95: number | null };
  /** Highest job id so far (a counter of enqueues). */
  lastJobId: string;
}

/**
 * Counts, rates and latencies in one statement. The last-minute figures read the finished
 * history through its finished_at index and the hot table, never the whole history.
 */
export async function snapshot(db: Queryable, sinceJobId = '0'): Promise<Snapshot> {
  const { rows } = await db.query<{
    at: Date; counts: Record<string, number> | null; oldest: number | null; enqueued: number; finished: number;
    lat: (number | null)[] | null; run: (number | null)[] | null; lat_max: number | null; last_id: string;
  }>(
    `with recent as (
        select extract(epoch from started_at - run_after)::float8 as wait,
               extract(epoch from finished_at - started_at)::float8 as run
          from pgq.finished_jobs
         where finished_at > now() - interval '60 seconds' and started_at is not null and id > $1::bigint)
      select now() as at,
        (select json_object_agg(state, n) from (
           select state, count(*)::int as n from pgq.jobs where id > $1::bigint group by state
           union all
           select state, count(*)::int from pgq.finished_jobs where id > $1::bigint group by state) s) as counts,
        (select extract(epoch from now() - min(run_after))::float8 from pgq.jobs
          where state = 'queued' and run_after <= now()) as oldest,
        ((select count(*) from pgq.jobs where created_at > now() - interval '60 seconds' and id > $1::bigint)
         + (select count(*) from pgq.finished_jobs
             where finished_at > now() - interval '60 seconds' and created_at > now() - interval '60 seconds'
               and id > $1::bigint))::int as enqueued,
        (select count(*)::int from recent) as finished,
        (select percentile_cont(array[0.5, 0.95, 0.99]) within group (order by wait) from recent) as lat,
        (select max(wait) from recent) as lat_max,
        (select percentile_cont(array[0.5, 0.95]) within group (order by run) from recent) as run,
        (select coalesce(max(id), 0)::text from (select max(id) as id from pgq.jobs
                                                 union all select max(id) from pgq.finished_jobs) m) as last_id`,
    [sinceJobId],
  );
  const r = rows[0]!;
  const counts: Record<JobState, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, expired: 0, cancelled: 0 };
  for (const [state, n] of Object.entries(r.counts ?? {})) counts[state as JobState] += n;
  return {
    at: r.at,
    counts,
    oldestQueuedSeconds: Math.max(0, r.oldest ?? 0),
    enqueuedLastMinute: r.enqueued,
    finishedLastMinute: r.finished,
    latency: { p50: r.lat?.[0] ?? null, p95: r.lat?.[1] ?? null, p99: r.lat?.[2] ?? null, max: r.lat_max },
    runTime: { p50: r.run?.[0] ?? null, p95: r.run?.[1] ?? null },
    lastJobId: r.last_id,
  };
}

/** Enqueue-to-start latency percentiles of finished jobs with ids in (afterId, ...], in seconds. */
export async function latencySince(db: Queryable, afterId: string): Promise<{ p50: number | null; p99: number | null; first: Date | null; last: Date | null; n: number }> {
  const { rows } = await db.query<{ p: (number | null)[] | null; first: Date | null; last: Date | null; n: number }>(
    `select percentile_cont(array[0.5, 0.99]) within group (order by extract(epoch from started_at - run_after)::float8) as p,
            min(created_at) as first, max(finished_at) as last, count(*)::int as n
       from pgq.finished_jobs where id > $1::bigint and started_at is not null`,
    [afterId],
  );
  const r = rows[0]!;
  return { p50: r.p?.[0] ?? null, p99: r.p?.[1] ?? null, first: r.first, last: r.last, n: r.n };
}
