/** graphile-worker, through its own API: WorkerUtils to enqueue, run() in a worker process. */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { Logger, makeWorkerUtils, runMigrations } from 'graphile-worker';
import { built } from '../lib/build.ts';
import { benchDir, WorkerChild } from '../lib/proc.ts';
import { BENCH_TASK } from '../workers/protocol.ts';
import { DEFAULTS_DESCRIBED, GRAPHILE_TUNED } from '../workers/settings.ts';
import type { QueueSystem } from './types.ts';

const version = (
  JSON.parse(fs.readFileSync(path.join(benchDir, 'node_modules/graphile-worker/package.json'), 'utf8')) as { version: string }
).version;

const quiet = new Logger(() => (level, message) => {
  if (level === 'error') process.stderr.write(`graphile-worker: ${message}\n`);
});

const JOBS = 'graphile_worker._private_jobs';

/** A pool that handles errors on idle and checked-out clients, as graphile-worker checks a given pool does. */
function quietPool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

export const graphile: QueueSystem = {
  name: 'graphile-worker',
  version,
  tunedDescription: GRAPHILE_TUNED.describe,
  defaultDescription: DEFAULTS_DESCRIBED['graphile-worker'],

  async install(url) {
    // Our own pool, ended before the runner closes the template's sessions: given only a
    // connection string, graphile-worker 0.18 ends its pool without waiting and drops its error
    // listener first, so the closed session's error crashed the runner.
    const pool = quietPool(url, 2);
    try {
      await runMigrations({ pgPool: pool, logger: quiet });
    } finally {
      await pool.end();
    }
  },

  async enqueuer(url, connections) {
    const pool = quietPool(url, connections);
    const utils = await makeWorkerUtils({ pgPool: pool, logger: quiet });
    return {
      one: async (payload) => {
        await utils.addJob(BENCH_TASK, payload);
      },
      many: async (payloads) => {
        await utils.addJobs(payloads.map((payload) => ({ identifier: BENCH_TASK, payload })));
      },
      close: async () => {
        await utils.release();
        await pool.end();
      },
    };
  },

  startWorker(url, mode, label) {
    return new WorkerChild(label, built('bench/workers/graphile.ts'), { BENCH_DATABASE_URL: url, BENCH_MODE: mode });
  },

  async waitReady(_db, worker, timeoutMs) {
    await worker.waitForMessage((m) => (m.type === 'ready' ? true : undefined), timeoutMs, 'ready');
  },

  async countWaiting(db) {
    const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from ${JOBS} where locked_at is null`);
    return rows[0]!.n;
  },

  async drained(db) {
    const { rows } = await db.query<{ done: boolean }>(`select not exists (select 1 from ${JOBS}) as done`);
    return rows[0]!.done;
  },

  async verifyDrained(db) {
    // graphile-worker deletes a job when it succeeds; a failed attempt would leave it with attempts > 0.
    const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from ${JOBS}`);
    return rows[0]!.n === 0 ? [] : [`${rows[0]!.n} jobs left in ${JOBS}`];
  },
};
