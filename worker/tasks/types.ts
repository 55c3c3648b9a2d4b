import type { Logger } from '../logger.ts';
import type { ClaimedJob } from '../types.ts';

/** What a task handler gets besides its payload. */
export interface TaskContext {
  readonly job: ClaimedJob;
  /** Aborted when the job is cancelled or the worker must hand it back; stop work when it fires. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /**
   * Report progress: any JSON value, stored on the job and readable (getJob, pgq.jobs.progress)
   * while it runs. Cheap to call often: writes are coalesced to a few per second.
   */
  progress(value: unknown): void;
  /**
   * Run a module's function on the worker's thread pool, for CPU-bound work: the event loop
   * stays free for other jobs, heartbeats and health checks, and a process can use every CPU.
   * The module's export (default: `default`) receives `payload` and returns a JSON value.
   */
  runOnThread<T = unknown>(module: string | URL, payload: unknown, exportName?: string): Promise<T>;
}

/** A task: receives the job's payload, returns its result (any JSON value), throws to fail. */
export type TaskHandler = (payload: unknown, ctx: TaskContext) => unknown;

/** Task name -> handler. */
export type TaskRegistry = ReadonlyMap<string, TaskHandler>;
