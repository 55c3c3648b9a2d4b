/**
 * A rolling update and a rollback across the fencing-token migration (issue 11, test 7): the
 * previous release (which knows migrations 0001-0003) runs as a real worker process beside this
 * one on the schema with 0004, each replacing the other, one killed mid-run. Every execution is
 * counted by the handlers.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { countByState, enqueueMany, getJob } from '../worker/index.ts';
import { createRunsTable, runsPerJob } from './fixtures/runs.ts';
import { killChildrenAndWait, openDatabase, root, spawnWorker, waitFor, type WorkerProcess } from './harness.ts';

/** The release before the fencing tokens: it knows migrations up to 0003 and reads compatibility markers. */
const PREVIOUS = '29df9ae';

const { url, pool } = await openDatabase();
let previous: string;

beforeAll(async () => {
  previous = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-previous-'));
  // The previous release's sources, from this repository's history, on this tree's dependencies.
  const archive = execFileSync('git', ['-C', root, 'archive', PREVIOUS], { maxBuffer: 64 * 1024 * 1024 });
  execFileSync('tar', ['-x', '-C', previous], { input: archive });
  await fs.symlink(path.join(root, 'node_modules'), path.join(previous, 'node_modules'));
  await createRunsTable(pool);
});
afterEach(() => killChildrenAndWait(pool));
afterAll(async () => {
  await pool.end();
  await fs.rm(previous, { recursive: true, force: true });
});

const env = { DATABASE_URL: url, WORKER_TASKS: path.join(root, 'test/fixtures/tasks.ts'), WORKER_CONCURRENCY: '4', LOG_LEVEL: 'error' };
const older = () => spawnWorker(env, previous);
const newer = () => spawnWorker(env);

async function idOf(w: WorkerProcess): Promise<string> {
  return waitFor(async () => (await pool.query<{ id: string }>('select id::text from pgq.workers where pid = $1', [w.child.pid])).rows[0]?.id, 'the worker to register');
}

function mixed(n: number, workMs: number) {
  return Array.from({ length: n }, (_, i) => ({ task: 'counted', payload: { workMs }, delivery: i % 3 === 0 ? ('at_most_once' as const) : ('at_least_once' as const) }));
}

async function allEnded(ids: string[]) {
  return waitFor(async () => {
    const { rows } = await pool.query<{ n: number }>('select count(*)::int as n from pgq.finished_jobs where id = any($1::bigint[])', [ids]);
    return rows[0]!.n === ids.length;
  }, 'every job to end', 90_000);
}

it('rolling update, old to new: the older release starts on the newer schema, both drain side by side, the old one is stopped; every job runs once', async () => {
  const old = older();
  await idOf(old);
  // Enough work that the older worker alone would need about 8 s: the newer joins well before.
  const jobs = (await enqueueMany(pool, mixed(1_200, 25))).map((j) => j.id);
  await waitFor(async () => ((await countByState(pool)).succeeded ?? 0) >= 30, 'the older worker to drain some');
  const fresh = newer();
  await idOf(fresh);
  await waitFor(async () => (await pool.query('select 1 from pgq.finished_jobs where claim_seq is not null limit 1')).rowCount === 1, 'the newer worker to record some', 60_000);
  old.child.kill('SIGTERM');
  expect((await old.exited).code).toBe(0);
  await allEnded(jobs);
  const { rows } = await pool.query<{ state: string; n: number; tokens: number }>(
    `select state, count(*)::int as n, count(claim_seq)::int as tokens from pgq.finished_jobs where id = any($1::bigint[]) group by state`,
    [jobs],
  );
  expect(rows).toEqual([{ state: 'succeeded', n: 1_200, tokens: expect.any(Number) }]);
  // Both releases did part of the work: the older leaves no token, the newer always one.
  expect(rows[0]!.tokens).toBeGreaterThan(0);
  expect(rows[0]!.tokens).toBeLessThan(1_200);
  const runs = await runsPerJob(pool);
  expect(jobs.filter((id) => runs.get(id) !== 1)).toEqual([]);
});

it('rollback, new to old, with a kill: jobs of a SIGKILLed older worker are rescued by the newer one by its rules; then the newer is stopped and the older drains the rest', async () => {
  const fresh = newer();
  await idOf(fresh);
  const victim = older();
  const victimId = await idOf(victim);
  const long = (await enqueueMany(pool, mixed(6, 600_000).map((j) => ({ ...j, payload: { workMs: 600_000, rerunMs: 0 } })))).map((j) => j.id);
  await waitFor(async () => (await pool.query('select 1 from pgq.jobs where worker_id = $1', [victimId])).rowCount! >= 1, 'the older worker to hold some of the long jobs');
  const held = (await pool.query<{ id: string }>('select id::text from pgq.jobs where worker_id = $1', [victimId])).rows.map((r) => r.id);
  victim.child.kill('SIGKILL');
  await waitFor(async () => {
    const { rows } = await pool.query('select 1 from pgq.jobs where id = any($1::bigint[]) and worker_id = $2', [held, victimId]);
    return rows.length === 0;
  }, "the older worker's jobs to be rescued", 60_000);
  for (const id of held) {
    const job = await getJob(pool, id);
    if (job!.delivery === 'at_most_once') expect(job).toMatchObject({ state: 'failed', error: expect.stringMatching(/^outcome unknown/) });
    else expect(job!.state).toMatch(/queued|running|succeeded/);
  }
  const old = older();
  await idOf(old);
  fresh.child.kill('SIGTERM');
  expect((await fresh.exited).code).toBe(0);
  const rest = (await enqueueMany(pool, mixed(60, 10))).map((j) => j.id);
  await allEnded(rest);
  const runs = await runsPerJob(pool);
  expect(rest.filter((id) => runs.get(id) !== 1)).toEqual([]);
  for (const id of rest) expect((await getJob(pool, id))!.state).toBe('succeeded');
  // Nobody runs an at-most-once job twice, whichever release rescued or ran it.
  for (const id of long) if ((await getJob(pool, id))!.delivery === 'at_most_once') expect(runs.get(id) ?? 0).toBeLessThanOrEqual(1);
});
