/**
 * The worker process: what `npm run worker` and the container run. Reads its configuration
 * from the environment (and a .env file in the working directory, for local runs), serves
 * /healthz, /readyz and /metrics, runs jobs until SIGTERM or SIGINT, then drains and exits: 0 when
 * every outcome was recorded, 1 when some never were (a database outage that outlasted the stop).
 */
import { loadDotEnv, parseWorkerConfig, type WorkerConfig } from './config.ts';
import { describeError, InvalidInputError } from './errors.ts';
import { createLogger } from './logger.ts';
import { startWorkerRuntime } from './runtime.ts';
import { loadTasks } from './tasks/load.ts';

/** Seconds of the grace period kept for handing back jobs and closing connections. */
function drainBudget(graceMs: number): number {
  return Math.max(0, graceMs - Math.min(2_000, graceMs * 0.2));
}

async function main(): Promise<void> {
  loadDotEnv();
  let config: WorkerConfig;
  let tasks;
  try {
    config = parseWorkerConfig(process.env);
    tasks = await loadTasks(config.taskModules);
  } catch (error) {
    if (error instanceof InvalidInputError) {
      process.stderr.write(`worker: invalid configuration: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);
  const runtime = await startWorkerRuntime(config, tasks, logger);
  logger.info(
    { concurrency: config.concurrency, queues: config.queues ?? 'all', healthPort: runtime.healthPort, tasks: [...tasks.keys()] },
    'worker started',
  );

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal, graceMs: config.shutdownGraceMs }, 'stopping: no new jobs; running jobs get the grace period');
    const hardStop = setTimeout(() => {
      logger.error('shutdown overran the grace period; exiting');
      process.exit(1);
    }, config.shutdownGraceMs + 5_000);
    hardStop.unref();
    runtime
      // Records go on being retried through a database outage until shortly before the hard stop.
      .stop(drainBudget(config.shutdownGraceMs), config.shutdownGraceMs + 3_000)
      .then((result) => {
        const summary = { finished: result.finished, handedBack: result.handedBack.length, failed: result.failed.length, unrecorded: result.unrecorded };
        if (result.unrecorded.length > 0) {
          logger.error(summary, 'stopped with outcomes the database never acknowledged; maintenance returns those jobs');
          process.exit(1);
        }
        logger.info(summary, 'stopped');
        process.exit(0);
      })
      .catch((error) => {
        logger.error({ err: describeError(error) }, 'shutdown failed');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error) => {
  process.stderr.write(`worker: ${describeError(error)}\n`);
  process.exit(1);
});
