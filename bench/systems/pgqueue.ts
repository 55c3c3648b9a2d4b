/**
 * Our queue: enqueued through the public API of worker/index.ts, run by the real worker process
 * (worker/main.ts, compiled as the container runs it) with the benchmark task loaded through
 * WORKER_TASKS.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { enqueue, enqueueMany, migrate } from '../../worker/index.ts';
import { built } from '../lib/build.ts';
import { repoRoot, waitFor, WorkerChild } from '../lib/proc.ts';
import { BENCH_TASK } from '../workers/protocol.ts';
import { DEFAULTS_DESCRIBED, PGQUEUE_TUNED } from '../workers/settings.ts';
import type { Db, Enqueuer, QueueSystem } from './types.ts';

// The library imports the root's copy of node-postgres; the enqueue-single figure hands it a pool
// of that copy, as an application with one copy of pg does.
const rootPg = createRequire(path.join(repoRoot, 'package.json'))('pg') as typeof import('pg');
// enqueue-single-other-pg hands it a pool of a second copy (bench/package.json's alias pg-other),
// as an application whose pg is another install (a monorepo, a bundle, two versions in the tree).
// enqueue() must still batch such a pool's concurrent calls.
const otherPg = createRequire(import.meta.url)('pg-other') as typeof import('pg');

const version = (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
const IMAGE_NODE_OPTIONS = /^ENV NODE_OPTIONS=(\S+)$/m.exec(fs.readFileSync(path.join(repoRoot, 'Dockerfile'), 'utf8'))?.[1] ?? '';

function enqueuerOn(pool: import('pg').Pool): Enqueuer {
  pool.on('error', () => {});
  return {
    one: async (payload) => {
      await enqueue(pool, { task: BENCH_TASK, payload });
    },
    many: async (payloads) => {
      await enqueueMany(pool, payloads.map((payload) => ({ task: BENCH_TASK, payload })));
    },
    close: () => pool.end(),
  };
}

export const pgqueue: QueueSystem = {
  name: 'pgqueue',
  version,
  tunedDescription: PGQUEUE_TUNED.describe,
  defaultDescription: DEFAULTS_DESCRIBED.pgqueue,

  async install(url) {
    const client = new rootPg.Client({ connectionString: url });
    await client.connect();
    try {
      await migrate(client);
    } finally {
      await client.end();
    }
  },

  async enqueuer(url, connections) {
    return enqueuerOn(new rootPg.Pool({ connectionString: url, max: connections }));
  },

  async enqueuerOtherPg(url, connections) {
    const pool = new otherPg.Pool({ connectionString: url, max: connections });
    // Otherwise the figure would silently measure the library's own copy again.
    if (pool instanceof rootPg.Pool) {
      await pool.end();
      throw new Error("pg-other resolved to the library's own copy of pg; the figure needs a second copy (npm --prefix bench install)");
    }
    return enqueuerOn(pool);
  },

  startWorker(url, mode, label) {
    return new WorkerChild(label, built('worker/main.ts'), {
      // As the image runs it: the Dockerfile's NODE_OPTIONS (V8's young generation size).
      NODE_OPTIONS: IMAGE_NODE_OPTIONS,
      DATABASE_URL: url,
      WORKER_VERSION: version,
      HEALTH_PORT: '0',
      MIGRATE: 'false',
      LOG_LEVEL: 'warn',
      WORKER_TASKS: built('bench/workers/pgqueue-tasks.ts'),
      ...(mode === 'tuned' ? PGQUEUE_TUNED.env : {}),
    });
  },

  async waitReady(db, worker, timeoutMs) {
    // The worker registers in pgq.workers on its listening connection, then LISTENs on the same
    // connection a moment later; the row is the first sign visible from outside.
    await waitFor(
      async () => {
        if (!worker.alive) throw new Error(`${worker.label} exited while starting:\n${worker.tail()}`);
        const { rows } = await db.query('select 1 from pgq.workers where pid = $1', [worker.pid]);
        return rows.length > 0;
      },
      `${worker.label} to register in pgq.workers`,
      timeoutMs,
    );
  },

  async countWaiting(db) {
    const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from pgq.jobs where state = 'queued'`);
    return rows[0]!.n;
  },

  async drained(db) {
    const { rows } = await db.query<{ done: boolean }>('select not exists (select 1 from pgq.jobs) as done');
    return rows[0]!.done;
  },

  async verifyDrained(db, n) {
    const problems: string[] = [];
    const { rows: live } = await db.query<{ n: number }>('select count(*)::int as n from pgq.jobs');
    if (live[0]!.n !== 0) problems.push(`${live[0]!.n} jobs left in pgq.jobs`);
    const { rows } = await db.query<{ total: number; ok: number }>(
      `select count(*)::int as total, (count(*) filter (where state = 'succeeded' and attempts = 1))::int as ok
         from pgq.finished_jobs`,
    );
    const { total, ok } = rows[0]!;
    if (total !== n) problems.push(`pgq.finished_jobs has ${total} rows, expected ${n}`);
    if (ok !== total) problems.push(`${total - ok} finished jobs are not 'succeeded' at their first attempt`);
    return problems;
  },
};
