/** pg-boss, through its own API: send()/insert() to enqueue, work() in a worker process. */
import fs from 'node:fs';
import path from 'node:path';
import { PgBoss } from 'pg-boss';
import { built } from '../lib/build.ts';
import { benchDir, WorkerChild } from '../lib/proc.ts';
import { BENCH_TASK } from '../workers/protocol.ts';
import { DEFAULTS_DESCRIBED, PGBOSS_TUNED } from '../workers/settings.ts';
import type { QueueSystem } from './types.ts';

const version = (
  JSON.parse(fs.readFileSync(path.join(benchDir, 'node_modules/pg-boss/package.json'), 'utf8')) as { version: string }
).version;

// pg-boss 12 keeps a queue created without `partition` in the shared partition of pgboss.job
// (job_common); the name filter prunes the scan to it.
const JOBS = `pgboss.job where name = '${BENCH_TASK}'`;

export const pgboss: QueueSystem = {
  name: 'pg-boss',
  version,
  tunedDescription: PGBOSS_TUNED.describe,
  defaultDescription: DEFAULTS_DESCRIBED['pg-boss'],

  async install(url) {
    const boss = new PgBoss({ connectionString: url, max: 2 });
    boss.on('error', () => {});
    await boss.start();
    await boss.createQueue(BENCH_TASK);
    await boss.stop({ graceful: false, timeout: 1_000 });
  },

  async enqueuer(url, connections) {
    const boss = new PgBoss({ connectionString: url, max: connections });
    boss.on('error', (error) => process.stderr.write(`pg-boss (enqueue): ${error.message}\n`));
    await boss.start();
    return {
      one: async (payload) => {
        await boss.send(BENCH_TASK, payload);
      },
      many: async (payloads) => {
        await boss.insert(BENCH_TASK, payloads.map((data) => ({ data })));
      },
      close: () => boss.stop({ graceful: false, timeout: 1_000 }),
    };
  },

  startWorker(url, mode, label) {
    return new WorkerChild(label, built('bench/workers/pgboss.ts'), { BENCH_DATABASE_URL: url, BENCH_MODE: mode });
  },

  async waitReady(_db, worker, timeoutMs) {
    await worker.waitForMessage((m) => (m.type === 'ready' ? true : undefined), timeoutMs, 'ready');
  },

  async countWaiting(db) {
    const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from ${JOBS} and state = 'created'`);
    return rows[0]!.n;
  },

  async drained(db) {
    const { rows } = await db.query<{ done: boolean }>(`select not exists (select 1 from ${JOBS} and state < 'completed') as done`);
    return rows[0]!.done;
  },

  async verifyDrained(db, n) {
    const { rows } = await db.query<{ state: string; n: number; retries: number }>(
      `select state::text, count(*)::int as n, max(retry_count)::int as retries from ${JOBS} group by state`,
    );
    const problems: string[] = [];
    const completed = rows.find((r) => r.state === 'completed');
    if ((completed?.n ?? 0) !== n) problems.push(`${completed?.n ?? 0} jobs completed, expected ${n}`);
    for (const r of rows) if (r.state !== 'completed') problems.push(`${r.n} jobs left in state ${r.state}`);
    if ((completed?.retries ?? 0) > 0) problems.push('some completed jobs were retried');
    return problems;
  },
};
