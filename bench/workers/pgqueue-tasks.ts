/**
 * The benchmark's task for our own worker process: loaded by the real `worker/main.ts` through
 * WORKER_TASKS, so what is measured is exactly what the container runs.
 */
import type { TaskHandler } from '../../worker/tasks/types.ts';
import { BENCH_TASK } from './protocol.ts';
import { handle } from './recorder.ts';

/** A no-op: record the job and return null; hold jobs wait until done or handed back. */
const bench: TaskHandler = async (payload, ctx) => {
  await handle(ctx.job.id, payload, () => ctx.signal);
  return null;
};

export default { [BENCH_TASK]: bench };
