import { cp, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import type pg from 'pg';
import type { TaskHandler } from '../worker/tasks/types.ts';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as ownershipSql from '../worker/sql/ownership.ts';
import { cancelJob, countByState, enqueue, enqueueMany, getJob, InvalidInputError, PermanentError } from '../worker/index.ts';
import * as maintenanceSql from '../worker/sql/maintenance.ts';
import * as workersSql from '../worker/sql/workers.ts';
import { Maintenance } from '../worker/maintenance.ts';
import { silentLogger } from '../worker/logger.ts';
import { drain, manualWorker, openDatabase, root, waitFor } from './harness.ts';

let pool: pg.Pool;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  ({ pool } = await openDatabase());
});
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  await pool.query('truncate pgq.jobs, pgq.finished_jobs, pgq.job_keys, pgq.workers');
});
afterAll(async () => {
  await pool.end();
});

async function worker(options: Parameters<typeof manualWorker>[1] = {}) {
  const w = await manualWorker(pool, options);
  cleanups.push(w.close);
  return w;
}

/**
 * A maintenance pass run now, as if the last one were an interval ago (a pass is due) unless a
 * test set it further back. Tests run passes back to back; the real fleet spaces them.
 */
const rescuer = (options: Partial<ConstructorParameters<typeof Maintenance>[1]> = {}) => {
  const maintenance = new Maintenance({ pool, logger: silentLogger }, { leaseMs: 15_000, intervalMs: 1_000, retentionMs: 3_600_000, ...options });
  return {
    runOnce: async () => {
      await pool.query(`update pgq.maintenance set last_pass_at = least(last_pass_at, now() - interval '1 second')`);
      return maintenance.runOnce();
    },
  };
};

/** As if maintenance had run a second ago (a pass is due, no gap) and no outage came before: no grace point. */
async function passedJustNow(): Promise<void> {
  await pool.query(`update pgq.maintenance set last_pass_at = now() - interval '1 second', grace_from = '-infinity'`);
}

describe('enqueue', () => {
  it("batches concurrent calls through a pool from another copy of pg, not only through our own copy's class", async () => {
    // A second copy of the package, as a monorepo or two versions in the tree give an application.
    const dir = await mkdtemp(path.join(root, 'node_modules', '.cache-pg-copy-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await cp(path.join(root, 'node_modules', 'pg'), path.join(dir, 'node_modules', 'pg'), { recursive: true });
    const otherPg = createRequire(path.join(dir, 'index.js'))('pg') as typeof pg;
    const url = (pool as unknown as { options: { connectionString: string } }).options.connectionString;
    const other = new otherPg.Pool({ connectionString: url, max: 4 });
    cleanups.push(() => other.end());
    expect(other).not.toBeInstanceOf((await import('pg')).default.Pool);
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => enqueue(other, { task: 'sleep', payload: { i } })));
    expect(new Set(results.map((r) => r.id)).size).toBe(40);
    // Rows written by one statement share its transaction id: batched calls share a few.
    const { rows } = await pool.query<{ n: number }>('select count(distinct xmin::text)::int as n from pgq.jobs');
    expect(rows[0]!.n).toBeLessThanOrEqual(4);
  });

  it('stores every option as given', async () => {
    const runAfter = new Date(Date.now() + 60_000);
    const expiresAt = new Date(Date.now() + 120_000);
    const { id, created } = await enqueue(pool, {
      task: 'sleep',
      payload: { workMs: 5, note: 'x' },
      queue: 'emails',
      priority: 7,
      runAfter,
      expiresAt,
      maxAttempts: 9,
      idempotencyKey: 'k-1',
    });
    expect(created).toBe(true);
    const job = await getJob(pool, id);
    expect(job).toMatchObject({
      task: 'sleep',
      payload: { workMs: 5, note: 'x' },
      queue: 'emails',
      priority: 7,
      state: 'queued',
      maxAttempts: 9,
      delivery: 'at_least_once',
      idempotencyKey: 'k-1',
      attempts: 0,
    });
    expect(job!.runAfter.getTime()).toBe(runAfter.getTime());
    const { rows } = await pool.query('select expires_at from pgq.jobs where id = $1', [id]);
    expect(rows[0].expires_at.getTime()).toBe(expiresAt.getTime());
  });

  it('defaults: queue default, priority 0, 5 attempts, at-least-once; at-most-once gets 1 attempt', async () => {
    const a = await getJob(pool, (await enqueue(pool, { task: 'sleep' })).id);
    expect(a).toMatchObject({ queue: 'default', priority: 0, maxAttempts: 5, delivery: 'at_least_once', payload: {} });
    const b = await getJob(pool, (await enqueue(pool, { task: 'sleep', delivery: 'at_most_once' })).id);
    expect(b).toMatchObject({ maxAttempts: 1, delivery: 'at_most_once' });
  });

  it('enqueues thousands in one call, ids in input order', async () => {
    const specs = Array.from({ length: 12_000 }, (_, i) => ({ task: 'sleep', payload: { i } }));
    const results = await enqueueMany(pool, specs);
    expect(results).toHaveLength(12_000);
    const { rows } = await pool.query<{ id: string; i: number }>(`select id::text, (payload->>'i')::int as i from pgq.jobs`);
    const byId = new Map(rows.map((r) => [r.id, r.i]));
    results.forEach((r, i) => expect(byId.get(r.id)).toBe(i));
  });

  it('concurrent single enqueues each get their own job', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => enqueue(pool, { task: 'sleep', payload: { i } })));
    expect(new Set(results.map((r) => r.id)).size).toBe(200);
    for (const [i, r] of results.entries()) expect((await getJob(pool, r.id))!.payload).toEqual({ i });
  });

  it("joins the caller's transaction: rolled back leaves no job, committed keeps it", async () => {
    const client = await pool.connect();
    try {
      await client.query('begin');
      const rolledBack = await enqueue(client, { task: 'sleep' });
      await enqueueMany(client, [{ task: 'sleep' }, { task: 'sleep', idempotencyKey: 'tx-key' }]);
      await client.query('rollback');
      expect(await getJob(pool, rolledBack.id)).toBeNull();
      expect((await countByState(pool)).queued).toBe(0);
      await client.query('begin');
      const kept = await enqueue(client, { task: 'sleep', idempotencyKey: 'tx-key' });
      await client.query('commit');
      expect(kept.created).toBe(true);
      expect((await getJob(pool, kept.id))!.state).toBe('queued');
    } finally {
      client.release();
    }
  });

  it('an idempotency key returns the existing job while it exists, finished or not', async () => {
    const first = await enqueue(pool, { task: 'sleep', payload: { workMs: 0 }, idempotencyKey: 'order-42' });
    const again = await enqueue(pool, { task: 'sleep', payload: { workMs: 999 }, idempotencyKey: 'order-42' });
    expect(again).toEqual({ id: first.id, created: false });
    const batch = await enqueueMany(pool, [
      { task: 'sleep', idempotencyKey: 'order-42' },
      { task: 'sleep', idempotencyKey: 'order-43' },
      { task: 'sleep', idempotencyKey: 'order-43' },
    ]);
    expect(batch[0]).toEqual({ id: first.id, created: false });
    expect(batch[1]!.created).toBe(true);
    expect(batch[2]).toEqual({ id: batch[1]!.id, created: false });
    expect((await countByState(pool)).queued).toBe(2);
    const { worker: w } = await worker();
    await drain(w);
    expect((await getJob(pool, first.id))!.state).toBe('succeeded');
    expect(await enqueue(pool, { task: 'sleep', idempotencyKey: 'order-42' })).toEqual({ id: first.id, created: false });
  });

  it('rejects bad jobs with the field named, and loses nothing already queued', async () => {
    await enqueueMany(pool, [{ task: 'sleep' }, { task: 'sleep' }]);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const cases: [Parameters<typeof enqueue>[1], RegExp][] = [
      [{ task: '' }, /^task: /],
      [{ task: 'sleep', payload: circular }, /^payload: not JSON-serialisable/],
      [{ task: 'sleep', payload: { big: 'x'.repeat(1024 * 1024) } }, /^payload: \d+ bytes of JSON exceeds the 1048576-byte limit/],
      [{ task: 'sleep', payload: { s: 'a\u0000b' } }, /^payload: contains a NUL/],
      [{ task: 'sleep', priority: 1.5 }, /^priority: /],
      [{ task: 'sleep', maxAttempts: 0 }, /^maxAttempts: /],
      [{ task: 'sleep', delivery: 'twice' as never }, /^delivery: /],
      [{ task: 'sleep', delivery: 'at_most_once', maxAttempts: 3 }, /^maxAttempts: must be 1 for an at_most_once job/],
      [{ task: 'sleep', runAfter: new Date('nope') }, /^runAfter: /],
      [{ task: 'sleep', expiresAt: new Date(Date.now() - 1000) }, /^expiresAt: is not after now/],
      [{ task: 'sleep', idempotencyKey: '' }, /^idempotencyKey: /],
    ];
    for (const [spec, message] of cases) {
      const error = await enqueue(pool, spec).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidInputError);
      expect((error as Error).message).toMatch(message);
    }
    const batchError = await enqueueMany(pool, [{ task: 'sleep' }, { task: 'sleep' }, { task: 'sleep' }, { task: 7 as never }]).catch((e: unknown) => e);
    expect((batchError as Error).message).toMatch(/^jobs\[3\]\.task: /);
    expect((await countByState(pool)).queued).toBe(2);
  });
});

describe('claim', () => {
  it('claims in batches up to the free slots', async () => {
    await enqueueMany(pool, Array.from({ length: 10 }, () => ({ task: 'sleep', payload: { workMs: 10_000 } })));
    const { worker: w } = await worker({ concurrency: 8 });
    expect(await w.runOnce()).toMatchObject({ requested: 8, claimed: 8 });
    expect(await w.runOnce()).toMatchObject({ requested: 0, claimed: 0 });
    expect((await countByState(pool)).running).toBe(8);
  });

  it('takes higher priority first, then the earliest due', async () => {
    const order: string[] = [];
    const ids = await enqueueMany(pool, [
      { task: 'note', payload: 'low', priority: -1 },
      { task: 'note', payload: 'mid-old', runAfter: new Date(Date.now() - 60_000) },
      { task: 'note', payload: 'high' , priority: 5 },
      { task: 'note', payload: 'mid-new' },
    ]);
    expect(ids).toHaveLength(4);
    const { worker: w } = await worker({ concurrency: 1, tasks: { note: (p) => void order.push(p as string) } });
    await drain(w, 4);
    expect(order).toEqual(['high', 'mid-old', 'mid-new', 'low']);
  });

  it('starts the jobs of one claim in that order too', async () => {
    const order: string[] = [];
    // Inserted so that their physical order is not the claim's order.
    await enqueueMany(pool, [
      { task: 'note', payload: 'low', priority: -1 },
      { task: 'note', payload: 'mid-new' },
      { task: 'note', payload: 'mid-old', runAfter: new Date(Date.now() - 60_000) },
      { task: 'note', payload: 'high', priority: 5 },
      { task: 'note', payload: 'top', priority: 9 },
    ]);
    const { worker: w } = await worker({ concurrency: 5, tasks: { note: (p) => void order.push(p as string) } });
    expect((await w.runOnce()).claimed).toBe(5);
    await drain(w);
    expect(order).toEqual(['top', 'high', 'mid-old', 'mid-new', 'low']);
  });

  it('does not start a job before its run-after time', async () => {
    const { id } = await enqueue(pool, { task: 'sleep', runAfter: new Date(Date.now() + 3_600_000) });
    const { worker: w } = await worker();
    expect((await w.runOnce()).claimed).toBe(0);
    await pool.query(`update pgq.jobs set run_after = now() - interval '1 second' where id = $1`, [id]);
    expect((await w.runOnce()).claimed).toBe(1);
  });

  it('takes only jobs of its queues', async () => {
    await enqueueMany(pool, ['a', 'b', 'c'].map((queue) => ({ task: 'sleep', payload: { workMs: 0 }, queue })));
    const { worker: w } = await worker({ queues: ['a', 'c'] });
    await drain(w);
    const { rows } = await pool.query(`select queue, state from pgq.all_jobs order by queue`);
    expect(rows).toEqual([
      { queue: 'a', state: 'succeeded' },
      { queue: 'b', state: 'queued' },
      { queue: 'c', state: 'succeeded' },
    ]);
  });

  it('stores the result and the last progress report', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const { id } = await enqueue(pool, { task: 'steps' });
    const { worker: w } = await worker({
      tasks: {
        steps: async (_p, ctx) => {
          ctx.progress({ done: 1, of: 3 });
          ctx.progress({ done: 2, of: 3 });
          await gate;
          ctx.progress({ done: 3, of: 3 });
          return { answer: 42 };
        },
      },
    });
    await w.runOnce();
    const seen = await waitFor(async () => {
      const job = await getJob(pool, id);
      return (job?.progress as { done?: number } | null)?.done === 2 ? job : undefined;
    }, 'progress to be readable while the job runs');
    expect(seen.state).toBe('running');
    release();
    await drain(w, 0);
    await waitFor(() => w.inFlight === 0, 'the job to end');
    await w.flush();
    expect(await getJob(pool, id)).toMatchObject({ result: { answer: 42 }, progress: { done: 3, of: 3 }, attempts: 1 });
  });
});

describe('prefetch', () => {
  it('never hoards long jobs after a run of short ones: a worker joining mid-drain gets its share at once', async () => {
    const release: (() => void)[] = [];
    let holding = true;
    const tasks: Record<string, TaskHandler> = {
      quick: () => null,
      long: () => (holding ? new Promise<void>((resolve) => release.push(resolve)) : null),
    };
    const first = await worker({ concurrency: 2, batchSize: 100, tasks });
    await enqueueMany(pool, Array.from({ length: 40 }, () => ({ task: 'quick' })));
    await drain(first.worker, 4);
    expect(first.worker.prefetchTarget()).toBeGreaterThan(40);
    const long = await enqueueMany(pool, Array.from({ length: 10 }, () => ({ task: 'long' })));
    expect((await first.worker.runOnce()).claimed).toBe(10);
    // It keeps what its slots run and gives the rest back at once.
    await waitFor(async () => (await countByState(pool)).queued === 8, 'the surplus to go back');
    expect(first.worker.inFlight).toBe(2);
    const joining = await worker({ concurrency: 2, batchSize: 100, tasks });
    expect((await joining.worker.runOnce()).claimed).toBe(2);
    // Claims that brought long jobs stop the first worker reaching ahead.
    expect(first.worker.prefetchTarget()).toBe(0);
    expect((await first.worker.runOnce()).claimed).toBe(0);
    holding = false;
    for (const r of release.splice(0)) r();
    await drain(first.worker, 3);
    await drain(joining.worker, 3);
    const { rows } = await pool.query<{ n: number }>(`select count(*)::int as n from pgq.finished_jobs where id = any($1::bigint[]) and state = 'succeeded' and attempts = 1`, [long.map((j) => j.id)]);
    expect(rows[0]!.n).toBe(10);
  });
});

describe('failure', () => {
  it('retries with exponential backoff and jitter, then succeeds', async () => {
    let calls = 0;
    const { id } = await enqueue(pool, { task: 'flaky', maxAttempts: 3 });
    const { worker: w } = await worker({
      retryBaseMs: 10_000,
      random: () => 0,
      tasks: {
        flaky: () => {
          calls++;
          if (calls < 3) throw new Error(`boom ${calls}`);
          return 'ok';
        },
      },
    });
    for (const expectedDelay of [5_000, 10_000]) {
      await drain(w);
      const { rows } = await pool.query<{ state: string; delay: number; last_error: string }>(
        `select state, (extract(epoch from run_after - now()) * 1000)::float8 as delay, last_error from pgq.jobs where id = $1`,
        [id],
      );
      expect(rows[0]!.state).toBe('queued');
      // base x 2^(attempt-1), times 0.5 with the jitter pinned at its low end.
      expect(rows[0]!.delay).toBeGreaterThan(expectedDelay - 1_000);
      expect(rows[0]!.delay).toBeLessThanOrEqual(expectedDelay);
      expect(rows[0]!.last_error).toMatch(/^boom/);
      expect((await w.runOnce()).claimed).toBe(0);
      await pool.query(`update pgq.jobs set run_after = now() where id = $1`, [id]);
    }
    await drain(w);
    expect(await getJob(pool, id)).toMatchObject({ state: 'succeeded', attempts: 3, result: 'ok' });
  });

  it('ends failed with the error once attempts run out', async () => {
    const { id } = await enqueue(pool, { task: 'broken', maxAttempts: 2 });
    const { worker: w } = await worker({ retryBaseMs: 0, tasks: { broken: () => { throw new TypeError('no good'); } } });
    await drain(w);
    await drain(w);
    expect(await getJob(pool, id)).toMatchObject({ state: 'failed', attempts: 2, error: 'TypeError: no good' });
  });

  it('a PermanentError and an at-most-once job fail at once, without retries', async () => {
    const a = await enqueue(pool, { task: 'permanent' });
    const b = await enqueue(pool, { task: 'transient', delivery: 'at_most_once' });
    const { worker: w } = await worker({
      retryBaseMs: 0,
      tasks: {
        permanent: () => { throw new PermanentError('bad input'); },
        transient: () => { throw new Error('network'); },
      },
    });
    await drain(w);
    expect(await getJob(pool, a.id)).toMatchObject({ state: 'failed', attempts: 1, error: 'PermanentError: bad input' });
    expect(await getJob(pool, b.id)).toMatchObject({ state: 'failed', attempts: 1, error: 'network' });
  });

  it('an unknown task or a malformed payload fails with a clear error and the worker goes on', async () => {
    const unknown = await enqueue(pool, { task: 'no-such-task' });
    const malformed = await enqueue(pool, { task: 'burn', payload: { workMs: 'abc' } });
    const good = await enqueue(pool, { task: 'sleep', payload: { workMs: 1 } });
    const { worker: w } = await worker();
    await drain(w);
    expect(await getJob(pool, unknown.id)).toMatchObject({
      state: 'failed',
      attempts: 1,
      error: "PermanentError: unknown task 'no-such-task' (this worker knows: burn, sleep)",
    });
    expect(await getJob(pool, malformed.id)).toMatchObject({
      state: 'failed',
      attempts: 1,
      error: 'PermanentError: payload.workMs: expected a number of milliseconds from 0 to 3600000, got "abc"',
    });
    expect((await getJob(pool, good.id))!.state).toBe('succeeded');
  });

  it('a result that is not JSON fails the run', async () => {
    const { id } = await enqueue(pool, { task: 'bigint' });
    const { worker: w } = await worker({ tasks: { bigint: () => 10n } });
    await drain(w);
    expect((await getJob(pool, id))!.error).toMatch(/^PermanentError: result: not JSON-serialisable/);
  });
});

describe('cancel, expiry and retention', () => {
  it('cancels a queued job at once and a running one through its signal', async () => {
    const queued = await enqueue(pool, { task: 'sleep', runAfter: new Date(Date.now() + 60_000) });
    expect(await cancelJob(pool, queued.id)).toBe('cancelled');
    expect((await getJob(pool, queued.id))!.state).toBe('cancelled');

    const running = await enqueue(pool, { task: 'sleep', payload: { workMs: 60_000 } });
    const { worker: w, workerId } = await worker();
    await w.runOnce();
    expect(await cancelJob(pool, running.id)).toBe('running');
    // The worker learns of it with its heartbeat.
    const toCancel = await workersSql.heartbeat(pool, workerId, w.inFlight, null);
    expect(toCancel).toEqual([running.id]);
    w.cancel(toCancel!);
    await waitFor(() => w.inFlight === 0, 'the cancelled job to stop');
    await w.flush();
    expect(await getJob(pool, running.id)).toMatchObject({ state: 'cancelled', attempts: 1 });
    expect(await cancelJob(pool, '999999')).toBeNull();
  });

  it('a cancel that races a claim waits for it and flags the running job, never answering null', async () => {
    const { id } = await enqueue(pool, { task: 'sleep', payload: { workMs: 60_000 } });
    const claimer = await pool.connect();
    try {
      // A claim in progress: the row is taken and changed, not yet committed.
      await claimer.query('begin');
      await claimer.query(`update pgq.jobs set state = 'running', worker_id = 1, attempts = 1 where id = $1`, [id]);
      const cancelled = cancelJob(pool, id);
      await waitFor(async () => {
        const { rows } = await pool.query(`select count(*)::int as n from pg_locks where not granted and locktype = 'transactionid'`);
        return rows[0].n > 0;
      }, 'the cancel to wait for the claim');
      await claimer.query('commit');
      expect(await cancelled).toBe('running');
      expect((await pool.query('select cancel_requested from pgq.jobs where id = $1', [id])).rows[0].cancel_requested).toBe(true);
    } finally {
      claimer.release();
      await pool.query('delete from pgq.jobs where id = $1', [id]);
    }
  });

  it('a job cancelled while running ends cancelled when its worker dies, stops or gives it back; never queued again', async () => {
    const ids = (await enqueueMany(pool, Array.from({ length: 3 }, () => ({ task: 'sleep', payload: { workMs: 60_000 } })))).map((j) => j.id);
    const dying = await worker({ concurrency: 1 });
    expect((await dying.worker.runOnce()).claimed).toBe(1);
    const stopping = await worker({ concurrency: 1 });
    expect((await stopping.worker.runOnce()).claimed).toBe(1);
    const releasing = await worker({ concurrency: 1 });
    expect((await releasing.worker.runOnce()).claimed).toBe(1);
    for (const id of ids) expect(await cancelJob(pool, id)).toBe('running');
    dying.kill();
    await pool.query(`update pgq.workers set heartbeat_at = now() where id = $1`, [dying.workerId]);
    await passedJustNow();
    expect((await rescuer({ lockLossMs: 0 }).runOnce()).deadWorkers).toEqual([dying.workerId]);
    await stopping.worker.stop(0);
    await ownershipSql.reconcile(pool, releasing.workerId, { lowWater: Number.MAX_SAFE_INTEGER, failedClaims: [], held: [] });
    for (const id of ids) expect((await getJob(pool, id))!.state).toBe('cancelled');
    await stopping.close();
    await releasing.close();
  });

  it('marks jobs past their expiry expired instead of running them', async () => {
    const { id } = await enqueue(pool, { task: 'sleep', expiresAt: new Date(Date.now() + 60_000) });
    await pool.query(`update pgq.jobs set expires_at = now() - interval '1 second' where id = $1`, [id]);
    const { worker: w } = await worker();
    expect((await w.runOnce()).claimed).toBe(0);
    expect((await rescuer().runOnce()).expired).toBe(1);
    expect(await getJob(pool, id)).toMatchObject({ state: 'expired', attempts: 0 });
  });

  it('a job that expires while it waits in a worker\'s buffer never starts there and ends expired', async () => {
    const started: string[] = [];
    const gates: (() => void)[] = [];
    const gate: TaskHandler = (payload, ctx) => {
      if ((payload as { quick?: boolean }).quick) return null;
      started.push(ctx.job.id);
      return new Promise<void>((resolve) => gates.push(resolve));
    };
    const { worker: w } = await worker({ concurrency: 1, batchSize: 10, tasks: { gate } });
    // A quick run first: once the task is known to be short, the next claim takes jobs ahead.
    await enqueue(pool, { task: 'gate', payload: { quick: true } });
    await drain(w);
    const first = await enqueue(pool, { task: 'gate', priority: 2 });
    const soon = await enqueue(pool, { task: 'gate', priority: 1, expiresAt: new Date(Date.now() + 1_000) });
    const later = await enqueue(pool, { task: 'gate', expiresAt: new Date(Date.now() + 60_000) });
    expect((await w.runOnce()).claimed).toBe(3);
    await waitFor(() => started.length === 1, 'the first job to start');
    // The buffered job's expiry passes on the database clock while the first one runs.
    await waitFor(async () => (await pool.query(`select now() > expires_at + interval '50 milliseconds' as past from pgq.jobs where id = $1`, [soon.id])).rows[0].past, 'the expiry to pass');
    gates.shift()!();
    await waitFor(() => started.length === 2, 'the next job to start');
    expect(started).toEqual([first.id, later.id]);
    await waitFor(async () => (await getJob(pool, soon.id))?.state === 'queued', 'the expired job to be given back');
    expect((await rescuer().runOnce()).expired).toBe(1);
    expect(await getJob(pool, soon.id)).toMatchObject({ state: 'expired', attempts: 0 });
    gates.shift()!();
    await drain(w);
    expect(started).toEqual([first.id, later.id]);
  });

  it('prunes finished jobs and their keys after the retention, keeps newer ones', async () => {
    const old = await enqueue(pool, { task: 'sleep', payload: { workMs: 0 }, idempotencyKey: 'old' });
    const recent = await enqueue(pool, { task: 'sleep', payload: { workMs: 0 }, idempotencyKey: 'recent' });
    const { worker: w } = await worker();
    await drain(w);
    await pool.query(`update pgq.finished_jobs set finished_at = now() - interval '2 hours' where id = $1`, [old.id]);
    await pool.query(`update pgq.job_keys set created_at = now() - interval '2 hours'`);
    const pass = await rescuer({ retentionMs: 3_600_000, pruneEveryMs: 0 }).runOnce();
    expect(pass.pruned).toBe(1);
    expect(await getJob(pool, old.id)).toBeNull();
    expect((await getJob(pool, recent.id))!.state).toBe('succeeded');
    const { rows } = await pool.query('select key from pgq.job_keys order by key');
    expect(rows).toEqual([{ key: 'recent' }]);
    expect((await enqueue(pool, { task: 'sleep', idempotencyKey: 'old' })).created).toBe(true);
  });
});

describe('pruning', () => {
  const oldHistory = async (n: number) => {
    await pool.query(
      `insert into pgq.finished_jobs (id, queue, task, payload, priority, state, attempts, max_attempts, delivery, idempotency_key, created_at, run_after, started_at, finished_at)
       select 10000000 + g, 'default', 'sleep', '{}', 0, 'succeeded', 1, 5, 'at_least_once', 'k' || g, now() - interval '3 hours', now() - interval '3 hours', now() - interval '3 hours', now() - interval '2 hours'
         from generate_series(1, $1::int) g`,
      [n],
    );
    await pool.query(`insert into pgq.job_keys (key, job_id) select 'k' || g, 10000000 + g from generate_series(1, $1::int) g`, [n]);
  };
  const left = async () => (await pool.query<{ jobs: number; keys: number }>(`select (select count(*)::int from pgq.finished_jobs) as jobs, (select count(*)::int from pgq.job_keys) as keys`)).rows[0]!;

  it('a pass prunes in chunks until the history is down to the retention, keys with their jobs', async () => {
    await oldHistory(12_000);
    const pass = await rescuer({ retentionMs: 3_600_000, batchLimit: 5_000, pruneBudgetMs: 60_000 }).runOnce();
    expect(pass.pruned).toBe(12_000);
    expect(await left()).toEqual({ jobs: 0, keys: 0 });
  });

  it("a pass summarises the history's new block ranges, so a look at the last minute reads only those", async () => {
    await oldHistory(50_000);
    // Through the BRIN index, as the planner goes once the history is large and analysed.
    const recentBuffers = async () => {
      const client = await pool.connect();
      try {
        await client.query('set enable_seqscan = off');
        const { rows } = await client.query(`explain (analyze, buffers, format json) select count(*) from pgq.finished_jobs where finished_at > now() - interval '60 seconds'`);
        const plan = rows[0]['QUERY PLAN'][0].Plan;
        return plan['Shared Hit Blocks'] + plan['Shared Read Blocks'];
      } finally {
        await client.query('reset enable_seqscan');
        client.release();
      }
    };
    // Unsummarised, every range of the new rows is read.
    expect(await recentBuffers()).toBeGreaterThan(500);
    await rescuer({ pruneEveryMs: 60_000, retentionMs: 365 * 24 * 3_600_000 }).runOnce();
    expect(await recentBuffers()).toBeLessThan(50);
  });

  it('a pass that ran out of time leaves the next pass to go on at once, not a minute later', async () => {
    await oldHistory(12_000);
    const maintenance = rescuer({ retentionMs: 3_600_000, batchLimit: 5_000, pruneBudgetMs: 0, pruneEveryMs: 60_000 });
    expect((await maintenance.runOnce()).pruned).toBe(5_000);
    expect((await maintenance.runOnce()).pruned).toBe(5_000);
    expect((await maintenance.runOnce()).pruned).toBe(2_000);
    // Caught up: the next prune is a minute away.
    expect((await maintenance.runOnce()).pruned).toBe(0);
    expect(await left()).toEqual({ jobs: 0, keys: 0 });
  });
});

describe('rescue', () => {
  it("returns a dead worker's jobs: at-least-once again, at-most-once failed", async () => {
    const alo = await enqueue(pool, { task: 'sleep', payload: { workMs: 60_000 } });
    const amo = await enqueue(pool, { task: 'sleep', payload: { workMs: 60_000 }, delivery: 'at_most_once' });
    const last = await enqueue(pool, { task: 'sleep', payload: { workMs: 60_000 }, maxAttempts: 1 });
    const dying = await worker();
    expect((await dying.worker.runOnce()).claimed).toBe(3);
    // The process is gone: its connection, and with it the presence lock.
    dying.kill();
    await passedJustNow();
    // Its last heartbeat just before it died (newer than every worker session now connected).
    await pool.query(`update pgq.workers set heartbeat_at = now() where id = $1`, [dying.workerId]);
    // The lock-loss window would make the test wait for the heartbeat to age: none here.
    const pass = await rescuer({ lockLossMs: 0 }).runOnce();
    expect(pass.deadWorkers).toEqual([dying.workerId]);
    expect(pass.requeued).toEqual([alo.id]);
    expect(pass.failed.sort()).toEqual([amo.id, last.id].sort());
    expect(await getJob(pool, alo.id)).toMatchObject({ state: 'queued', attempts: 1, workerId: null });
    expect((await getJob(pool, alo.id))!.error).toMatch(/died while running attempt 1/);
    expect(await getJob(pool, amo.id)).toMatchObject({ state: 'failed', attempts: 1 });
    expect((await getJob(pool, amo.id))!.error).toMatch(/at-most-once job; it is not run again/);
    // The dead worker's late result is not recorded.
    await dying.worker.stop(0);
    expect((await getJob(pool, alo.id))!.state).toBe('queued');
  });

  it('declares a worker whose lease ran out dead even though its lock is held', async () => {
    await enqueue(pool, { task: 'sleep', payload: { workMs: 60_000 } });
    const stuck = await worker();
    await stuck.worker.runOnce();
    expect((await rescuer().runOnce()).deadWorkers).toEqual([]);
    await pool.query(`update pgq.workers set heartbeat_at = now() - interval '16 seconds'`);
    await passedJustNow();
    const pass = await rescuer({ leaseMs: 15_000 }).runOnce();
    expect(pass.deadWorkers).toEqual([stuck.workerId]);
    expect(pass.requeued).toHaveLength(1);
  });

  it('sweeps up running jobs whose worker row vanished without being declared dead', async () => {
    const { id } = await enqueue(pool, { task: 'sleep', payload: { workMs: 60_000 } });
    const w = await worker();
    await w.worker.runOnce();
    await pool.query('delete from pgq.workers where id = $1', [w.workerId]);
    const pass = await rescuer({ pruneEveryMs: 0 }).runOnce();
    expect(pass.deadWorkers).toEqual([]);
    expect(pass.requeued).toEqual([id]);
  });

  it('a lost lock counts as death only with a heartbeat newer than every worker session (not after a crash-reinit)', async () => {
    const w = await worker();
    w.kill();
    await passedJustNow();
    // As after a reinit: every session now connected started after the worker's last heartbeat.
    await pool.query(
      `update pgq.workers set heartbeat_at = (select min(backend_start) from pg_stat_activity
                                                where datname = current_database() and application_name like 'pgq-worker %') - interval '1 second'`,
    );
    expect((await rescuer({ leaseMs: 3_600_000, lockLossMs: 0 }).runOnce()).deadWorkers).toEqual([]);
    await pool.query(`update pgq.workers set heartbeat_at = now() - interval '1 millisecond'`);
    expect((await rescuer({ leaseMs: 3_600_000, lockLossMs: 0 }).runOnce()).deadWorkers).toEqual([w.workerId]);
  });

  it('after a gap in maintenance longer than twice the interval, nobody is removed and every lease starts again', async () => {
    const w = await worker();
    await pool.query(`update pgq.workers set heartbeat_at = now() - interval '1 hour'`);
    await pool.query(`update pgq.maintenance set last_pass_at = now() - interval '1 minute', grace_from = '-infinity'`);
    const first = await rescuer({ leaseMs: 15_000 }).runOnce();
    expect(first.deadWorkers).toEqual([]);
    // The next pass counts the silence from the grace point, not from the old heartbeat.
    expect((await rescuer({ leaseMs: 15_000 }).runOnce()).deadWorkers).toEqual([]);
    await pool.query(`update pgq.maintenance set grace_from = now() - interval '16 seconds'`);
    expect((await rescuer({ leaseMs: 15_000 }).runOnce()).deadWorkers).toEqual([w.workerId]);
    w.kill();
  });

  it('runs maintenance in one process at a time', async () => {
    const holder = await pool.connect();
    try {
      await holder.query('begin');
      expect(await maintenanceSql.tryMaintenanceLock(holder)).toBe(true);
      expect((await rescuer().runOnce()).skipped).toBe(true);
      await holder.query('commit');
      expect((await rescuer().runOnce()).skipped).toBe(false);
    } finally {
      holder.release();
    }
  });

  it('runs about one pass per interval fleet-wide: a pass finds one that ran just now and does nothing', async () => {
    const w = await worker();
    const m = new Maintenance({ pool, logger: silentLogger }, { leaseMs: 15_000, intervalMs: 60_000, retentionMs: 3_600_000 });
    await pool.query(`update pgq.maintenance set last_pass_at = now() - interval '50 seconds'`);
    expect((await m.runOnce()).skipped).toBe(false);
    const again = await m.runOnce();
    expect(again.skipped).toBe(true);
    // Whoever finds the pass taken learns the fleet's size, to space its next look by it.
    expect(again.fleet).toBe((await pool.query('select count(*)::int as n from pgq.workers')).rows[0].n);
    await w.close();
  });
});
