/** Read-only views of the queue for metrics, observe and the local demo. */
import type { JobState } from '../types.ts';
import { queuedPriorities, type Queryable } from './shared.ts';

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
  /** Which counts are estimates from the table statistics (too many rows to count each sample). */
  estimated: ('queued' | 'history')[];
  /**
   * Jobs that reached a final state, as a counter that only grows between samples: the exact
   * sum for a run's own jobs; for the whole system, the history's insert counter in the
   * statistics (each backend reports within about a second; a crash restart resets it).
   */
  endedTotal: number;
  /** Seconds the oldest due queued job has waited; 0 when none waits. */
  oldestQueuedSeconds: number;
  /**
   * Jobs enqueued / finished in the last minute; for the whole system, among the newest 20,000
   * ids and at most EXACT_COUNT_LIMIT finished (observe then takes rates from the counters).
   */
  enqueuedLastMinute: number;
  finishedLastMinute: number;
  /** Enqueue-to-start and run time of jobs finished in the last minute, in seconds. */
  latency: { p50: number | null; p95: number | null; p99: number | null; max: number | null };
  runTime: { p50: number | null; p95: number | null };
  /** Highest job id so far (a counter of enqueues). */
  lastJobId: string;
}

/**
 * Counted exactly up to this many rows; beyond, estimated from the statistics. Counting is
 * linear in the rows: a sample must cost the same with 5 million jobs in the history.
 */
export const EXACT_COUNT_LIMIT = 100_000;

/** How many of the newest job ids the first sample looks through for the last minute's enqueues. */
const RECENT_IDS = 20_000;

const emptyCounts = (): Record<JobState, number> => ({ queued: 0, running: 0, succeeded: 0, failed: 0, expired: 0, cancelled: 0 });

/**
 * The system at a glance. Without `sinceJobId`, for observe: every part is bounded, whatever
 * the sizes of the backlog and the history (see EXACT_COUNT_LIMIT). With it, for one run's own
 * jobs (ids after it): exact counts, bounded by the run's size.
 */
export async function snapshot(db: Queryable, sinceJobId?: string): Promise<Snapshot> {
  return sinceJobId === undefined ? systemSnapshot(db) : runSnapshot(db, sinceJobId);
}

async function systemSnapshot(db: Queryable): Promise<Snapshot> {
  const { rows } = await db.query<TimingRow & {
    at: Date; running: number; queued: number; history: number; live_estimate: number | null; history_estimate: number | null;
    ended: number | null; state_mix: Record<string, number> | null;
  }>(
    `with recursive
      -- The oldest due job is the first due one of some priority: one probe per priority, as the
      -- claim reads them, never a walk over the jobs scheduled for later.
      ${queuedPriorities()},
      last as (select greatest(coalesce((select max(id) from pgq.jobs), 0), coalesce((select max(id) from pgq.finished_jobs), 0)) as id),
      recent as materialized (
        select extract(epoch from started_at - run_after)::float8 as wait,
               extract(epoch from finished_at - started_at)::float8 as run
          from pgq.finished_jobs
         where finished_at > now() - interval '60 seconds' and started_at is not null
         limit $1),
      tables as materialized (
        select s.relname, s.n_live_tup::float8 as live, greatest(s.n_live_tup, c.reltuples)::float8 as estimate, s.n_tup_ins::float8 as inserted
          from pg_stat_user_tables s join pg_class c on c.oid = s.relid
         where s.schemaname = 'pgq' and s.relname in ('jobs', 'finished_jobs'))
      select now() as at,
        (select count(*)::int from pgq.jobs where state = 'running') as running,
        -- Counted only when the statistics say the rows are few (a CASE runs its subquery only
        -- then), and never past the limit: the statistics can be wrong after a crash.
        case when (select estimate from tables where relname = 'jobs') <= $1
             then (select count(*)::int from (select 1 from pgq.jobs where state = 'queued' limit $1::int + 1) q)
             else $1::int + 1 end as queued,
        case when (select estimate from tables where relname = 'finished_jobs') <= $1
             then (select count(*)::int from (select 1 from pgq.finished_jobs limit $1::int + 1) h)
             else $1::int + 1 end as history,
        (select live from tables where relname = 'jobs') as live_estimate,
        (select estimate from tables where relname = 'finished_jobs') as history_estimate,
        (select inserted from tables where relname = 'finished_jobs') as ended,
        (select json_object_agg(m.state, m.freq)
           from pg_stats st, unnest(st.most_common_vals::text::text[], st.most_common_freqs) as m(state, freq)
          where st.schemaname = 'pgq' and st.tablename = 'finished_jobs' and st.attname = 'state') as state_mix,
        (select extract(epoch from now() - min(o.run_after))::float8
           from priorities, lateral (select run_after from pgq.jobs
                                      where state = 'queued' and priority = priorities.p and run_after <= now()
                                      order by run_after limit 1) o
          where priorities.p is not null) as oldest,
        -- Enqueued in the last minute, among the newest $2 ids (ids grow with enqueue time);
        -- observe takes its rates from the counters once it has an earlier sample.
        (select count(*)::int from (
           select created_at from pgq.jobs where id > (select id from last) - $2
           union all
           select created_at from pgq.finished_jobs where id > (select id from last) - $2) e
          where created_at > now() - interval '60 seconds') as enqueued,
        (select count(*)::int from recent) as finished,
        (select percentile_cont(array[0.5, 0.95, 0.99]) within group (order by wait) from recent) as lat,
        (select max(wait) from recent) as lat_max,
        (select percentile_cont(array[0.5, 0.95]) within group (order by run) from recent) as run,
        (select id::text from last) as last_id`,
    [EXACT_COUNT_LIMIT, RECENT_IDS],
  );
  const r = rows[0]!;
  const counts = emptyCounts();
  const estimated: Snapshot['estimated'] = [];
  counts.running = r.running;
  if (r.queued <= EXACT_COUNT_LIMIT) {
    counts.queued = r.queued;
  } else {
    counts.queued = Math.max(EXACT_COUNT_LIMIT + 1, Math.round((r.live_estimate ?? 0) - r.running));
    estimated.push('queued');
  }
  if (r.history <= EXACT_COUNT_LIMIT) {
    const { rows: states } = await db.query<{ state: JobState; n: number }>(`select state, count(*)::int as n from pgq.finished_jobs group by state`);
    for (const s of states) counts[s.state] = s.n;
  } else {
    // The planner's sample of the history says how its rows split between the final states.
    const total = Math.max(EXACT_COUNT_LIMIT + 1, r.history_estimate ?? 0);
    const mix = r.state_mix ?? { succeeded: 1 };
    for (const [state, freq] of Object.entries(mix)) if (state in counts) counts[state as JobState] = Math.round(total * freq);
    estimated.push('history');
  }
  return {
    at: r.at,
    counts,
    estimated,
    endedTotal: r.ended ?? 0,
    ...timings(r),
  };
}

/** The columns both snapshot statements return beside their counts. */
interface TimingRow {
  oldest: number | null;
  enqueued: number;
  finished: number;
  lat: (number | null)[] | null;
  run: (number | null)[] | null;
  lat_max: number | null;
  last_id: string;
}

function timings(r: TimingRow): Omit<Snapshot, 'at' | 'counts' | 'estimated' | 'endedTotal'> {
  return {
    oldestQueuedSeconds: Math.max(0, r.oldest ?? 0),
    enqueuedLastMinute: r.enqueued,
    finishedLastMinute: r.finished,
    latency: { p50: r.lat?.[0] ?? null, p95: r.lat?.[1] ?? null, p99: r.lat?.[2] ?? null, max: r.lat_max },
    runTime: { p50: r.run?.[0] ?? null, p95: r.run?.[1] ?? null },
    lastJobId: r.last_id,
  };
}

/** Counts, rates and latencies of the jobs after `sinceJobId`, exactly, in one statement. */
async function runSnapshot(db: Queryable, sinceJobId: string): Promise<Snapshot> {
  const { rows } = await db.query<TimingRow & { at: Date; counts: Record<string, number> | null }>(
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
  const counts = emptyCounts();
  for (const [state, n] of Object.entries(r.counts ?? {})) counts[state as JobState] += n;
  return {
    at: r.at,
    counts,
    estimated: [],
    endedTotal: counts.succeeded + counts.failed + counts.expired + counts.cancelled,
    ...timings(r),
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

/**
 * Queued jobs that are due now and unexpired (the backlog the autoscaler may scale on). Counted
 * per priority over the due range of each, as the claim reads them: the jobs scheduled for
 * later are never visited (Postgres before 18 would walk them all on every count).
 */
export async function countDueJobs(db: Queryable, queues: readonly string[] | null): Promise<number> {
  const { rows } = await db.query<{ due: string }>(
    `with recursive ${queuedPriorities()}
      select coalesce(sum(c.n), 0)::bigint as due
        from priorities, lateral (
          select count(*) as n from pgq.jobs
           where state = 'queued' and priority = priorities.p and run_after <= now()
             and (expires_at is null or expires_at > now())
             and ($1::text[] is null or queue = any($1::text[]))) c
       where priorities.p is not null`,
    [queues],
  );
  return Number(rows[0]!.due);
}
