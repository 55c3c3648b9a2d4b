/**
 * A pg-boss process for the benchmark. Env: BENCH_DATABASE_URL, BENCH_MODE (`tuned`: the
 * configuration in settings.ts; `default`: one work() call with its defaults).
 */
import { PgBoss, type Job } from 'pg-boss';
import { BENCH_TASK } from './protocol.ts';
import { handle, ready } from './recorder.ts';
import { PGBOSS_TUNED } from './settings.ts';

const connectionString = process.env.BENCH_DATABASE_URL;
if (!connectionString) throw new Error('BENCH_DATABASE_URL is required');
const tuned = process.env.BENCH_MODE !== 'default';

const boss = new PgBoss(tuned ? { connectionString, ...PGBOSS_TUNED.instance } : { connectionString });
boss.on('error', (error) => process.stderr.write(`pg-boss: ${error.message}\n`));
await boss.start();

const handler = async (jobs: Job<unknown>[]) => {
  for (const job of jobs) await handle(job.id, job.data);
};
await (tuned ? boss.work(BENCH_TASK, PGBOSS_TUNED.work, handler) : boss.work(BENCH_TASK, handler));
ready();

process.once('SIGTERM', () => {
  boss.stop({ graceful: true, timeout: 10_000 }).then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`pg-boss: stop failed: ${String(error)}\n`);
      process.exit(1);
    },
  );
});
