/**
 * The floor: what the SQL a job needs costs on this Postgres with nothing around it — plain
 * node-postgres, prepared statements, a minimal jobs table with a partial index like a queue's
 * claim index. No queue can beat these figures with the same number of commits per job; they
 * show how much of a queue's time is its own overhead.
 */
import pg from 'pg';

/** Floor figures of one repetition. */
export interface FloorResult {
  /** Single-row INSERT, autocommit, 16 connections: commits per second. */
  insertTxPerSec: number;
  /** INSERT of 1,000 rows per statement, one connection: rows per second. */
  bulkInsertRowsPerSec: number;
  /** Claim one row (UPDATE ... SKIP LOCKED) then DELETE it, 16 connections: jobs per second. */
  claimOneJobsPerSec: number;
  /** The same with 100 rows per statement: jobs per second. */
  claimBatchJobsPerSec: number;
}

const SCHEMA = `
  create table floor_jobs (
    id         bigint generated always as identity primary key,
    state      text not null default 'queued',
    payload    jsonb not null default '{}',
    created_at timestamptz not null default now(),
    started_at timestamptz
  );
  create index floor_jobs_claim on floor_jobs (id) where state = 'queued'`;

const CLAIM = (n: number) => ({
  name: `floor_claim_${n}`,
  text: `update floor_jobs set state = 'running', started_at = now()
          where id in (select id from floor_jobs where state = 'queued' order by id limit ${n} for update skip locked)
         returning id`,
});
const COMPLETE = { name: 'floor_complete', text: 'delete from floor_jobs where id = any($1::bigint[])' };
const INSERT_ONE = { name: 'floor_insert', text: 'insert into floor_jobs (payload) values ($1)' };
const INSERT_MANY = { name: 'floor_insert_many', text: 'insert into floor_jobs (payload) select * from unnest($1::jsonb[])' };

async function connectAll(url: string, n: number): Promise<pg.Client[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const c = new pg.Client({ connectionString: url });
      c.on('error', () => {});
      await c.connect();
      return c;
    }),
  );
}

/** Run `step` on every client in a loop for `seconds`; returns units done per second. */
async function timed(clients: pg.Client[], seconds: number, step: (c: pg.Client) => Promise<number>): Promise<number> {
  const start = performance.now();
  const end = start + seconds * 1000;
  let done = 0;
  await Promise.all(
    clients.map(async (c) => {
      while (performance.now() < end) {
        const n = await step(c);
        if (n === 0) return;
        done += n;
      }
    }),
  );
  return done / ((performance.now() - start) / 1000);
}

/** Empty the table and fill it with `rows` queued jobs, then settle it as a queue would find it. */
async function refill(admin: pg.Client, rows: number): Promise<void> {
  await admin.query('truncate floor_jobs');
  await admin.query(`insert into floor_jobs (payload) select jsonb_build_object('n', g) from generate_series(1, $1) g`, [rows]);
  await admin.query('vacuum analyze floor_jobs');
  await admin.query('checkpoint');
}

/**
 * Measure the floor on an empty database at `url`: each figure runs for `seconds`, with
 * `connections` connections (one for the bulk insert). The claim tables hold more rows than
 * the fastest claim loop can take in that time, so the queue never runs dry mid-measurement.
 */
export async function measureFloor(url: string, seconds: number, connections: number): Promise<FloorResult> {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  const clients = await connectAll(url, connections);
  try {
    await admin.query(SCHEMA);
    await admin.query('checkpoint');
    const payload = JSON.stringify({ n: 1 });
    const insertTxPerSec = await timed(clients, seconds, async (c) => {
      await c.query({ ...INSERT_ONE, values: [payload] });
      return 1;
    });

    await admin.query('truncate floor_jobs');
    await admin.query('checkpoint');
    const batch = Array.from({ length: 1000 }, (_, i) => JSON.stringify({ n: i }));
    const bulkInsertRowsPerSec = await timed(clients.slice(0, 1), seconds, async (c) => {
      await c.query({ ...INSERT_MANY, values: [batch] });
      return batch.length;
    });

    const claimLoop = (size: number) => async (c: pg.Client) => {
      const { rows } = await c.query<{ id: string }>(CLAIM(size));
      if (rows.length === 0) return 0;
      await c.query({ ...COMPLETE, values: [rows.map((r) => r.id)] });
      return rows.length;
    };
    // Fills of ~2-3x the rates seen on a 2-core machine. Should a faster server empty the table
    // early, the figure stays right: jobs done over the time it took.
    await refill(admin, Math.ceil(seconds * 30_000));
    const claimOneJobsPerSec = await timed(clients, seconds, claimLoop(1));
    await refill(admin, Math.ceil(seconds * 100_000));
    const claimBatchJobsPerSec = await timed(clients, seconds, claimLoop(100));
    return { insertTxPerSec, bulkInsertRowsPerSec, claimOneJobsPerSec, claimBatchJobsPerSec };
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await admin.end().catch(() => {});
  }
}
