import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { silentLogger } from '../worker/logger.ts';
import type { WorkerMetrics } from '../worker/metrics.ts';
import { poolDatabase, type LoopDatabase } from '../worker/loop/database.ts';
import type { PresenceView, WorkerOptions } from '../worker/loop/types.ts';
import { Worker } from '../worker/loop/worker.ts';
import * as q from '../worker/sql/workers.ts';
import { builtinTasks } from '../worker/tasks/builtin.ts';
import { drawWorkerId, workerLockKey } from '../worker/locks.ts';
import type { TaskHandler } from '../worker/tasks/types.ts';
import { ThreadPool } from '../worker/thread-pool.ts';
import { createTestDatabase } from './database.ts';

export const root = fileURLToPath(new URL('..', import.meta.url));

/** A migrated database of its own and a pool on it. */
export async function openDatabase(options: { empty?: boolean } = {}): Promise<{ url: string; pool: pg.Pool }> {
  const url = await createTestDatabase(options);
  // Named as a worker's sessions are: maintenance's death rules look at when those started.
  const pool = new pg.Pool({ connectionString: url, max: 4, application_name: 'pgq-worker test' });
  pool.on('error', () => {});
  return { url, pool };
}

/** Poll `check` until it returns a truthy value; the state is asked for, never slept on. */
export async function waitFor<T>(check: () => Promise<T | undefined | null | false> | T | undefined | null | false, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * A worker loop driven by hand: registered in pgq.workers (without the presence connection)
 * so tests can call runOnce() and see exactly what one iteration does.
 */
export async function manualWorker(
  pool: pg.Pool,
  options: Partial<WorkerOptions> & {
    tasks?: Record<string, TaskHandler>;
    random?: () => number;
    db?: LoopDatabase;
    metrics?: WorkerMetrics;
    /** The worker's view of its presence (default: registered, ready, lease always valid). */
    presence?: (workerId: string) => PresenceView;
  } = {},
): Promise<{ worker: Worker; workerId: string; threads: ThreadPool; kill(): void; close(): Promise<void> }> {
  // Hold the worker's presence lock on a connection of its own, as a real worker does, so the
  // rescuer sees it alive; releasing that connection is how a test makes it die.
  const presence = await pool.connect();
  await presence.query('begin');
  const workerId = drawWorkerId();
  await q.insertWorker(presence, { id: workerId, host: os.hostname(), pid: process.pid, queues: options.queues ?? null, concurrency: options.concurrency ?? 4, version: 'test' });
  await q.lockWorkerPresence(presence, workerLockKey(workerId));
  await presence.query('commit');
  const tasks = new Map(builtinTasks);
  for (const [name, handler] of Object.entries(options.tasks ?? {})) tasks.set(name, handler);
  const threads = new ThreadPool(2);
  const worker = new Worker(
    {
      db: options.db ?? poolDatabase(pool),
      presence: options.presence?.(workerId) ?? { workerId, ready: true, whenReady: () => Promise.resolve() },
      tasks,
      threads,
      logger: silentLogger,
      random: options.random,
      metrics: options.metrics,
    },
    {
      concurrency: options.concurrency ?? 4,
      batchSize: options.batchSize ?? options.concurrency ?? 4,
      queues: options.queues ?? null,
      pollMs: options.pollMs ?? 50,
      retryBaseMs: options.retryBaseMs ?? 1000,
      retryMaxMs: options.retryMaxMs ?? 60_000,
      failedClaimWindowMs: options.failedClaimWindowMs,
      reconcileEveryMs: options.reconcileEveryMs,
      prefetchHorizonMs: options.prefetchHorizonMs,
    },
  );
  let dead = false;
  // As if the process died: the connection closes, and the lock with it.
  const kill = () => {
    if (dead) return;
    dead = true;
    presence.release(true);
  };
  return {
    worker,
    workerId,
    threads,
    kill,
    async close() {
      await worker.stop(0).catch(() => {});
      await threads.close();
      kill();
    },
  };
}

/** Run iterations until every claimed job has ended and its outcome is recorded. */
export async function drain(worker: Worker, iterations = 1): Promise<void> {
  for (let i = 0; i < iterations; i++) {
    await worker.runOnce();
    await waitFor(() => worker.inFlight === 0, 'running jobs to end');
  }
  await worker.flush();
}

/** A worker process started the way the container starts it, on TypeScript sources. */
export interface WorkerProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout(): string;
  stderr(): string;
}

const children = new Set<ChildProcess>();

/**
 * Spawn `node --import tsx worker/main.ts` directly (not the tsx CLI, whose real process is a
 * grandchild that SIGKILL would miss), from this tree or another release's (`tree`).
 */
export function spawnWorker(env: Record<string, string>, tree = root): WorkerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(tree, 'worker/main.ts')], {
    cwd: tree,
    env: { PATH: process.env.PATH ?? '', HEALTH_PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, exited, stdout: () => out, stderr: () => err };
}

/** vitest does not reap children: kill whatever a test left running. */
export function killChildren(): void {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
}

/**
 * Kill every child and wait until the server has ended their sessions: a backend can go on with
 * its statement after its process died, and a cleanup that truncates the tables would deadlock
 * with a maintenance pass still holding some of them.
 */
export async function killChildrenAndWait(pool: pg.Pool): Promise<void> {
  const pids = [...children].map((c) => c.pid).filter((p): p is number => p !== undefined);
  killChildren();
  if (pids.length === 0) return;
  await waitFor(async () => {
    const { rows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = any($1::text[])`,
      [pids.flatMap((p) => [`pgq-worker ${p}`, `pgq-worker ${p} presence`, `pgq-worker ${p} migrate`])],
    );
    return rows[0]!.n === 0;
  }, 'the killed workers\' sessions to end');
}

/** The worker id a spawned process registered under (by its pid). */
export async function workerIdOf(pool: pg.Pool, pid: number): Promise<string> {
  return waitFor(async () => {
    const { rows } = await pool.query<{ id: string }>('select id::text from pgq.workers where pid = $1', [pid]);
    return rows[0]?.id;
  }, `worker pid ${pid} to register`);
}

/** GET a path of a worker's health server; undefined while nothing answers. */
export async function httpGet(port: number, path: string): Promise<{ status: number; body: string } | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: await res.text() };
  } catch {
    return undefined;
  }
}
