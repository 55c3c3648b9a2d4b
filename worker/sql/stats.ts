/** Read-only views of the queue for metrics, observe and the local demo. */
import type { JobState } from '../types.ts';
import type { Queryable } from './shared.ts';

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

/** Queued jobs that are due now and unexpired (the backlog the autoscaler may scale on). */
export async function countDueJobs(db: Queryable, queues: readonly string[] | null): Promise<number> {
  const { rows } = await db.query<{ due: string }>(
    `select count(*)::bigint as due from pgq.jobs
      where state = 'queued' and run_after <= now() and (expires_at is null or expires_at > now())
        and ($1::text[] is null or queue = any($1::text[]))`,
    [queues],
  );
  return Number(rows[0]!.due);
}
