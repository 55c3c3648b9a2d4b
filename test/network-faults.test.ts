/**
 * Workers reaching Postgres through a network that misbehaves (test/support/tcp-proxy.ts): replies
 * swallowed after the server processed them with the connection reset, and connections that
 * stop forwarding without closing. No worker may exit, and no job may be stranded.
 */
import path from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import type pg from 'pg';
import { countByState, enqueueMany } from '../worker/index.ts';
import { createRunsTable, runsPerJob } from './fixtures/runs.ts';
import { freePort } from '../scripts/local-postgres.ts';
import { killChildren, openDatabase, root, spawnWorker, waitFor, httpGet } from './harness.ts';
import { TcpProxy } from './support/tcp-proxy.ts';

let url: string;
let pool: pg.Pool;
let proxy: TcpProxy;

beforeAll(async () => {
  ({ url, pool } = await openDatabase());
  await createRunsTable(pool);
});
afterEach(async () => {
  killChildren();
  await proxy?.close();
  await pool.query('truncate test_runs; delete from pgq.finished_jobs; delete from pgq.jobs; delete from pgq.workers');
});
afterAll(() => pool.end());

function startProxy(): Promise<TcpProxy> {
  const target = new URL(url);
  return TcpProxy.start({ host: target.hostname, port: Number(target.port) });
}

function workerEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: proxy.urlFor(url),
    RUNS_DATABASE_URL: url,
    WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'),
    WORKER_CONCURRENCY: '4',
    LOG_LEVEL: 'error',
    ...extra,
  };
}

it('workers behind a proxy that drops replies and resets connections never exit, and every job succeeds', async () => {
  proxy = await startProxy();
  const total = 1_500;
  await enqueueMany(pool, Array.from({ length: total }, () => ({ task: 'counted', payload: { workMs: 5 } })));
  const workers = [spawnWorker(workerEnv()), spawnWorker(workerEnv()), spawnWorker(workerEnv())];
  await waitFor(async () => (await countByState(pool)).succeeded >= 100, 'the drain to be under way');
  // About one reply in fifty, on any connection (claims, settles, maintenance, presence), 40 times.
  proxy.dropRepliesAndReset(40, () => true, 0.02);
  await waitFor(() => {
    const gone = workers.find((w) => w.child.exitCode !== null || w.child.signalCode !== null);
    if (gone) throw new Error(`a worker exited during the resets: ${gone.stderr().slice(-600)}`);
    return proxy.dropped >= 40;
  }, 'the proxy to reset 40 connections', 60_000);
  proxy.heal();
  const final = await waitFor(async () => {
    const c = await countByState(pool);
    return c.succeeded + c.failed === total ? c : undefined;
  }, 'every job to end', 90_000);
  for (const w of workers) expect(w.child.exitCode, `a worker exited: ${w.stderr().slice(-600)}`).toBeNull();
  expect(final).toMatchObject({ succeeded: total, failed: 0, queued: 0, running: 0 });
  expect((await runsPerJob(pool)).size).toBe(total);
});

it('jobs held on pool connections that go silent are recorded on new ones, within the deadlines', async () => {
  proxy = await startProxy();
  const worker = spawnWorker(workerEnv({ DB_STATEMENT_TIMEOUT_MS: '1000', DB_POOL_SIZE: '2', LOG_LEVEL: 'warn' }));
  const pid = worker.child.pid!;
  await enqueueMany(pool, Array.from({ length: 8 }, () => ({ task: 'counted', payload: { workMs: 1_500 } })));
  await waitFor(async () => (await countByState(pool)).running === 4, 'four jobs to be running');
  // Both pool connections go silent mid-statement while the presence connection lives on:
  // before deadlines, a pool full of connections that never reply hung for as long as TCP allows.
  const poolConnection = (c: { applicationName: string }) => c.applicationName === `pgq-worker ${pid}`;
  proxy.silenceAtNextStatement(2, poolConnection);
  await waitFor(() => proxy.connections().filter((c) => poolConnection(c) && c.blackHoled).length === 2, 'both pool connections to hang');
  const final = await waitFor(async () => {
    const c = await countByState(pool);
    return c.succeeded === 8 ? c : undefined;
  }, 'every job to be recorded', 30_000).catch(async (error: Error) => {
    throw new Error(`${error.message}: ${JSON.stringify(await countByState(pool))} ${JSON.stringify(proxy.connections())}\n${worker.stdout().slice(-3000)}`);
  });
  expect(final).toMatchObject({ succeeded: 8, running: 0, queued: 0 });
  expect([...(await runsPerJob(pool)).values()]).toEqual(Array(8).fill(1));
  expect(worker.child.exitCode).toBeNull();
});

it('a presence connection that goes silent is replaced, and the worker goes on taking jobs', async () => {
  proxy = await startProxy();
  const worker = spawnWorker(workerEnv({ WORKER_LEASE_MS: '6000' }));
  const pid = worker.child.pid!;
  const presence = (c: { applicationName: string }) => c.applicationName === `pgq-worker ${pid} presence`;
  await waitFor(() => proxy.connections().some(presence), 'the presence connection');
  proxy.blackHole(presence, { newConnections: false });
  await waitFor(() => proxy.connections().some((c) => presence(c) && !c.blackHoled), 'a new presence connection', 20_000);
  await enqueueMany(pool, Array.from({ length: 200 }, () => ({ task: 'counted', payload: {} })));
  await waitFor(async () => (await countByState(pool)).succeeded === 200 || undefined, 'the jobs to be done', 30_000);
  expect(worker.child.exitCode).toBeNull();
});

const get = httpGet;

it('/healthz turns unhealthy when the pool is dead while heartbeats get through, and healthy again once it works', async () => {
  proxy = await startProxy();
  const port = await freePort();
  const worker = spawnWorker(workerEnv({ HEALTH_PORT: String(port), HEALTH_STALL_MS: '2000', DB_STATEMENT_TIMEOUT_MS: '300', WORKER_LEASE_MS: '2500' }));
  const pid = worker.child.pid!;
  await waitFor(async () => (await get(port, '/readyz'))?.status === 200, 'the worker to be ready');
  proxy.blackHole((c) => c.applicationName === `pgq-worker ${pid}`);
  const sick = await waitFor(async () => {
    const r = await get(port, '/healthz');
    return r?.status === 503 ? r : undefined;
  }, '/healthz to turn unhealthy', 30_000);
  expect(JSON.parse(sick.body)).toMatchObject({ status: 'unhealthy', reason: expect.stringMatching(/heartbeats get through/) });
  proxy.heal();
  await waitFor(async () => (await get(port, '/healthz'))?.status === 200, '/healthz to be healthy again', 30_000);
  expect(worker.child.exitCode).toBeNull();
});

it('/healthz stays healthy while the whole database is unreachable; /readyz gives a generic reason', async () => {
  proxy = await startProxy();
  const port = await freePort();
  const worker = spawnWorker(workerEnv({ HEALTH_PORT: String(port), HEALTH_STALL_MS: '1000', DB_STATEMENT_TIMEOUT_MS: '300', WORKER_LEASE_MS: '2500' }));
  await waitFor(async () => (await get(port, '/readyz'))?.status === 200, 'the worker to be ready');
  proxy.blackHole(() => true);
  const until = Date.now() + 8_000;
  while (Date.now() < until) {
    expect((await get(port, '/healthz'))?.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const ready = await waitFor(async () => {
    const r = await get(port, '/readyz');
    return r?.status === 503 ? r : undefined;
  }, '/readyz to say not ready');
  expect(JSON.parse(ready.body).reason).toMatch(/^(database not reachable|worker not registered with the database \(yet\))$/);
  expect(worker.child.exitCode).toBeNull();
});
