/**
 * Postgres crashes (pg_ctl stop -m immediate) and comes back in the middle of a drain: the
 * workers must neither exit nor lose a job. This file runs its own server, since it kills it.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { startLocalPostgres, type LocalPostgres } from '../scripts/local-postgres.ts';
import { countByState, enqueue, enqueueMany, getJob, migrate } from '../worker/index.ts';
import { createRunsTable, runsPerJob } from './fixtures/runs.ts';
import { killChildren, root, spawnWorker, waitFor } from './harness.ts';
import { TcpProxy } from './support/tcp-proxy.ts';

let server: LocalPostgres;
let dir: string;
let pool: pg.Pool;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-outage-'));
  server = await startLocalPostgres(dir);
  pool = new pg.Pool({ connectionString: server.url, max: 2 });
  pool.on('error', () => {});
  const client = await pool.connect();
  await migrate(client);
  client.release();
  await createRunsTable(pool);
});
afterEach(killChildren);
afterAll(async () => {
  await pool.end();
  await server.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

/** Ask until the server answers again; errors in between are the outage itself. */
async function counts() {
  try {
    return await countByState(pool);
  } catch {
    return undefined;
  }
}

it('workers ride out a Postgres crash and restart: none exits, every job is done', async () => {
  const total = 3_000;
  await enqueueMany(pool, Array.from({ length: total }, () => ({ task: 'counted', payload: { workMs: 5 } })));
  const env = { DATABASE_URL: server.url, WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'), WORKER_CONCURRENCY: '4', LOG_LEVEL: 'error' };
  const workers = [spawnWorker(env), spawnWorker(env)];
  await waitFor(async () => ((await counts())?.succeeded ?? 0) >= 300, 'the drain to be under way');

  await server.crash();
  await server.restart();

  const final = await waitFor(async () => {
    const c = await counts();
    return c && c.succeeded + c.failed === total ? c : undefined;
  }, 'every job to end after the restart', 90_000).catch(async (error: Error) => {
    const { rows } = await pool.query(`select id, state, worker_id, attempts from pgq.jobs order by id limit 20`);
    const registered = await pool.query(`select id, pid, heartbeat_at from pgq.workers`);
    const exits = workers.map((w) => `pid ${w.child.pid}: exit ${w.child.exitCode} ${w.child.signalCode ?? ''} ${w.stderr().slice(-500)}`);
    throw new Error(`${error.message}\ncounts ${JSON.stringify(await counts())}\nleft ${JSON.stringify(rows)}\nworkers ${JSON.stringify(registered.rows)}\n${exits.join('\n')}`);
  });
  expect(final).toMatchObject({ succeeded: total, failed: 0, queued: 0, running: 0 });
  for (const w of workers) expect(w.child.exitCode).toBeNull();
  const runs = await runsPerJob(pool);
  expect(runs.size).toBe(total);
  const rerun = [...runs.values()].filter((n) => n > 1).length;
  console.log(`after the crash: ${total} jobs succeeded, ${rerun} recorded more than once (a run in flight at the crash, or a record whose commit reply was lost)`);
  // Only jobs in flight at the crash may run again: at most one batch per worker slot.
  expect(rerun).toBeLessThanOrEqual(2 * 4 * 2);
});

it('workers ride out one backend SIGKILLed (the postmaster resets every session): none exits, every job is done', async () => {
  await pool.query('truncate test_runs; delete from pgq.finished_jobs');
  const total = 2_000;
  await enqueueMany(pool, Array.from({ length: total }, () => ({ task: 'counted', payload: { workMs: 5 } })));
  const env = { DATABASE_URL: server.url, WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'), WORKER_CONCURRENCY: '4', LOG_LEVEL: 'error' };
  const workers = [spawnWorker(env), spawnWorker(env)];
  await waitFor(async () => ((await counts())?.succeeded ?? 0) >= 200, 'the drain to be under way');
  const { rows } = await pool.query<{ pid: number }>(
    `select pid from pg_stat_activity where application_name like 'pgq-worker %' and state is not null order by backend_start limit 1`,
  );
  // As the OOM killer would: the postmaster sees a backend die uncleanly and resets them all.
  process.kill(rows[0]!.pid, 'SIGKILL');

  const final = await waitFor(async () => {
    const c = await counts();
    return c && c.succeeded + c.failed === total ? c : undefined;
  }, 'every job to end after the reset', 90_000);
  expect(final).toMatchObject({ succeeded: total, failed: 0, queued: 0, running: 0 });
  for (const w of workers) expect(w.child.exitCode, `a worker exited: ${w.stderr().slice(-400)}`).toBeNull();
  expect((await runsPerJob(pool)).size).toBe(total);
});

it('SIGTERM during a database outage: outcomes are retried until the database is back, and the exit is 0', async () => {
  await pool.query('truncate test_runs; delete from pgq.finished_jobs');
  const jobs = await enqueueMany(pool, Array.from({ length: 4 }, () => ({ task: 'counted', payload: { workMs: 1_500 } })));
  const env = { DATABASE_URL: server.url, WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'), WORKER_CONCURRENCY: '2', LOG_LEVEL: 'error', SHUTDOWN_GRACE_MS: '6000' };
  const worker = spawnWorker(env);
  // Two running, two in the prefetch buffer or still queued.
  await waitFor(async () => ((await counts())?.running ?? 0) >= 2, 'two jobs to be running');
  await server.stop();
  worker.child.kill('SIGTERM');
  await server.restart();
  const exit = await worker.exited;
  expect(exit, worker.stderr().slice(-600) + worker.stdout().slice(-600)).toEqual({ code: 0, signal: null });
  const { rows } = await pool.query<{ id: string; state: string }>(`select id::text, state from pgq.all_jobs where id = any($1::bigint[])`, [jobs.map((j) => j.id)]);
  // Nothing of this worker is left running: what finished is recorded, the rest was handed back.
  expect(rows.filter((r) => r.state === 'running')).toEqual([]);
  const runs = await runsPerJob(pool);
  for (const r of rows.filter((j) => j.state === 'succeeded')) expect(runs.get(r.id)).toBe(1);
});

it('SIGTERM during a database outage that outlasts the stop: exit 1, and the jobs come back once the database does', async () => {
  await pool.query('truncate test_runs; delete from pgq.finished_jobs');
  await enqueueMany(pool, Array.from({ length: 2 }, () => ({ task: 'counted', payload: { workMs: 300 } })));
  const env = { DATABASE_URL: server.url, WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'), WORKER_CONCURRENCY: '2', LOG_LEVEL: 'error', SHUTDOWN_GRACE_MS: '1000' };
  const worker = spawnWorker(env);
  await waitFor(async () => ((await counts())?.running ?? 0) === 2, 'both jobs to be running');
  await server.stop();
  worker.child.kill('SIGTERM');
  const exit = await worker.exited;
  await server.restart();
  expect(exit.code).toBe(1);
  const helper = spawnWorker({ ...env, SHUTDOWN_GRACE_MS: '25000' });
  await waitFor(async () => ((await counts())?.succeeded ?? 0) === 2, 'both jobs to be done by another worker', 60_000);
  helper.child.kill('SIGTERM');
  await helper.exited;
});

/** The worker ids registered now. */
async function workerIds(): Promise<string[]> {
  return (await pool.query<{ id: string }>('select id::text from pgq.workers order by id')).rows.map((r) => r.id);
}

/** How many of `ids` are in the history; undefined while the server is away or resetting. */
async function finishedOf(ids: string[], state?: string): Promise<number | undefined> {
  try {
    const { rows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from pgq.finished_jobs where id = any($1::bigint[]) and ($2::text is null or state = $2)`,
      [ids, state ?? null],
    );
    return rows[0]!.n;
  } catch {
    return undefined;
  }
}

it('one backend SIGKILLed (every session dropped, start time unchanged): no live worker is declared dead, at-most-once jobs in flight run once and succeed', async () => {
  await pool.query('truncate test_runs; delete from pgq.finished_jobs; delete from pgq.jobs; delete from pgq.workers');
  const env = { DATABASE_URL: server.url, WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'), WORKER_CONCURRENCY: '4', LOG_LEVEL: 'error' };
  const workers = [spawnWorker(env), spawnWorker(env)];
  await waitFor(async () => (await workerIds()).length === 2, 'both workers to register');
  const before = await workerIds();
  const jobs = await enqueueMany(pool, Array.from({ length: 8 }, () => ({ task: 'counted', payload: { workMs: 2_500 }, delivery: 'at_most_once' as const })));
  await waitFor(async () => ((await counts())?.running ?? 0) === 8, 'all eight to be running');
  const { rows } = await pool.query<{ pid: number }>(
    `select pid from pg_stat_activity where application_name like 'pgq-worker %' and state is not null order by backend_start limit 1`,
  );
  process.kill(rows[0]!.pid, 'SIGKILL');
  await waitFor(async () => (await finishedOf(jobs.map((j) => j.id))) === 8, 'the eight to end', 60_000);
  const { rows: ended } = await pool.query<{ state: string; error: string | null }>(`select state, error from pgq.finished_jobs where id = any($1::bigint[])`, [jobs.map((j) => j.id)]);
  expect(ended.map((r) => r.error ?? r.state)).toEqual(Array(8).fill('succeeded'));
  const runs = await runsPerJob(pool);
  expect(jobs.map((j) => runs.get(j.id))).toEqual(Array(8).fill(1));
  expect(await workerIds()).toEqual(before);
  for (const w of workers) expect(w.child.exitCode).toBeNull();
});

it('a presence that loses its connection right after registering, once the database is back from an outage, reconnects at once: no live worker is declared dead', async () => {
  await pool.query('truncate test_runs; delete from pgq.finished_jobs; delete from pgq.jobs; delete from pgq.workers');
  const proxy = await TcpProxy.start({ host: '127.0.0.1', port: server.port });
  try {
    const env = { DATABASE_URL: proxy.urlFor(server.url), WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'), WORKER_CONCURRENCY: '4', LOG_LEVEL: 'error' };
    const worker = spawnWorker(env);
    await waitFor(async () => (await workerIds()).length === 1, 'the worker to register');
    const before = await workerIds();
    // The rescuer reaches the database directly and runs no jobs: only its death rules act.
    const rescuer = spawnWorker({ ...env, DATABASE_URL: server.url, WORKER_QUEUES: 'elsewhere' });
    await waitFor(async () => (await workerIds()).length === 2, 'the rescuer to register');
    const jobs = await enqueueMany(pool, Array.from({ length: 4 }, () => ({ task: 'counted', payload: { workMs: 9_000 }, delivery: 'at_most_once' as const })));
    await waitFor(async () => ((await counts())?.running ?? 0) === 4, 'all four to be running');
    await server.stop();
    const downAt = Date.now();
    // Long enough for the presence's reconnect pauses to grow past the lock-loss window.
    await waitFor(() => Date.now() - downAt >= 4_000, 'four seconds of outage to pass');
    // The first registration after the outage commits its heartbeat, then loses its connection.
    proxy.resetWhenClientSends('listen', 1, (c) => c.applicationName.endsWith(' presence'));
    await server.restart();
    await waitFor(async () => (await finishedOf(jobs.map((j) => j.id))) === 4, 'the four to end', 60_000);
    const { rows: ended } = await pool.query<{ state: string; error: string | null }>(`select state, error from pgq.finished_jobs where id = any($1::bigint[])`, [jobs.map((j) => j.id)]);
    expect(ended.map((r) => r.error ?? r.state)).toEqual(Array(4).fill('succeeded'));
    expect((await workerIds()).filter((id) => before.includes(id))).toEqual(before);
    const runs = await runsPerJob(pool);
    expect(jobs.map((j) => runs.get(j.id))).toEqual(Array(4).fill(1));
    for (const w of [worker, rescuer]) expect(w.child.exitCode).toBeNull();
  } finally {
    await proxy.close();
  }
});

it('a database outage of twice the lease: no worker is declared dead afterwards, jobs in flight run once', async () => {
  await pool.query('truncate test_runs; delete from pgq.finished_jobs; delete from pgq.jobs; delete from pgq.workers');
  const env = { DATABASE_URL: server.url, WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'), WORKER_CONCURRENCY: '2', LOG_LEVEL: 'error', WORKER_LEASE_MS: '2000' };
  const workers = [spawnWorker(env), spawnWorker(env)];
  await waitFor(async () => (await workerIds()).length === 2, 'both workers to register');
  const before = await workerIds();
  const jobs = await enqueueMany(pool, Array.from({ length: 4 }, () => ({ task: 'counted', payload: { workMs: 1_000 }, delivery: 'at_most_once' as const })));
  await waitFor(async () => ((await counts())?.running ?? 0) === 4, 'all four to be running');
  await server.stop();
  const downAt = Date.now();
  // Twice the lease, measured while the server is really down.
  await waitFor(() => Date.now() - downAt >= 4_000, 'twice the lease to pass');
  await server.restart();
  await waitFor(async () => (await finishedOf(jobs.map((j) => j.id), 'succeeded')) === 4, 'the four to be recorded', 60_000);
  expect(await workerIds()).toEqual(before);
  const runs = await runsPerJob(pool);
  expect(jobs.map((j) => runs.get(j.id))).toEqual(Array(4).fill(1));
  for (const w of workers) expect(w.child.exitCode).toBeNull();
});

it('a worker frozen past its lease wakes without starting what it had buffered; its old id never comes back', async () => {
  await pool.query('truncate test_runs; delete from pgq.finished_jobs; delete from pgq.jobs; delete from pgq.workers');
  const env = { DATABASE_URL: server.url, WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'), LOG_LEVEL: 'error', WORKER_LEASE_MS: '2000' };
  const frozen = spawnWorker({ ...env, WORKER_CONCURRENCY: '1' });
  const frozenId = await waitFor(async () => (await workerIds())[0], 'the worker to register');
  // Short jobs first, so its prefetch learns to claim ahead.
  await enqueueMany(pool, Array.from({ length: 30 }, () => ({ task: 'counted', payload: {} })));
  await waitFor(async () => ((await counts())?.succeeded ?? 0) === 30, 'the short jobs');
  const long = await enqueue(pool, { task: 'counted', payload: { workMs: 4_000 } });
  await waitFor(async () => ((await counts())?.running ?? 0) === 1, 'the long job to start');
  const buffered = await enqueueMany(pool, Array.from({ length: 5 }, () => ({ task: 'counted', payload: {}, delivery: 'at_most_once' as const })));
  await waitFor(async () => ((await counts())?.running ?? 0) === 6, 'the at-most-once jobs to be claimed into its buffer');
  frozen.child.kill('SIGSTOP');
  const rescuer = spawnWorker({ ...env, WORKER_CONCURRENCY: '1', WORKER_QUEUES: 'elsewhere' });
  await waitFor(async () => !(await workerIds()).includes(frozenId), 'the frozen worker to be declared dead', 30_000);
  frozen.child.kill('SIGCONT');
  // It registers anew and goes on working.
  const after = await enqueue(pool, { task: 'counted', payload: {} });
  await waitFor(async () => (await getJob(pool, after.id))?.state === 'succeeded', 'a new job to run', 30_000);
  const runs = await runsPerJob(pool);
  for (const j of buffered) expect(runs.get(j.id) ?? 0).toBe(0);
  expect((await getJob(pool, long.id))?.state).toMatch(/queued|running|succeeded/);
  expect(await workerIds()).not.toContain(frozenId);
  expect(frozen.child.exitCode).toBeNull();
  rescuer.child.kill('SIGKILL');
});
