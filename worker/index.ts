/**
 * gcpmig-pgqueue: a work queue on PostgreSQL. Enqueue with `enqueue`/`enqueueMany` (through a
 * pg.Pool, or a client inside your own transaction); run workers with `runWorker` or the
 * `worker` process; inspect with `getJob`, `countByState`; cancel with `cancelJob`.
 */
import os from 'node:os';
import type pg from 'pg';
import { parseConnection, type WorkerConfig } from './config.ts';
import { silentLogger, type Logger } from './logger.ts';
import * as q from './queries.ts';
import { startWorkerRuntime, type WorkerRuntime } from './runtime.ts';
import { loadTasks } from './tasks/load.ts';
import type { TaskHandler } from './tasks/types.ts';

export { enqueue, enqueueMany, MAX_PAYLOAD_BYTES, type Target } from './enqueue.ts';
export { migrate, loadMigrations, type MigrateResult } from './migrate.ts';
export { parseWorkerConfig, parseConnection, type WorkerConfig } from './config.ts';
export { PermanentError, CancelledError, InvalidInputError } from './errors.ts';
export { createLogger, type Logger } from './logger.ts';
export type { TaskContext, TaskHandler, TaskRegistry } from './tasks/types.ts';
export type { JobSpec, Job, JobState, Delivery, ClaimedJob, EnqueueResult } from './types.ts';
export { JOB_STATES } from './types.ts';
export type { WorkerRuntime } from './runtime.ts';
export type { StopResult } from './worker.ts';

/** One job by id, live or finished (with its result or error), or null. */
export const getJob = (db: pg.Pool | pg.ClientBase, id: string) => q.getJob(db, id);
/** Jobs per state. */
export const countByState = (db: pg.Pool | pg.ClientBase) => q.countByState(db);
/** Cancel a job; returns the state it is in afterwards (running jobs are aborted at the next heartbeat). */
export const cancelJob = (db: pg.Pool | pg.ClientBase, id: string) => q.cancelJob(db, id);
/** Live workers. */
export const listWorkers = (db: pg.Pool | pg.ClientBase) => q.listWorkers(db);

/** Options of runWorker: any WorkerConfig field, plus tasks as an object. */
export interface RunWorkerOptions extends Partial<Omit<WorkerConfig, 'connection'>> {
  /** Connection settings; default: DATABASE_URL or the libpq variables. */
  connection?: pg.ClientConfig;
  /** Your tasks, by name (the built-in burn and sleep are always there). */
  tasks?: Record<string, TaskHandler>;
  logger?: Logger;
  /** Serve /healthz, /readyz and /metrics on healthPort (default false for library use). */
  serveHealth?: boolean;
}

/** Run a worker inside your own process. Call `stop(graceMs)` on the result to drain and close. */
export async function runWorker(options: RunWorkerOptions = {}): Promise<WorkerRuntime> {
  const cpus = os.availableParallelism();
  const concurrency = options.concurrency ?? cpus;
  const config: WorkerConfig = {
    connection: options.connection ?? parseConnection(process.env),
    concurrency,
    queues: options.queues ?? null,
    batchSize: options.batchSize ?? 1000,
    healthPort: options.healthPort ?? 0,
    shutdownGraceMs: options.shutdownGraceMs ?? 25_000,
    migrate: options.migrate ?? true,
    logLevel: options.logLevel ?? 'info',
    poolSize: options.poolSize ?? 2,
    leaseMs: options.leaseMs ?? 15_000,
    pollMs: options.pollMs ?? 1_000,
    rescueIntervalMs: options.rescueIntervalMs ?? 1_000,
    retentionMs: options.retentionMs ?? 7 * 24 * 3_600_000,
    retryBaseMs: options.retryBaseMs ?? 1_000,
    retryMaxMs: options.retryMaxMs ?? 3_600_000,
    taskModules: options.taskModules ?? [],
    cpuThreads: options.cpuThreads ?? cpus,
  };
  const registry = new Map(await loadTasks(config.taskModules));
  for (const [name, handler] of Object.entries(options.tasks ?? {})) registry.set(name, handler);
  return startWorkerRuntime(config, registry, options.logger ?? silentLogger, { serveHealth: options.serveHealth ?? false });
}
