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
import { killChildren, openDatabase, root, spawnWorker, waitFor } from './harness.ts';
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
