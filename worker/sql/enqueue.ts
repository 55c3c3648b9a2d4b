/** Enqueue statements: plain and keyed inserts, and the lookup of taken keys. */
import type { Delivery } from '../types.ts';
import type { Queryable } from './shared.ts';

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
