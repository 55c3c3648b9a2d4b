import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { freePort } from '../scripts/local-postgres.ts';
import { parseAddJobs } from '../scripts/add-jobs.ts';
import * as q from '../worker/sql/maintenance.ts';
import { cancelJob, enqueueMany } from '../worker/index.ts';
import { drain, killChildren, manualWorker, openDatabase, root, spawnWorker, waitFor } from './harness.ts';

let url: string;
let pool: pg.Pool;

beforeAll(async () => {
  ({ url, pool } = await openDatabase());
});
beforeEach(async () => {
  await pool.query('truncate pgq.jobs, pgq.finished_jobs, pgq.job_keys, pgq.workers');
});
afterEach(killChildren);
afterAll(async () => {
  await pool.end();
});

function run(script: string, args: string[], env: Record<string, string> = { DATABASE_URL: url }) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'scripts', script), ...args], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('add-jobs', () => {
  it('`add-jobs 3000 128` enqueues 128 burn jobs of 3000 ms, as the original demo did', async () => {
    const r = await run('add-jobs.ts', ['3000', '128']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^enqueued 128 burn jobs in [\d.]+ s \([\d,]+ jobs\/s\)$/m);
    const { rows } = await pool.query(`select task, payload, count(*)::int as n from pgq.jobs group by 1, 2`);
    expect(rows).toEqual([{ task: 'burn', payload: { workMs: 3000 }, n: 128 }]);
  });

  it('puts every option on the jobs', async () => {
    const r = await run('add-jobs.ts', ['10', '50', '--task', 'sleep', '--queue', 'q1', '--priority', '3', '--max-attempts', '2', '--run-after', '60', '--fail-rate', '0.5', '--spread', '5-15', '--batch', '7', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ enqueued: 50, task: 'sleep' });
    const { rows } = await pool.query(`select task, queue, priority, max_attempts, delivery, (payload->>'workMs')::float8 as w,
        (payload->>'failRate')::float8 as f, run_after > now() + interval '50 seconds' as later from pgq.jobs`);
    expect(rows).toHaveLength(50);
    for (const row of rows) {
      expect(row).toMatchObject({ task: 'sleep', queue: 'q1', priority: 3, max_attempts: 2, delivery: 'at_least_once', f: 0.5, later: true });
      expect(row.w).toBeGreaterThanOrEqual(5);
      expect(row.w).toBeLessThanOrEqual(15);
    }
  });

  it.each([
    [['10'], /expected <work-ms> <count>/],
    [['ten', '5'], /<work-ms>: expected a number/],
    [['10', '5', '--delivery', 'twice'], /--delivery: expected at_least_once or at_most_once, got 'twice'/],
    [['10', '5', '--bogus'], /Unknown option '--bogus'/],
    [['10', '5', '--spread', '9-3'], /--spread: /],
    [['10', '5', '--rate', '5'], /--rate and --duration go together/],
  ])('bad flags %j: usage and exit 2', async (args, message) => {
    const r = await run('add-jobs.ts', args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/usage: npm run add-jobs/);
  });

  it('an unreachable database: one line, exit 1', async () => {
    const r = await run('add-jobs.ts', ['10', '5'], { DATABASE_URL: `postgres://postgres:x@127.0.0.1:${await freePort()}/none` });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^add-jobs: database unreachable: 0 of 5 jobs were enqueued before: .*ECONNREFUSED/);
  });

  it('parses --rate with --duration', () => {
    expect(parseAddJobs(['5', '0', '--rate', '100', '--duration', '5'])).toMatchObject({ rate: 100, durationSeconds: 5 });
  });

  it('--rate 200 --duration 5 keeps a steady stream: within 10% of 200/s over the 5 s', async () => {
    const r = await run('add-jobs.ts', ['0', '0', '--task', 'sleep', '--rate', '200', '--duration', '5', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).enqueued).toBe(1000);
    const { rows } = await pool.query<{ second: number; n: number }>(
      `select floor(extract(epoch from created_at - (select min(created_at) from pgq.jobs)))::int as second, count(*)::int as n
         from pgq.jobs group by 1 order by 1`,
    );
    const { rows: span } = await pool.query<{ s: number }>(`select extract(epoch from max(created_at) - min(created_at))::float8 as s from pgq.jobs`);
    // 1000 jobs over 4.5-5.5 s is 200/s +-10%; a burst would take no time at all.
    expect(span[0]!.s).toBeGreaterThan(4.5);
    expect(span[0]!.s).toBeLessThan(5.5);
    // And steady within the run: no second holds a burst.
    for (const row of rows.filter((x) => x.second < 5)) {
      expect(row.n).toBeGreaterThanOrEqual(150);
      expect(row.n).toBeLessThanOrEqual(250);
    }
  });
});

describe('observe', () => {
  it('--once --json prints counts per state and live workers', async () => {
    const w = await manualWorker(pool, { concurrency: 2 });
    const other = await manualWorker(pool, { concurrency: 1 });
    try {
      await enqueueMany(pool, [
        { task: 'sleep', payload: { workMs: 0 } },
        { task: 'sleep', payload: { workMs: 0 } },
        { task: 'sleep', payload: { workMs: 'bad' } },
      ]);
      await drain(w.worker, 2);
      await enqueueMany(pool, [
        { task: 'sleep', payload: { workMs: 60_000 } },
        { task: 'sleep', payload: { workMs: 60_000 } },
        { task: 'sleep', payload: { workMs: 0 } },
        { task: 'sleep', payload: { workMs: 0 }, runAfter: new Date(Date.now() + 60_000) },
      ]);
      await w.worker.runOnce();
      const cancelled = await enqueueMany(pool, [{ task: 'sleep' }, { task: 'sleep', expiresAt: new Date(Date.now() + 60_000) }]);
      await cancelJob(pool, cancelled[0]!.id);
      await pool.query(`update pgq.jobs set expires_at = now() - interval '1 second' where id = $1`, [cancelled[1]!.id]);
      await q.expireJobs(pool, 10);
      const r = await run('observe.ts', ['--once', '--json']);
      expect(r.code).toBe(0);
      const o = JSON.parse(r.stdout);
      expect(o.counts).toEqual({ queued: 2, running: 2, succeeded: 2, failed: 1, expired: 1, cancelled: 1 });
      expect(o.workers).toBe(2);
      expect(o.workerList.map((x: { concurrency: number }) => x.concurrency).sort()).toEqual([1, 2]);
      // Runs that ended in the last minute: the two successes and the failure (cancelled and expired jobs never ran).
      expect(o.rates.finishedPerSecond).toBeCloseTo(3 / 60, 2);
      expect(o.latency.p50).toBeGreaterThanOrEqual(0);
    } finally {
      await w.close();
      await other.close();
    }
  });

  it.each([
    [['--interval', 'soon'], /^observe: --interval: expected a number/],
    [['--mig', 'x'], /^observe: --mig and --region go together/],
    [['--chart', 'x.html'], /^observe: --chart needs a series/],
    [['--nope'], /^observe: Unknown option '--nope'/],
  ])('bad flags %j: usage and exit 2', async (args, message) => {
    const r = await run('observe.ts', args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/usage: npm run observe/);
  });

  it('shows the instance group read through gcloud', async () => {
    const fake = path.join(root, 'test/fixtures/gcloud');
    const calls = path.join(os.tmpdir(), `gcloud-calls-${process.pid}`);
    const args = ['--once', '--mig', 'pgq-worker-igm', '--region', 'us-central1', '--project', 'demo'];
    const env = { DATABASE_URL: url, PATH: `${fake}:${process.env.PATH}`, GCLOUD_CALLS: calls };
    const json = await run('observe.ts', [...args, '--json'], env);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout).mig).toEqual({
      name: 'pgq-worker-igm',
      region: 'us-central1',
      targetSize: 4,
      recommendedSize: 6,
      cpuTarget: 0.6,
      instances: { RUNNING: 3, CREATING: 1 },
    });
    expect(JSON.parse(json.stdout).cpu.target).toBe(0.6);
    const text = await run('observe.ts', args, env);
    expect(text.stdout).toMatch(/^instance group pgq-worker-igm \(us-central1\): target size 4  recommended 6  cpu target 60%$/m);
    expect(text.stdout).toMatch(/^  instances: CREATING 1  RUNNING 3$/m);
  });

  it('without gcloud the group panel says why, and the rest still works', async () => {
    // An empty PATH: this machine may have a real gcloud.
    const r = await run('observe.ts', ['--once', '--json', '--mig', 'pgq-worker-igm', '--region', 'us-central1'], {
      DATABASE_URL: url,
      PATH: await fs.mkdtemp(path.join(os.tmpdir(), 'empty-path-')),
    });
    expect(r.code).toBe(0);
    const o = JSON.parse(r.stdout);
    expect(o.mig.error).toBe('gcloud not found on PATH (install the Google Cloud CLI)');
    expect(o.counts).toEqual({ queued: 0, running: 0, succeeded: 0, failed: 0, expired: 0, cancelled: 0 });
  });

  it('records the series of a real run, then charts it', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-observe-'));
    const record = path.join(dir, 'run.ndjson');
    const chart = path.join(dir, 'run.html');
    await enqueueMany(pool, Array.from({ length: 300 }, () => ({ task: 'sleep', payload: { workMs: 20 } })));
    const observe = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'scripts/observe.ts'), '--interval', '0.2', '--record', record, '--chart', chart], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', DATABASE_URL: url },
    });
    const worker = spawnWorker({ DATABASE_URL: url, WORKER_CONCURRENCY: '4' });
    const lines = async () => (await fs.readFile(record, 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => JSON.parse(l));
    await waitFor(async () => (await lines()).some((l) => l.counts.succeeded === 300), 'a recorded sample with every job done');
    const exited = new Promise((resolve) => observe.on('exit', resolve));
    observe.kill('SIGINT');
    expect(await exited).toBe(0);
    worker.child.kill('SIGTERM');
    const samples = await lines();
    expect(samples.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < samples.length; i++) {
      expect(samples[i].totals.ended).toBeGreaterThanOrEqual(samples[i - 1].totals.ended);
      expect(Date.parse(samples[i].at)).toBeGreaterThan(Date.parse(samples[i - 1].at));
    }
    expect(samples.some((l) => l.counts.running > 0 || l.counts.queued > 0)).toBe(true);
    expect(samples.at(-1).workers).toBe(1);
    expect(samples.at(-1).workerList[0].concurrency).toBe(4);
    const html = await fs.readFile(chart, 'utf8');
    expect(html).toContain('<html');
    expect(html).toContain(`${samples.length}`);
  });
});
