/**
 * A graphile-worker process for the benchmark. Env: BENCH_DATABASE_URL, BENCH_MODE (`tuned`:
 * the configuration in settings.ts; `default`: run() with no options beyond the connection).
 */
import { Logger, run, type Task } from 'graphile-worker';
import { BENCH_TASK } from './protocol.ts';
import { handle, ready } from './recorder.ts';
import { GRAPHILE_TUNED } from './settings.ts';

const connectionString = process.env.BENCH_DATABASE_URL;
if (!connectionString) throw new Error('BENCH_DATABASE_URL is required');
const tuned = process.env.BENCH_MODE !== 'default';

// Info logs (one line per start) would cost CPU in the measured process; errors still show.
const logger = new Logger(() => (level, message) => {
  if (level === 'error') process.stderr.write(`graphile-worker: ${message}\n`);
});

const bench: Task = async (payload, helpers) => {
  await handle(helpers.job.id, payload, () => helpers.abortSignal);
};

const runner = await run({
  connectionString,
  taskList: { [BENCH_TASK]: bench },
  logger,
  // The runner stops the worker on SIGTERM below; graphile's own handlers would race it.
  noHandleSignals: true,
  ...(tuned
    ? { concurrency: GRAPHILE_TUNED.concurrency, maxPoolSize: GRAPHILE_TUNED.maxPoolSize, preset: GRAPHILE_TUNED.preset }
    : {}),
});
ready();

process.once('SIGTERM', () => {
  runner.stop().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`graphile-worker: stop failed: ${String(error)}\n`);
      process.exit(1);
    },
  );
});
