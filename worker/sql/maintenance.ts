/**
 * Maintenance: dead workers and their jobs, expiry, statistics and pruning. One process at a time
 * runs these, under the maintenance lock.
 */
import { ADVISORY_CLASS, MAINTENANCE_LOCK } from '../locks.ts';
import { moveToHistory, notify, type Queryable } from './shared.ts';

/** Only one process runs maintenance at a time; the others skip their turn. Call inside a transaction. */
export async function tryMaintenanceLock(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ ok: boolean }>('select pg_try_advisory_xact_lock($1, $2) as ok', [
    ADVISORY_CLASS,
    MAINTENANCE_LOCK,
  ]);
  return rows[0]!.ok;
}

/**
 * Whether this process leads the next pass: it holds the maintenance lock (call inside a
 * transaction) and the last pass, by anyone, is at least `dueMs` old. Also how many workers
 * there are, so that those who do not lead can space their tries by the fleet's size.
 */
export async function claimMaintenancePass(db: Queryable, dueMs: number): Promise<{ lead: boolean; fleet: number }> {
  const { rows } = await db.query<{ lead: boolean; fleet: number }>(
    `select l.locked and m.last_pass_at <= now() - make_interval(secs => $3::double precision / 1000) as lead,
            (select count(*)::int from pgq.workers) as fleet
       from (select pg_try_advisory_xact_lock($1, $2) as locked) l, pgq.maintenance m`,
    [ADVISORY_CLASS, MAINTENANCE_LOCK, dueMs],
  );
  return rows[0] ?? { lead: false, fleet: 0 };
}

/** The rules of death, in milliseconds. */
export interface DeathRules {
  /** A worker silent this long (counted from the later of its heartbeat and the grace point) is dead. */
  readonly leaseMs: number;
  /**
   * The fast path's window: a worker whose presence lock is gone is dead once its heartbeat is
   * also this old. By then the worker itself has stopped starting jobs (its own lease lapsed).
   */
  readonly lockLossMs: number;
  /** A gap between passes longer than this means the database or the whole fleet was away. */
  readonly passGapMs: number;
}

/**
 * Delete the rows of dead workers and return their ids, on the database's clock only. Dead
 * means silent for the lease, counted from the later of the last heartbeat and the fleet-wide
 * grace point; or (the fast path for a killed process) its presence lock gone and its heartbeat
 * older than the lock-loss window, yet newer than the start of the oldest worker session now
 * connected (this one among them). That last condition keeps out the events that drop every
 * session at once — a crash-reinit after one backend was killed, a promotion, a terminate-all:
 * afterwards every session is new, and a heartbeat from before may belong to a worker whose lock
 * went with the server, not with its process. A pass
 * that finds the previous one further back than `passGapMs` moves the grace point to now and
 * removes nobody: after an outage longer than the lease, every heartbeat is old.
 */
export async function deleteDeadWorkers(db: Queryable, rules: DeathRules): Promise<{ dead: string[]; gap: boolean }> {
  const { rows } = await db.query<{ id: string | null; gap: boolean }>(
    `with prev as (select last_pass_at from pgq.maintenance for update),
      pass as (
        update pgq.maintenance m
           set last_pass_at = now(),
               grace_from = case when prev.last_pass_at < now() - make_interval(secs => $3::double precision / 1000)
                                 then now() else m.grace_from end
          from prev
        returning m.grace_from, prev.last_pass_at < now() - make_interval(secs => $3::double precision / 1000) as gap),
      dead as (
        delete from pgq.workers w
         using pass
         where not pass.gap
           and (greatest(w.heartbeat_at, pass.grace_from) < now() - make_interval(secs => $1::double precision / 1000)
                or (w.heartbeat_at < now() - make_interval(secs => $2::double precision / 1000)
                    and w.heartbeat_at > (select min(backend_start) from pg_stat_activity
                                           where datname = current_database() and application_name like 'pgq-worker %')
                    and not exists (
                      select 1 from pg_locks l
                       where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                         and l.database = (select oid from pg_database where datname = current_database())
                         and l.classid = $4::int::oid
                         and l.objid = (w.id % 2147483647)::int::oid)))
        returning w.id)
      select (select gap from pass) as gap, dead.id::text as id from (select 1) one left join dead on true`,
    [rules.leaseMs, rules.lockLossMs, rules.passGapMs, ADVISORY_CLASS],
  );
  return { dead: rows.flatMap((r) => (r.id === null ? [] : [r.id])), gap: rows[0]?.gap ?? false };
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
  // Either lookup walks the index of running jobs (jobs_running_worker), never the backlog.
  const { rows } = await db.query<{ id: string; requeue: boolean; worker_id: string }>(
    `select j.id::text, j.worker_id::text,
            (j.delivery = 'at_least_once' and j.attempts < j.max_attempts and not j.cancel_requested) as requeue
       from pgq.jobs j
      where j.state = 'running'
        and ${sweep ? 'not exists (select 1 from pgq.workers w where w.id = j.worker_id)' : 'j.worker_id = any($1::bigint[])'}
      for update of j skip locked`,
    sweep ? [] : [deadWorkers],
  );
  const requeueIds = rows.filter((r) => r.requeue).map((r) => r.id);
  const fail = rows.filter((r) => !r.requeue);
  let requeued: string[] = [];
  if (requeueIds.length > 0) {
    const res = await db.query<{ id: string }>(
      `update pgq.jobs
          set state = 'queued', last_error = 'worker ' || worker_id || ' died while running attempt ' || attempts,
              worker_id = null, claim_seq = null, run_after = now()
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
                         then 'outcome unknown: worker ' || j.worker_id || ' was lost while running this at-most-once job; it is not run again'
                         else 'outcome unknown: worker ' || j.worker_id || ' died while running the last of ' || j.max_attempts || ' attempts'
                    end as final_error,
                    null::timestamptz as final_started)
        ${moveToHistory('text')}`,
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
      ${moveToHistory()}`,
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

/**
 * Summarise the history's new block ranges in its BRIN index. Ranges filled since the last
 * summary are unsummarised, and every query on finished_at (observe's last minute, the prune)
 * reads all of them; autovacuum summarises only when it visits, and a flood fills thousands of
 * ranges between its visits. Returns the ranges summarised.
 */
export async function summariseHistory(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ n: number }>(`select brin_summarize_new_values('pgq.finished_jobs_finished_at'::regclass)::int as n`);
  return rows[0]!.n;
}

/**
 * Delete up to `limit` finished jobs older than the retention, and the idempotency keys of
 * those jobs. Any old rows will do, in no order: the history's finished_at index is a BRIN,
 * which finds the old block ranges but cannot return rows sorted (an ORDER BY here sorted every
 * old row to delete a few thousand).
 */
export async function pruneFinished(db: Queryable, retentionMs: number, limit: number): Promise<number> {
  const { rows } = await db.query<{ jobs: number }>(
    `with old as (
        delete from pgq.finished_jobs
         where id in (select id from pgq.finished_jobs
                       where finished_at < now() - make_interval(secs => $1::double precision / 1000)
                       limit $2)
        returning id),
      -- A key goes with its job, in the same statement: a key left behind would make enqueue
      -- answer with the id of a job that no longer exists.
      keys as (delete from pgq.job_keys k where k.job_id in (select id from old) returning key)
      select (select count(*) from old)::int as jobs`,
    [retentionMs, limit],
  );
  return rows[0]!.jobs;
}
