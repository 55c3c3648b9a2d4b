import fs from 'node:fs/promises';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { freePort } from '../scripts/local-postgres.ts';
import { enqueue, enqueueMany, getJob } from '../worker/index.ts';
import { killChildren, openDatabase, spawnWorker, waitFor, workerIdOf, httpGet } from './harness.ts';

let url: string;
let pool: pg.Pool;

beforeAll(async () => {
  ({ url, pool } = await openDatabase());
});
afterEach(killChildren);
afterAll(async () => {
  await pool.end();
});

const get = httpGet;

it('serves /healthz, /readyz and Prometheus /metrics, and logs JSON with a severity', async () => {
  const port = await freePort();
  const worker = spawnWorker({ DATABASE_URL: url, HEALTH_PORT: String(port) });
  const workerId = await workerIdOf(pool, worker.child.pid!);
  const ready = await waitFor(async () => {
    const r = await get(port, '/readyz');
    return r?.status === 200 ? r : undefined;
  }, '/readyz to answer 200');
  expect(JSON.parse(ready.body)).toEqual({ status: 'ready' });
  const health = await get(port, '/healthz');
  expect(health).toEqual({ status: 200, body: '{"status":"ok"}' });

  const { id } = await enqueue(pool, { task: 'sleep', payload: { workMs: 1 } });
  await waitFor(async () => (await getJob(pool, id))?.state === 'succeeded', 'the job to succeed');
  await enqueue(pool, { task: 'sleep', payload: { workMs: 1 }, runAfter: new Date(Date.now() + 3_600_000) });
  const metrics = (await get(port, '/metrics'))!;
  expect(metrics.status).toBe(200);
  expect(metrics.body).toMatch(/^pgq_jobs_total\{task="sleep",outcome="succeeded"\} 1$/m);
  expect(metrics.body).toMatch(/^pgq_queue_depth\{queue="default",when="scheduled"\} 1$/m);
  expect(metrics.body).toMatch(/^pgq_job_duration_seconds_count\{task="sleep"\} 1$/m);
  expect(metrics.body).toMatch(/^pgq_lease_recoveries_total/m);
  expect((await get(port, '/nope'))!.status).toBe(404);

  const { rows } = await pool.query('select jobs_in_flight, cpu from pgq.workers where id = $1', [workerId]);
  expect(rows).toHaveLength(1);
  const lines = worker.stdout().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(lines.find((l) => l.message === 'worker started')).toMatchObject({ severity: 'INFO' });
  expect(lines.every((l) => typeof l.severity === 'string' && typeof l.message === 'string' && typeof l.time === 'string')).toBe(true);
});

it('/healthz stays 200 while the database is unreachable; /readyz says why it is not ready', async () => {
  const port = await freePort();
  const deadDb = `postgres://postgres:postgres@127.0.0.1:${await freePort()}/nothing`;
  const worker = spawnWorker({ DATABASE_URL: deadDb, HEALTH_PORT: String(port) });
  const health = await waitFor(() => get(port, '/healthz'), '/healthz to answer');
  expect(health.status).toBe(200);
  const ready = (await get(port, '/readyz'))!;
  expect(ready.status).toBe(503);
  expect(JSON.parse(ready.body).status).toBe('not ready');
  expect(worker.child.exitCode).toBeNull();
});

it('holds at most DB_POOL_SIZE + 1 connections (4 by default) whatever its concurrency', async () => {
  const worker = spawnWorker({ DATABASE_URL: url, WORKER_CONCURRENCY: '64' });
  const workerId = await workerIdOf(pool, worker.child.pid!);
  await enqueueMany(pool, Array.from({ length: 200 }, () => ({ task: 'sleep', payload: { workMs: 300 } })));
  let most = 0;
  await waitFor(async () => {
    const { rows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name like $1`,
      [`pgq-worker ${worker.child.pid}%`],
    );
    most = Math.max(most, rows[0]!.n);
    const { rows: done } = await pool.query<{ n: number }>(`select count(*)::int as n from pgq.finished_jobs where worker_id = $1`, [workerId]);
    return done[0]!.n === 200;
  }, 'the 200 jobs to finish', 90_000);
  expect(most).toBeGreaterThanOrEqual(2);
  expect(most).toBeLessThanOrEqual(4);
});

it('runs burn jobs on threads: the event loop stays free while every slot burns', async () => {
  const port = await freePort();
  const worker = spawnWorker({ DATABASE_URL: url, HEALTH_PORT: String(port), WORKER_CONCURRENCY: '2', WORKER_CPU_THREADS: '2' });
  await workerIdOf(pool, worker.child.pid!);
  const threads = async () => Number(/^Threads:\s+(\d+)$/m.exec(await fs.readFile(`/proc/${worker.child.pid}/status`, 'utf8'))![1]);
  const idleThreads = await threads();
  const jobs = await enqueueMany(pool, [
    { task: 'burn', payload: { workMs: 3_000 } },
    { task: 'burn', payload: { workMs: 3_000 } },
  ]);
  await waitFor(async () => (await pool.query(`select count(*)::int as n from pgq.jobs where state = 'running'`)).rows[0].n === 2, 'both jobs to start');
  // Two more threads (the pool's), and /healthz answers at once: the burning is not on the main thread.
  expect(await waitFor(async () => ((await threads()) >= idleThreads + 2 ? true : undefined), 'the burn threads')).toBe(true);
  const asked = performance.now();
  expect((await get(port, '/healthz'))?.status).toBe(200);
  const answeredMs = performance.now() - asked;
  expect(answeredMs).toBeLessThan(1_000);
  expect((await getJob(pool, jobs[0]!.id))?.state).toBe('running');
  await waitFor(async () => (await getJob(pool, jobs[1]!.id))?.state === 'succeeded' && (await getJob(pool, jobs[0]!.id))?.state === 'succeeded', 'both burns to finish');
});

it('/metrics stays small: unknown task names share one label, at most 50 queues are named, the depth is cached', async () => {
  const port = await freePort();
  spawnWorker({ DATABASE_URL: url, HEALTH_PORT: String(port) });
  const jobs = await enqueueMany(pool, Array.from({ length: 300 }, (_, i) => ({ task: `no-such-task-${i}` })));
  await waitFor(async () => {
    const { rows } = await pool.query(`select count(*)::int as n from pgq.finished_jobs where id = any($1::bigint[])`, [jobs.map((j) => j.id)]);
    return rows[0].n === 300;
  }, 'the jobs of unknown tasks to fail');
  await enqueueMany(pool, Array.from({ length: 80 }, (_, i) => ({ task: 'sleep', queue: `q${i}`, runAfter: new Date(Date.now() + 3_600_000) })));
  const first = (await get(port, '/metrics'))!.body;
  expect(first).toMatch(/^pgq_jobs_total\{task="unregistered",outcome="failed"\} 300$/m);
  expect(first).not.toMatch(/no-such-task/);
  const queues = new Set([...first.matchAll(/^pgq_queue_depth\{queue="([^"]+)"/gm)].map((m) => m[1]));
  expect(queues.size).toBe(50);
  expect(queues.has('(other)')).toBe(true);
  // Nothing is dropped: the named queues and (other) add up to every queued job.
  const shown = [...first.matchAll(/^pgq_queue_depth\{queue="[^"]+",when="(?:due|scheduled)"\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
  const { rows } = await pool.query(`select count(*)::int as n from pgq.jobs where state = 'queued'`);
  expect(shown).toBe(rows[0].n);
  // A job enqueued now shows at the next refresh, not at the next scrape.
  await enqueue(pool, { task: 'sleep', queue: 'fresh', runAfter: new Date(Date.now() + 3_600_000) });
  expect((await get(port, '/metrics'))!.body).not.toMatch(/queue="fresh"/);
});
