/**
 * A streaming standby promoted under a running fleet (issue 11, test 5): synchronous (no commit
 * lost) and asynchronous with the replication cut first (a lost window). The workers reach the
 * database through a proxy that is pointed at the new primary, as Cloud SQL HA keeps its
 * address. The ledger of executions lives on another server, so the failover cannot lose it.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { startLocalPostgres, type LocalPostgres } from '../scripts/local-postgres.ts';
import { enqueueMany, migrate } from '../worker/index.ts';
import { createRunsTable } from './fixtures/runs.ts';
import { killChildren, openDatabase, root, spawnWorker, waitFor, type WorkerProcess } from './harness.ts';
import { startStandby, type Standby } from './support/standby.ts';
import { TcpProxy } from './support/tcp-proxy.ts';

let ledger: { url: string; pool: pg.Pool };
const cleanup: (() => Promise<void>)[] = [];

beforeAll(async () => {
  ledger = await openDatabase({ empty: true });
  await createRunsTable(ledger.pool);
});
afterEach(async () => {
  await killChildren();
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {});
});
afterAll(() => ledger.pool.end());

interface Cluster {
  primary: LocalPostgres;
  standby: Standby;
  /** Workers → primary, then → the promoted standby. */
  proxy: TcpProxy;
  /** Standby → primary: black-holed to make a lost window. */
  replication: TcpProxy;
  pool: pg.Pool;
}

async function cluster(): Promise<Cluster> {
  // Each cluster numbers its jobs from 1: the ledger starts empty for each.
  await ledger.pool.query('truncate test_runs');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-failover-'));
  const primary = await startLocalPostgres(dir, { settings: { wal_keep_size: '256MB' } });
  cleanup.push(async () => {
    await primary.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });
  const pool = new pg.Pool({ connectionString: primary.url, max: 2 });
  pool.on('error', () => {});
  cleanup.push(() => pool.end());
  const client = await pool.connect();
  await migrate(client);
  client.release();
  const replication = await TcpProxy.start({ host: '127.0.0.1', port: primary.port });
  cleanup.push(() => replication.close());
  const standby = await startStandby(primary, dir, { name: 'standby1', source: { host: '127.0.0.1', port: replication.port } });
  cleanup.push(() => standby.stop());
  const proxy = await TcpProxy.start({ host: '127.0.0.1', port: primary.port });
  cleanup.push(() => proxy.close());
  return { primary, standby, proxy, replication, pool };
}

function fleet(c: Cluster, n: number): WorkerProcess[] {
  const env = {
    DATABASE_URL: c.proxy.urlFor(c.primary.url),
    RUNS_DATABASE_URL: ledger.url,
    WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'),
    WORKER_CONCURRENCY: '4',
    LOG_LEVEL: 'warn',
  };
  return Array.from({ length: n }, () => spawnWorker(env));
}

/**
 * Crash the primary, promote the standby after an outage longer than a worker's own lease and
 * shorter than the rescuer's (a managed failover takes its time), and send every connection to it.
 */
async function failOver(c: Cluster): Promise<pg.Pool> {
  await c.primary.crash();
  await new Promise((resolve) => setTimeout(resolve, 4_000));
  await c.standby.promote();
  c.proxy.retarget({ host: '127.0.0.1', port: c.standby.port });
  c.proxy.resetAll();
  const pool = new pg.Pool({ connectionString: c.standby.url, max: 2 });
  pool.on('error', () => {});
  cleanup.push(() => pool.end());
  return pool;
}

async function runsOf(ids: string[]): Promise<Map<string, number>> {
  const { rows } = await ledger.pool.query<{ job_id: string; n: number }>(
    'select job_id::text, count(*)::int as n from test_runs where job_id = any($1::bigint[]) group by job_id',
    [ids],
  );
  return new Map(rows.map((r) => [r.job_id, r.n]));
}

async function workerIds(pool: pg.Pool): Promise<string[]> {
  return (await pool.query<{ id: string }>('select id::text from pgq.workers order by id')).rows.map((r) => r.id);
}

async function finished(pool: pg.Pool, ids: string[]): Promise<{ id: string; state: string; error: string | null }[]> {
  try {
    return (await pool.query('select id::text, state, error from pgq.finished_jobs where id = any($1::bigint[]) order by id', [ids])).rows;
  } catch {
    return [];
  }
}

/** The job ids each worker logged as started again elsewhere or lost with the window. */
function reported(workers: WorkerProcess[]): Set<string> {
  const ids = new Set<string>();
  for (const w of workers) {
    for (const line of w.stdout().split('\n')) {
      if (!line.includes('lost window') && !line.includes('enqueue was lost')) continue;
      for (const id of (JSON.parse(line) as { jobs?: string[] }).jobs ?? []) ids.add(id);
    }
  }
  return ids;
}

it('a synchronous standby promoted under load: nothing lost, no live worker removed, at-most-once jobs run exactly once', async () => {
  const c = await cluster();
  await c.pool.query(`alter system set synchronous_standby_names = 'standby1'`);
  await c.pool.query('select pg_reload_conf()');
  await waitFor(async () => (await c.pool.query(`select 1 from pg_stat_replication where sync_state = 'sync'`)).rowCount === 1, 'the standby to be synchronous');
  const workers = fleet(c, 2);
  await waitFor(async () => (await workerIds(c.pool)).length === 2, 'both workers to register');
  const before = await workerIds(c.pool);
  const once = (await enqueueMany(c.pool, Array.from({ length: 6 }, () => ({ task: 'counted', payload: { workMs: 1_500 }, delivery: 'at_most_once' as const })))).map((j) => j.id);
  const again = (await enqueueMany(c.pool, Array.from({ length: 30 }, () => ({ task: 'counted', payload: { workMs: 100 } })))).map((j) => j.id);
  await waitFor(async () => (await c.pool.query(`select 1 from pgq.jobs where state = 'running' and delivery = 'at_most_once'`)).rowCount! >= 4, 'at-most-once jobs to be running');
  const pool = await failOver(c);
  const all = [...once, ...again];
  const ended = await waitFor(async () => {
    const rows = await finished(pool, all);
    return rows.length === all.length ? rows : undefined;
  }, 'every job to end on the new primary', 90_000);
  expect(ended.filter((r) => r.state !== 'succeeded')).toEqual([]);
  const runs = await runsOf(all);
  for (const id of once) expect(runs.get(id)).toBe(1);
  for (const id of again) expect(runs.get(id)).toBeGreaterThanOrEqual(1);
  expect(await workerIds(pool)).toEqual(before);
  for (const w of workers) expect(w.child.exitCode).toBeNull();
});

it('an asynchronous standby promoted after the replication was cut: the lost enqueues are gone, every surviving job ends once, and each job started again is reported', async () => {
  const c = await cluster();
  const workers = fleet(c, 2);
  await waitFor(async () => (await workerIds(c.pool)).length === 2, 'both workers to register');
  const standbyPool = new pg.Pool({ connectionString: c.standby.url, max: 1 });
  standbyPool.on('error', () => {});
  cleanup.push(() => standbyPool.end());
  const kept = (await enqueueMany(c.pool, Array.from({ length: 40 }, () => ({ task: 'counted', payload: { workMs: 1_000 }, delivery: 'at_most_once' as const })))).map((j) => j.id);
  await waitFor(async () => (await standbyPool.query('select count(*)::int as n from pgq.all_jobs where id = any($1::bigint[])', [kept])).rows[0].n === kept.length, 'the first jobs to reach the standby');
  // From here on, nothing the primary commits reaches the standby: the lost window.
  c.replication.blackHole(() => true);
  const lostEnqueues = (await enqueueMany(c.pool, Array.from({ length: 10 }, () => ({ task: 'counted', payload: { workMs: 400 }, delivery: 'at_most_once' as const })))).map((j) => j.id);
  // A window of several seconds of records: a worker must remember further back than the moment before the crash.
  await waitFor(async () => {
    const { rows } = await c.pool.query<{ n: number; span: number }>(
      `select count(*)::int as n, extract(epoch from max(finished_at) - min(finished_at))::float8 as span
         from pgq.finished_jobs where id = any($1::bigint[])`,
      [kept],
    );
    return rows[0]!.n >= 12 && rows[0]!.span >= 3;
  }, 'jobs to end over three seconds of the lost window', 60_000);
  const pool = await failOver(c);
  expect((await pool.query('select count(*)::int as n from pgq.all_jobs where id = any($1::bigint[])', [lostEnqueues])).rows[0].n).toBe(0);
  const ended = await waitFor(async () => {
    const rows = await finished(pool, kept);
    return rows.length === kept.length ? rows : undefined;
  }, 'every surviving job to end on the new primary', 90_000);
  expect(new Set(ended.map((r) => r.id)).size).toBe(kept.length);
  const runs = await runsOf(kept);
  const twice = kept.filter((id) => (runs.get(id) ?? 0) > 1);
  // The README's promise: a job claimed in the lost window may start again, and then it is reported.
  const told = reported(workers);
  expect(twice.filter((id) => !told.has(id))).toEqual([]);
  // A job whose run ended in the window and came back is recorded as that run, not failed.
  for (const r of ended) if (r.state === 'failed') expect(r.error).toMatch(/outcome (unknown|lost)|aborted|stopped/);
  for (const w of workers) expect(w.child.exitCode).toBeNull();
  console.info(`async failover: ${kept.length} surviving jobs, ${twice.length} started twice (all reported), ${lostEnqueues.length} enqueues lost`);
});
