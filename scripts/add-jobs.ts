/**
 * add-jobs: enqueue load. `npm run add-jobs -- <work-ms> <count>` as in the original demo
 * (`add.js 3000 128`), in bulk batches, with progress; or a steady stream with --rate/--duration.
 */
import { pathToFileURL } from 'node:url';
import { enqueueMany, type JobSpec } from '../worker/index.ts';
import { describeError } from '../worker/errors.ts';
import { DELIVERIES, type Delivery } from '../worker/types.ts';
import { connect, numberArg, parseFlags, runCli, UsageError } from './cli.ts';
import { progressLine } from './format.ts';

const USAGE = `usage: npm run add-jobs -- <work-ms> <count> [options]
  <work-ms>            milliseconds of work per job
  <count>              number of jobs (with --rate: ignored, give 0)
  --task burn|sleep|T  task to run (default burn: CPU work)
  --queue Q            queue name (default "default")
  --priority N         higher runs first (default 0)
  --max-attempts N     runs before a job fails for good
  --delivery D         at_least_once (default) or at_most_once
  --run-after S        start no sooner than S seconds from now
  --spread MIN-MAX     random work-ms per job between MIN and MAX (instead of <work-ms>)
  --fail-rate P        chance 0..1 that an attempt fails on purpose (exercises retries)
  --rate N             enqueue N jobs per second instead of one burst ...
  --duration S         ... for S seconds
  --batch N            jobs per INSERT (default 1000)
  --json               print a JSON summary instead of text`;

export interface AddJobsOptions {
  workMs: number;
  count: number;
  task: string;
  queue?: string;
  priority?: number;
  maxAttempts?: number;
  delivery?: Delivery;
  runAfterSeconds?: number;
  spread?: [number, number];
  failRate?: number;
  rate?: number;
  durationSeconds?: number;
  batch: number;
  json: boolean;
}

/** Parse add-jobs' command line; every mistake is a UsageError naming the flag. */
export function parseAddJobs(argv: string[]): AddJobsOptions {
  const { values, positionals } = parseFlags(argv, {
    task: { type: 'string' },
    queue: { type: 'string' },
    priority: { type: 'string' },
    'max-attempts': { type: 'string' },
    delivery: { type: 'string' },
    'run-after': { type: 'string' },
    spread: { type: 'string' },
    'fail-rate': { type: 'string' },
    rate: { type: 'string' },
    duration: { type: 'string' },
    batch: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (positionals.length !== 2) throw new UsageError(`expected <work-ms> <count>, got ${positionals.length} argument(s)`);
  const workMs = numberArg(positionals[0], '<work-ms>', { min: 0, max: 3_600_000 })!;
  const count = numberArg(positionals[1], '<count>', { min: 0, max: 100_000_000, integer: true })!;
  let spread: [number, number] | undefined;
  if (values.spread !== undefined) {
    const m = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(values.spread);
    if (!m || Number(m[1]) > Number(m[2]) || Number(m[2]) > 3_600_000) throw new UsageError(`--spread: expected MIN-MAX milliseconds (MIN <= MAX), got '${values.spread}'`);
    spread = [Number(m[1]), Number(m[2])];
  }
  if (values.delivery !== undefined && !DELIVERIES.includes(values.delivery as Delivery)) {
    throw new UsageError(`--delivery: expected ${DELIVERIES.join(' or ')}, got '${values.delivery}'`);
  }
  const rate = numberArg(values.rate, '--rate', { min: 0.001, max: 1_000_000 });
  const durationSeconds = numberArg(values.duration, '--duration', { min: 0.001, max: 86_400 });
  if ((rate === undefined) !== (durationSeconds === undefined)) throw new UsageError('--rate and --duration go together');
  if (rate === undefined && count === 0) throw new UsageError('<count>: give a number of jobs above 0 (or --rate with --duration)');
  const queue = values.queue;
  if (queue !== undefined && queue.trim() === '') throw new UsageError("--queue: expected a queue name, got ''");
  return {
    workMs,
    count,
    task: values.task ?? 'burn',
    queue,
    priority: numberArg(values.priority, '--priority', { integer: true, min: -2147483648, max: 2147483647 }),
    maxAttempts: numberArg(values['max-attempts'], '--max-attempts', { integer: true, min: 1, max: 1000 }),
    delivery: values.delivery as Delivery | undefined,
    runAfterSeconds: numberArg(values['run-after'], '--run-after', { min: 0 }),
    spread,
    failRate: numberArg(values['fail-rate'], '--fail-rate', { min: 0, max: 1 }),
    rate,
    durationSeconds,
    batch: numberArg(values.batch, '--batch', { integer: true, min: 1, max: 5_000 }) ?? 1000,
    json: values.json ?? false,
  };
}

/** The job add-jobs makes, one per call (work-ms drawn afresh with --spread). */
export function makeJob(o: AddJobsOptions): JobSpec {
  const workMs = o.spread ? Math.round(o.spread[0] + Math.random() * (o.spread[1] - o.spread[0])) : o.workMs;
  const payload: Record<string, number> = { workMs };
  if (o.failRate !== undefined) payload.failRate = o.failRate;
  return {
    task: o.task,
    payload,
    queue: o.queue,
    priority: o.priority,
    maxAttempts: o.maxAttempts,
    delivery: o.delivery,
    runAfter: o.runAfterSeconds !== undefined ? new Date(Date.now() + o.runAfterSeconds * 1000) : undefined,
  };
}

async function main(): Promise<void> {
  const o = parseAddJobs(process.argv.slice(2));
  const pool = connect(2);
  const tty = process.stderr.isTTY && !o.json;
  const started = performance.now();
  let enqueued = 0;
  let lastPlain = 0;
  const target = o.rate !== undefined ? Math.round(o.rate * o.durationSeconds!) : o.count;
  const report = (final = false) => {
    const seconds = (performance.now() - started) / 1000;
    if (o.json) return;
    if (tty) {
      process.stderr.write(`\r${progressLine(enqueued, target, seconds, process.stderr.columns ?? 80)}${final ? '\n' : ''}`);
    } else if (final || seconds - lastPlain >= 1) {
      lastPlain = seconds;
      process.stderr.write(`enqueued ${enqueued}/${target}\n`);
    }
  };
  try {
    if (o.rate === undefined) {
      while (enqueued < o.count) {
        const n = Math.min(o.batch, o.count - enqueued);
        await enqueueMany(pool, Array.from({ length: n }, () => makeJob(o)));
        enqueued += n;
        report();
      }
    } else {
      // Send what is due by now every tick, so the average rate holds whatever each INSERT costs.
      const durationMs = o.durationSeconds! * 1000;
      for (;;) {
        const elapsed = performance.now() - started;
        const due = Math.min(target, Math.floor((o.rate * Math.min(elapsed, durationMs)) / 1000));
        while (enqueued < due) {
          const n = Math.min(o.batch, due - enqueued);
          await enqueueMany(pool, Array.from({ length: n }, () => makeJob(o)));
          enqueued += n;
        }
        report();
        if (elapsed >= durationMs) break;
        await new Promise((resolve) => setTimeout(resolve, Math.min(50, Math.max(1, 1000 / o.rate!))));
      }
    }
  } catch (error) {
    if (tty) process.stderr.write('\n');
    throw new Error(`${enqueued} of ${target} jobs were enqueued before: ${describeError(error)}`, { cause: error });
  } finally {
    await pool.end();
  }
  const seconds = (performance.now() - started) / 1000;
  report(true);
  const summary = { enqueued, seconds: Number(seconds.toFixed(3)), jobsPerSecond: Math.round(enqueued / seconds), task: o.task, workMs: o.spread ?? o.workMs };
  if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else process.stdout.write(`enqueued ${enqueued} ${o.task} jobs in ${seconds.toFixed(2)} s (${summary.jobsPerSecond.toLocaleString('en-US')} jobs/s)\n`);
}

// Importable by tests for its parser; runs when started as a command.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) runCli('add-jobs', USAGE, main);
