/**
 * gcpmig-pgqueue: a work queue on PostgreSQL. Enqueue with `enqueue`/`enqueueMany` (through a
 * pg.Pool, or a client inside your own transaction); run workers with `runWorker` or the
 * `worker` process; inspect with `getJob`, `countByState`; cancel with `cancelJob`.
 */
import type pg from 'pg';
import { parseConnection, resolveWorkerConfig, type WorkerSettings } from './config.ts';
import { silentLogger, type Logger } from './logger.ts';
import { startWorkerRuntime, type WorkerRuntime } from './runtime.ts';
import * as jobs from './sql/jobs.ts';
import * as stats from './sql/stats.ts';
import { loadTasks } from './tasks/load.ts';
import type { TaskHandler } from './tasks/types.ts';

export { enqueue, enqueueMany, MAX_PAYLOAD_BYTES, type Target } from './enqueue.ts';
export { migrate, loadMigrations, type MigrateResult } from './migrate.ts';
export { parseWorkerConfig, parseConnection, resolveWorkerConfig, type WorkerConfig, type WorkerSettings } from './config.ts';
export { PermanentError, CancelledError, InvalidInputError } from './errors.ts';
export { createLogger, type Logger } from './logger.ts';
export type { TaskContext, TaskHandler, TaskRegistry } from './tasks/types.ts';
export type { JobSpec, Job, JobState, Delivery, ClaimedJob, EnqueueResult } from './types.ts';
export { JOB_STATES } from './types.ts';
export type { WorkerRuntime } from './runtime.ts';
export type { StopResult } from './loop/types.ts';

/** One job by id, live or finished (with its result or error), or null. */
export const getJob = (db: pg.Pool | pg.ClientBase, id: string) => jobs.getJob(db, id);
/** Jobs per state. */
export const countByState = (db: pg.Pool | pg.ClientBase) => stats.countByState(db);
/** Cancel a job; returns the state it is in afterwards (running jobs are aborted at the next heartbeat). */
export const cancelJob = (db: pg.Pool | pg.ClientBase, id: string) => jobs.cancelJob(db, id);
/** Live workers. */
export const listWorkers = (db: pg.Pool | pg.ClientBase) => stats.listWorkers(db);

/** Options of runWorker: any worker setting (same defaults and checks as the env), plus tasks as an object. */
export interface RunWorkerOptions extends WorkerSettings {
  /** Connection settings; default: DATABASE_URL or the libpq variables. */
  connection?: pg.ClientConfig;
  /** Your tasks, by name (the built-in burn and sleep are always there). */
  tasks?: Record<string, TaskHandler>;
  logger?: Logger;
  /** Serve /healthz, /readyz and /metrics on healthPort (default false for library use). */
  serveHealth?: boolean;
}

/**
 * Run a worker inside your own process. Call `stop(graceMs)` on the result to drain and close.
 * Bad options throw an InvalidInputError naming the option.
 */
export async function runWorker(options: RunWorkerOptions = {}): Promise<WorkerRuntime> {
  const { connection, tasks, logger, serveHealth, ...settings } = options;
  const config = resolveWorkerConfig(connection ?? parseConnection(process.env), settings);
  const registry = new Map(await loadTasks(config.taskModules));
  for (const [name, handler] of Object.entries(tasks ?? {})) registry.set(name, handler);
  return startWorkerRuntime(config, registry, logger ?? silentLogger, { serveHealth: serveHealth ?? false });
}
