import type { Clock } from '../clock.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { executeHandler, type Run } from './execute.ts';
import type { OutcomeRecorder } from './outcomes.ts';
import type { PrefetchSizer } from './prefetch.ts';
import { ProgressReporter } from './progress.ts';
import type { WorkerDeps } from './types.ts';

export interface JobRunDeps extends WorkerDeps {
  readonly clock: Clock;
  readonly prefetch: PrefetchSizer;
  readonly outcomes: OutcomeRecorder;
  readonly maxResultBytes: number;
}

/** One job from its start to its outcome handed to the recorder (unless it was abandoned). */
export async function runJob(run: Run, deps: JobRunDeps): Promise<void> {
  const { job } = run;
  // A child logger per job costs an allocation most jobs never use: made on first use.
  let child: Logger | undefined;
  const log = () => (child ??= deps.logger.child({ jobId: job.id, task: job.task, attempt: job.attempt }));
  const startedAt = deps.clock.now();
  const outcome = await executeHandler(run, {
    tasks: deps.tasks,
    threads: deps.threads,
    log,
    progress: (value) => progressOf(run, deps).report(value),
    maxResultBytes: deps.maxResultBytes,
  });
  const runMs = deps.clock.now() - startedAt;
  deps.prefetch.observe(job.task, runMs);
  deps.metrics?.jobRan(job.task, runMs / 1000);
  if (run.abandoned) return;
  await run.progress?.flush();
  if (run.revokedFrom !== undefined) {
    deps.outcomes.sendLateOutcome(run.revokedFrom, job, outcome);
    return;
  }
  if (outcome.ok) {
    deps.outcomes.addSuccess({ id: job.id, attempt: job.attempt, claimSeq: job.claimSeq, createdAt: job.createdAt, resultJson: outcome.resultJson, startedAt: run.startedAt }, job.task);
    return;
  }
  await deps.outcomes.recordFailure(deps.presence.workerId!, job, outcome.error, log);
}

/** The run's progress reporter, made on first report. */
function progressOf(run: Run, deps: JobRunDeps): ProgressReporter {
  run.progress ??= new ProgressReporter(
    (value) => {
      const workerId = deps.presence.workerId;
      return workerId ? deps.db.setProgress(workerId, run.job, value) : Promise.resolve(false);
    },
    (error) => deps.logger.warn({ jobId: run.job.id, err: describeError(error) }, 'could not store progress'),
    deps.clock,
  );
  if (run.abandoned) run.progress.close();
  return run.progress;
}
