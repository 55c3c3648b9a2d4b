/** observe's snapshot: exact when small, bounded and estimated when the backlog or history is large. */
import type pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { enqueueMany } from '../worker/index.ts';
import { EXACT_COUNT_LIMIT, snapshot } from '../worker/sql/stats.ts';
import type { Queryable } from '../worker/sql/shared.ts';
import { drain, manualWorker, openDatabase, waitFor } from './harness.ts';

let pool: pg.Pool;

beforeAll(async () => {
  ({ pool } = await openDatabase());
});
beforeEach(async () => {
  await pool.query('truncate pgq.jobs, pgq.finished_jobs, pgq.job_keys, pgq.workers');
});
afterAll(async () => {
  await pool.end();
});

const history = (n: number, from = 10_000_000) =>
  pool.query(
    `insert into pgq.finished_jobs (id, queue, task, payload, priority, state, attempts, max_attempts, delivery, created_at, run_after, started_at, finished_at)
     select $2::bigint + g, 'default', 'sleep', '{}', 0, case when g % 10 = 0 then 'failed' else 'succeeded' end, 1, 5, 'at_least_once',
            now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour'
       from generate_series(1, $1::int) g`,
    [n, from],
  );
/**
 * VACUUM ANALYZE once the inserts' statistics have reached the server: a backend reports its
 * row counts within about a second, and a report landing after the vacuum would count them twice.
 */
async function settleStatistics(jobs: number, history: number): Promise<void> {
  await waitFor(async () => {
    const { rows } = await pool.query<{ relname: string; n: number }>(
      `select relname, (n_tup_ins - n_tup_del)::int as n from pg_stat_user_tables where schemaname = 'pgq' and relname in ('jobs', 'finished_jobs')`,
    );
    const n = Object.fromEntries(rows.map((r) => [r.relname, r.n]));
    return (n.jobs ?? 0) >= jobs && (n.finished_jobs ?? 0) >= history;
  }, 'the statistics to report the inserts');
  await pool.query('vacuum analyze pgq.jobs, pgq.finished_jobs');
}

const scheduled = (n: number) =>
  pool.query(`insert into pgq.jobs (task, payload, run_after, priority) select 'sleep', '{}', now() + interval '1 day' + g * interval '1 second', g % 3 from generate_series(1, $1::int) g`, [n]);

/** Shared buffers the sample's statements touch, from EXPLAIN ANALYZE of the very text they send. */
async function sampleBuffers(): Promise<number> {
  const client = await pool.connect();
  try {
    const sent: { text: string; values?: unknown[] }[] = [];
    const capture: Queryable = {
      query: ((text: string, values?: unknown[]) => {
        sent.push({ text, values });
        return client.query(text, values);
      }) as never,
    };
    await snapshot(capture);
    let buffers = 0;
    for (const statement of sent) {
      const { rows } = await client.query(`explain (analyze, buffers, format json) ${statement.text}`, statement.values);
      const plan = rows[0]['QUERY PLAN'][0];
      buffers += plan.Plan['Shared Hit Blocks'] + plan.Plan['Shared Read Blocks'];
    }
    return buffers;
  } finally {
    client.release();
  }
}

describe('the system snapshot', () => {
  it('counts exactly while the backlog and the history are small, and its ended counter follows the work', async () => {
    const ids = (await enqueueMany(pool, Array.from({ length: 30 }, () => ({ task: 'sleep', payload: { workMs: 0 } })))).map((j) => j.id);
    await enqueueMany(pool, [{ task: 'sleep', runAfter: new Date(Date.now() + 60_000) }]);
    const before = await snapshot(pool);
    expect(before.counts).toMatchObject({ queued: 31, running: 0, succeeded: 0 });
    expect(before.estimated).toEqual([]);
    expect(before.lastJobId).toBe(String(Number(ids.at(-1)) + 1));
    expect(before.oldestQueuedSeconds).toBeGreaterThanOrEqual(0);
    const w = await manualWorker(pool, { concurrency: 4, batchSize: 50 });
    try {
      await drain(w.worker, 3);
    } finally {
      await w.close();
    }
    const after = await snapshot(pool);
    expect(after.counts).toMatchObject({ queued: 1, running: 0, succeeded: 30 });
    expect(after.finishedLastMinute).toBe(30);
    expect(after.enqueuedLastMinute).toBe(31);
    expect(after.latency.p50).not.toBeNull();
    // The statistics counter is reported by each backend within about a second.
    for (let i = 0; i < 100 && (await snapshot(pool)).endedTotal < before.endedTotal + 30; i++) await new Promise((r) => setTimeout(r, 50));
    expect((await snapshot(pool)).endedTotal).toBeGreaterThanOrEqual(before.endedTotal + 30);
  });

  it('estimates beyond the exact limit, and costs no more with twice the rows', async () => {
    const n = EXACT_COUNT_LIMIT + 20_000;
    await scheduled(n);
    await history(n);
    await settleStatistics(n, n);
    const large = await snapshot(pool);
    expect(large.estimated.sort()).toEqual(['history', 'queued']);
    expect(large.counts.queued).toBeGreaterThan(n * 0.9);
    expect(large.counts.queued).toBeLessThan(n * 1.1);
    expect(large.counts.succeeded + large.counts.failed).toBeGreaterThan(n * 0.9);
    expect(large.counts.failed).toBeGreaterThan(n * 0.05);
    expect(large.counts.failed).toBeLessThan(n * 0.15);
    const cost = await sampleBuffers();
    await scheduled(n);
    await history(n, 20_000_000);
    await settleStatistics(2 * n, 2 * n);
    expect((await snapshot(pool)).counts.queued).toBeGreaterThan(2 * n * 0.9);
    expect(await sampleBuffers()).toBeLessThan(cost * 1.2);
  }, 60_000);
});
