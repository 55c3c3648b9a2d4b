/** Running one job's handler: its context, its abort signal, and what its result becomes. */
import { PermanentError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { TaskContext, TaskRegistry } from '../tasks/types.ts';
import type { ThreadPool } from '../thread-pool.ts';
import type { ClaimedJob } from '../types.ts';
import { jsonRefusal } from '../poison.ts';
import type { ProgressReporter } from './progress.ts';

/** A job this worker is running. */
export interface Run {
  readonly job: ClaimedJob;
  /**
   * When the handler started, on the database's clock: the claim's time plus the monotonic wait
   * in the buffer. The VM's own clock may be off; the history must not be.
   */
  readonly startedAt: Date;
  /** Made on first use of ctx.signal: most handlers never look, and a controller per job costs. */
  controller?: AbortController;
  /** Why the run was aborted (cancel, hand-back), if it was. */
  abortReason?: unknown;
  /** Settles when the run has ended and its outcome is handed to the recorder. */
  done: Promise<void>;
  /** Set when the job was handed back: whatever the handler does later no longer counts. */
  abandoned: boolean;
  /**
   * Set when the incarnation that claimed this at-most-once run was revoked while it ran: its
   * outcome is sent late, under that incarnation's token, to replace the rescuer's record.
   */
  revokedFrom?: string;
  progress?: ProgressReporter;
}

/** How a handler ended: its result as JSON, or the error that fails the run. */
export type Outcome = { readonly ok: true; readonly resultJson: string } | { readonly ok: false; readonly error: unknown };

export interface ExecuteDeps {
  readonly tasks: TaskRegistry;
  readonly threads: ThreadPool;
  /** The job's logger, made on first use. */
  readonly log: () => Logger;
  readonly progress: (value: unknown) => void;
  readonly maxResultBytes: number;
}

/** Run the job's handler to its end; never throws. */
export async function executeHandler(run: Run, deps: ExecuteDeps): Promise<Outcome> {
  const { job } = run;
  try {
    const handler = deps.tasks.get(job.task);
    if (!handler) {
      throw new PermanentError(`unknown task '${job.task}' (this worker knows: ${[...deps.tasks.keys()].join(', ')})`);
    }
    const ctx: TaskContext = {
      job,
      get signal() {
        return signalOf(run);
      },
      get logger() {
        return deps.log();
      },
      progress: deps.progress,
      runOnThread: (module, payload, exportName = 'default') => deps.threads.run(module, payload, exportName, signalOf(run)),
    };
    const result = await handler(job.payload, ctx);
    const serialised = serialiseResult(result, deps.maxResultBytes);
    return typeof serialised === 'string' ? { ok: true, resultJson: serialised } : { ok: false, error: serialised };
  } catch (error) {
    return { ok: false, error: run.abortReason ?? error };
  }
}

function signalOf(run: Run): AbortSignal {
  if (!run.controller) {
    run.controller = new AbortController();
    if (run.abortReason !== undefined) run.controller.abort(run.abortReason);
  }
  return run.controller.signal;
}

/** Abort the run's handler (it sees ctx.signal fire) for `reason`. */
export function abortRun(run: Run, reason: unknown): void {
  run.abortReason = reason;
  run.controller?.abort(reason);
}

/** The result as JSON, or the error that makes the run fail instead. */
export function serialiseResult(result: unknown, maxBytes: number): string | Error {
  let json: string | undefined;
  try {
    json = JSON.stringify(result ?? null);
  } catch (error) {
    return new PermanentError(`result: not JSON-serialisable (${(error as Error).message})`);
  }
  if (json === undefined) return new PermanentError('result: not JSON-serialisable');
  const refusal = jsonRefusal(json);
  if (refusal) return new PermanentError(`result: ${refusal}`);
  const bytes = Buffer.byteLength(json);
  if (bytes > maxBytes) return new PermanentError(`result: ${bytes} bytes of JSON exceeds the ${maxBytes}-byte limit`);
  return json;
}
