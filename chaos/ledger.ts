/**
 * The ledger of executions, on a server of its own: one row per handler execution, written by
 * the handler itself before its work, and given its outcome when the handler ends.
 */
import pg from 'pg';

export async function createLedger(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`create table if not exists chaos_runs (
      execution uuid primary key,
      n int not null,
      job_id bigint not null,
      attempt int not null,
      -- Null for a run of the older release (fault 16), whose jobs carry no fencing token.
      token text,
      pid int not null,
      started_at timestamptz not null default clock_timestamp(),
      ended_at timestamptz,
      -- 'ok' (the handler succeeded) or 'threw' (on purpose); null: cut short by a fault.
      outcome text);
    create index if not exists chaos_runs_n on chaos_runs (n)`);
  } finally {
    await client.end();
  }
}

/** One execution, as the handler wrote it. */
export interface Execution {
  readonly n: number;
  readonly jobId: string;
  readonly attempt: number;
  readonly token: string | null;
  readonly pid: number;
  readonly startedAt: Date;
  readonly outcome: 'ok' | 'threw' | null;
}

/** Every execution, by job number, in the order they started. */
export async function executionsByJob(pool: pg.Pool): Promise<Map<number, Execution[]>> {
  const { rows } = await pool.query<{ n: number; job_id: string; attempt: number; token: string | null; pid: number; started_at: Date; outcome: 'ok' | 'threw' | null }>(
    'select n, job_id::text, attempt, token, pid, started_at, outcome from chaos_runs order by n, started_at',
  );
  const byJob = new Map<number, Execution[]>();
  for (const r of rows) {
    const list = byJob.get(r.n) ?? [];
    list.push({ n: r.n, jobId: r.job_id, attempt: r.attempt, token: r.token, pid: r.pid, startedAt: r.started_at, outcome: r.outcome });
    byJob.set(r.n, list);
  }
  return byJob;
}

/**
 * Duplicates: executions that began while an earlier one of the same job had not thrown (it
 * succeeded, or a fault cut it short). A retry after a failure on purpose is not one.
 */
export function duplicates(executions: readonly Execution[]): Execution[] {
  return executions.filter((e, i) => i > 0 && executions[i - 1]!.outcome !== 'threw');
}
