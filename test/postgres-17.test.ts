/**
 * The claim path on Postgres 17, the release the deployment runs: its planner has no btree skip
 * scan, so a statement that 18 runs in a few index pages may walk a whole index there.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../worker/migrate.ts';
import type { Queryable } from '../worker/sql/shared.ts';
import { settleAndClaim } from '../worker/sql/run.ts';
import { countDueJobs } from '../worker/sql/stats.ts';
import { startPostgres17, type Postgres17 } from './support/postgres-17.ts';

let server: Postgres17;
let pool: pg.Pool;

beforeAll(async () => {
  server = await startPostgres17();
  pool = new pg.Pool({ connectionString: server.url, max: 2 });
  pool.on('error', () => {});
  const client = await pool.connect();
  try {
    await migrate(client);
  } finally {
    client.release();
  }
  await pool.query(`insert into pgq.workers (id, host, pid, concurrency, version) values (42, 'test', 1, 16, 'test')`);
}, 60_000);
afterAll(async () => {
  await pool?.end();
  await server?.stop();
});

/** Shared buffers the claim statement touches, from EXPLAIN ANALYZE of the very text it sends (rolled back). */
async function claimBuffers(queues: string[] | null): Promise<{ buffers: number; claimed: string[] }> {
  const client = await pool.connect();
  try {
    let sent: { text: string; values: unknown[] } | undefined;
    const capture: Queryable = { query: ((config: { text: string; values: unknown[] }) => ((sent = config), client.query(config))) as never };
    await client.query('begin');
    const { claimed } = await settleAndClaim(capture, '42', 1, [], 16, queues);
    await client.query('rollback');
    await client.query('begin');
    const { rows } = await client.query(`explain (analyze, buffers, format json) ${sent!.text}`, sent!.values);
    await client.query('rollback');
    const plan = rows[0]['QUERY PLAN'][0].Plan;
    return { buffers: plan['Shared Hit Blocks'] + plan['Shared Read Blocks'], claimed: claimed.map((j) => `${j.priority}:${j.payload as string}`).sort() };
  } finally {
    client.release();
  }
}

/** Shared buffers of the one statement `run` sends, from EXPLAIN ANALYZE of its very text. */
async function statementBuffers(run: (db: Queryable) => Promise<unknown>): Promise<number> {
  let sent: { text: string; values?: unknown[] } | undefined;
  await run({ query: ((text: string, values?: unknown[]) => ((sent = { text, values }), pool.query(text, values))) as never });
  const { rows } = await pool.query(`explain (analyze, buffers, format json) ${sent!.text}`, sent!.values);
  const plan = rows[0]['QUERY PLAN'][0].Plan;
  return plan['Shared Hit Blocks'] + plan['Shared Read Blocks'];
}

describe('claims on Postgres 17', () => {
  it('cost the same with 100,000 jobs scheduled for later as with none: the scan stops at the first job not yet due', async () => {
    await pool.query(`insert into pgq.jobs (task, payload, priority) values ('t', '"low"', -1), ('t', '"high"', 5), ('t', '"mid"', 0)`);
    const empty = await claimBuffers(null);
    expect(empty.claimed).toEqual(['-1:low', '0:mid', '5:high']);
    await pool.query(
      `insert into pgq.jobs (task, payload, priority, run_after)
       select 't', '"later"', (g % 3) * 5 - 5, now() + interval '1 day' + g * interval '1 second' from generate_series(1, 100000) g`,
    );
    await pool.query('vacuum analyze pgq.jobs');
    for (const queues of [null, ['default']]) {
      const scheduled = await claimBuffers(queues);
      expect(scheduled.claimed).toEqual(['-1:low', '0:mid', '5:high']);
      // A walk over the scheduled jobs' index entries reads about 500 pages here.
      expect(scheduled.buffers).toBeLessThan(empty.buffers + 60);
    }
    // The autoscaler's backlog count reads the due jobs the same way.
    expect(await countDueJobs(pool, null)).toBe(3);
    expect(await countDueJobs(pool, ['default'])).toBe(3);
    expect(await countDueJobs(pool, ['other'])).toBe(0);
    expect(await statementBuffers((db) => countDueJobs(db, null))).toBeLessThan(60);
    await pool.query(`delete from pgq.jobs where payload <> '"later"'`);
    const idle = await claimBuffers(null);
    expect(idle.claimed).toEqual([]);
    expect(idle.buffers).toBeLessThan(empty.buffers + 60);
  }, 60_000);
});
