/**
 * The chaos run's checks fail, naming the jobs, on the states they exist to catch: a job
 * missing, one stuck, an at-most-once job run twice, a success recorded as a plain failure, a
 * worker that died on its own. A lost window excuses only what the README allows.
 */
import { afterAll, beforeEach, expect, it } from 'vitest';
import { runChecks, type CheckInput } from '../chaos/checks.ts';
import type { FedJob } from '../chaos/feeder.ts';
import type { Execution } from '../chaos/ledger.ts';
import { keyOf } from '../chaos/mix.ts';
import { enqueue } from '../worker/index.ts';
import { openDatabase } from './harness.ts';

const { pool } = await openDatabase();
beforeEach(() => pool.query('delete from pgq.job_keys; delete from pgq.jobs; delete from pgq.finished_jobs'));
afterAll(() => pool.end());

const at = (ms: number) => new Date(1_800_000_000_000 + ms);
const run = (n: number, ms: number, outcome: Execution['outcome']): Execution => ({ n, jobId: String(n), attempt: 1, token: `w:${ms}`, pid: 1, startedAt: at(ms), outcome });

/** Enqueue job `n` and, unless `state` is 'queued', move it to the history in that state. */
async function job(n: number, state: 'queued' | 'succeeded' | 'failed', error: string | null = null, delivery: 'at_least_once' | 'at_most_once' = 'at_least_once') {
  const { id } = await enqueue(pool, { task: 'chaos', idempotencyKey: keyOf(n), delivery, payload: { n, kind: 'sleep', ms: 1, failTimes: 0 } });
  if (state === 'queued') return;
  await pool.query(
    `with done as (delete from pgq.jobs where id = $1 returning *)
     insert into pgq.finished_jobs (id, queue, task, payload, priority, state, attempts, max_attempts, delivery, idempotency_key, error, created_at, run_after, finished_at)
     select id, queue, task, payload, priority, $2, 1, max_attempts, delivery, idempotency_key, $3, created_at, run_after, now() from done`,
    [id, state, error],
  );
}

function input(jobs: FedJob[], executions: Execution[], extra: Partial<CheckInput> = {}): CheckInput {
  const byJob = new Map<number, Execution[]>();
  for (const e of executions) byJob.set(e.n, [...(byJob.get(e.n) ?? []), e]);
  return { queue: pool, jobs: new Map(jobs.map((j) => [j.n, j])), executions: byJob, lostWindows: [], exits: [], ...extra };
}

const failedOf = (report: Awaited<ReturnType<typeof runChecks>>, name: string) => report.checks.find((c) => c.name.startsWith(name))!.failed;

it('passes a run where every job ended as designed', async () => {
  await job(1, 'succeeded');
  await job(2, 'failed', 'outcome unknown: worker 7 was lost while running this at-most-once job; it is not run again', 'at_most_once');
  const report = await runChecks(
    input(
      [
        { n: 1, design: 'succeed', delivery: 'at_least_once', ackedAt: 0 },
        { n: 2, design: 'succeed', delivery: 'at_most_once', ackedAt: 0 },
      ],
      [run(1, 0, null), run(1, 10, 'ok'), run(2, 0, 'ok')],
    ),
  );
  expect(report.checks.filter((c) => c.failed.length > 0)).toEqual([]);
  expect(report.ok).toBe(true);
});

it('names the job that is missing, stuck, run twice at most once, or failed after it succeeded, and the worker that died', async () => {
  await job(2, 'queued');
  await job(3, 'succeeded', null, 'at_most_once');
  await job(4, 'failed', 'connection reset');
  const report = await runChecks(
    input(
      [
        { n: 1, design: 'succeed', delivery: 'at_least_once', ackedAt: 50 },
        { n: 2, design: 'succeed', delivery: 'at_least_once', ackedAt: 0 },
        { n: 3, design: 'succeed', delivery: 'at_most_once', ackedAt: 0 },
        { n: 4, design: 'succeed', delivery: 'at_least_once', ackedAt: 0 },
      ],
      [run(3, 0, null), run(3, 10, 'ok'), run(4, 0, 'ok')],
      { exits: [{ pid: 42, code: 1, signal: null, meant: false, stderr: 'boom' }] },
    ),
  );
  expect(report.ok).toBe(false);
  expect(failedOf(report, 'every enqueued job exists')).toEqual([1]);
  expect(failedOf(report, 'no job stuck')).toEqual([2]);
  expect(failedOf(report, 'no at-most-once job executed twice')).toEqual([3]);
  expect(failedOf(report, 'no record says failed')).toEqual([4]);
  expect(failedOf(report, 'every job ended as designed')).toEqual([4]);
  expect(failedOf(report, 'no worker process died')).toEqual([42]);
});

it('a lost window excuses a lost enqueue, and an at-most-once job started again in it once a worker reported it; nothing else', async () => {
  await job(2, 'succeeded', null, 'at_most_once');
  const check = (reported: ReadonlySet<string>) =>
    runChecks(
      input(
        [
          { n: 1, design: 'succeed', delivery: 'at_least_once', ackedAt: at(150).getTime() },
          { n: 2, design: 'succeed', delivery: 'at_most_once', ackedAt: 0 },
          { n: 3, design: 'succeed', delivery: 'at_least_once', ackedAt: at(500).getTime() },
        ],
        [run(2, 120, 'ok'), run(2, 300, 'ok')],
        { lostWindows: [{ from: at(100).getTime(), to: at(200).getTime() }], reported: { ids: reported, pastMemory: false } },
      ),
    );
  const told = await check(new Set(['2']));
  expect(failedOf(told, 'every enqueued job exists')).toEqual([3]);
  expect(failedOf(told, 'no at-most-once job executed twice')).toEqual([]);
  expect(told.counted).toMatchObject({ 'enqueue lost with an asynchronous promotion (allowed)': 1 });
  expect(failedOf(await check(new Set()), 'no at-most-once job executed twice')).toEqual([2]);
});
