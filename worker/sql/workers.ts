/** Presence: a worker's row, its session lock and its heartbeat. */
import { ADVISORY_CLASS } from '../locks.ts';
import type { Queryable } from './shared.ts';

/**
 * Register a worker under the id it drew. Returns false when the id is taken (drawn before, by
 * anyone): a worker's id is never a row that existed, so a revoked id can never come back.
 */
export async function insertWorker(
  db: Queryable,
  w: { id: string; host: string; pid: number; queues: readonly string[] | null; concurrency: number; version: string },
): Promise<boolean> {
  const { rowCount } = await db.query(
    `insert into pgq.workers (id, host, pid, queues, concurrency, version)
     values ($1, $2, $3, $4, $5, $6)
     on conflict (id) do nothing`,
    [w.id, w.host, w.pid, w.queues, w.concurrency, w.version],
  );
  return rowCount === 1;
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

/** Release a presence lock taken for an id that could not be registered. */
export async function unlockWorkerPresence(db: Queryable, lockKey: number): Promise<void> {
  await db.query('select pg_advisory_unlock($1, $2)', [ADVISORY_CLASS, lockKey]);
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

/**
 * Which server this is, as far as a promotion shows: the cluster's system identifier (when the
 * role may read it) and the current timeline, which every promotion increments. A change
 * between two connections of one worker means a failover: commits may have been lost.
 */
export async function serverIdentity(db: Queryable): Promise<string> {
  // The timeline is the first 8 hex digits of the current WAL file's name, readable by any role.
  const timeline = `substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)`;
  try {
    const { rows } = await db.query<{ identity: string }>(
      `select (select system_identifier::text from pg_control_system()) || '/' || ${timeline} as identity`,
    );
    return rows[0]!.identity;
  } catch (error) {
    if ((error as { code?: string }).code !== '42501') throw error;
    const { rows } = await db.query<{ identity: string }>(`select '?/' || ${timeline} as identity`);
    return rows[0]!.identity;
  }
}
