/**
 * Who holds a job, proven under pipelining and lost replies (issue 11, tests 1-3 and 6), driven
 * through the reply gate against real Postgres. Every execution is counted by the handler in a
 * table, with the run's fencing token.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { cancelJob, enqueueMany, getJob } from '../worker/index.ts';
import { poolDatabase } from '../worker/loop/database.ts';
import type { PresenceView } from '../worker/loop/types.ts';
import { WorkerMetrics } from '../worker/metrics.ts';
import { rescueOrphans } from '../worker/sql/maintenance.ts';
import * as ownershipSql from '../worker/sql/ownership.ts';
import * as runSql from '../worker/sql/run.ts';
import type { TaskHandler } from '../worker/tasks/types.ts';
import { drain, manualWorker, openDatabase, waitFor } from './harness.ts';
import { ReplyGate } from './support/reply-gate.ts';

const { pool } = await openDatabase();
beforeAll(async () => {
  await pool.query('create table executions (job_id bigint not null, token text not null)');
});
// Each test starts from an empty queue: a job another test left queued would be claimed here.
beforeEach(async () => {
  await pool.query('delete from pgq.jobs');
});
afterAll(() => pool.end());

/** Counts its own execution, with the run's token, then succeeds. */
const counted: TaskHandler = async (_payload, ctx) => {
  await pool.query('insert into executions (job_id, token) values ($1, $2)', [ctx.job.id, ctx.job.token]);
  return { token: ctx.job.token };
};
const tasks = { counted };

async function executions(ids: string[]): Promise<Map<string, string[]>> {
  const { rows } = await pool.query<{ job_id: string; token: string }>('select job_id::text, token from executions where job_id = any($1::bigint[])', [ids]);
  const byJob = new Map<string, string[]>(ids.map((id) => [id, []]));
  for (const r of rows) byJob.get(r.job_id)!.push(r.token);
  return byJob;
}

async function lost(metrics: WorkerMetrics): Promise<number> {
  return (await metrics.jobs.get()).values.filter((v) => v.labels.outcome === 'lost').reduce((n, v) => n + v.value, 0);
}

async function rowsOf(ids: string[]) {
  const { rows } = await pool.query<{ id: string; state: string; attempts: number; worker_id: string | null; claim_seq: string | null }>(
    'select id::text, state, attempts, worker_id::text, claim_seq::text from pgq.jobs where id = any($1::bigint[]) order by id',
    [ids],
  );
  return rows;
}

describe('pipelined claims and lost replies', () => {
  it('test 1: replies out of order with a reconciliation between; the first reply lost after commit: its jobs come back with attempts restored and run once elsewhere', async () => {
    const gate = new ReplyGate(poolDatabase(pool));
    // Room for two claims of two at once.
    const a = await manualWorker(pool, { db: gate.db, concurrency: 4, batchSize: 2, tasks });
    const b = await manualWorker(pool, { concurrency: 4, tasks });
    try {
      const first = (await enqueueMany(pool, [{ task: 'counted' }, { task: 'counted' }])).map((j) => j.id);
      gate.hold('settleAndClaim', 2);
      const one = a.worker.runOnce();
      const c1 = await gate.nextHeld(1);
      const second = (await enqueueMany(pool, [{ task: 'counted' }, { task: 'counted' }])).map((j) => j.id);
      const two = a.worker.runOnce();
      const c2 = await gate.nextHeld(2);
      // Claim 2 answers first; claim 1 is still on the wire.
      c2.release();
      expect((await two).claimed).toBe(2);
      await a.worker.reconcile();
      // Claim 1 committed and is past the low-water mark: not judged, still the worker's.
      expect((await rowsOf(first)).map((r) => [r.state, r.worker_id, r.claim_seq])).toEqual(first.map(() => ['running', a.workerId, '1']));
      expect(gate.calls.filter((c) => c.operation === 'reconcile').at(-1)!.args[1]).toMatchObject({ lowWater: 0, failedClaims: [] });
      c1.drop();
      await expect(one).rejects.toMatchObject({ code: 'ECONNRESET' });
      await a.worker.reconcile();
      expect((await rowsOf(first)).map((r) => [r.state, r.attempts, r.worker_id])).toEqual(first.map(() => ['queued', 0, null]));
      await waitFor(() => a.worker.inFlight === 0, "claim 2's jobs to end");
      await a.worker.flush();
      await drain(b.worker);
      const runs = await executions([...first, ...second]);
      for (const id of first) expect(runs.get(id)).toEqual([expect.stringMatching(new RegExp(`^${b.workerId}:`))]);
      for (const id of second) expect(runs.get(id)).toEqual([`${a.workerId}:2`]);
      for (const id of [...first, ...second]) expect(await getJob(pool, id)).toMatchObject({ state: 'succeeded', attempts: 1 });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('test 2: a claim that commits after its client gave up, and after the first release ran, is released again; never started by its worker; runs once elsewhere', async () => {
    const gate = new ReplyGate(poolDatabase(pool));
    const a = await manualWorker(pool, { db: gate.db, concurrency: 2, batchSize: 2, tasks });
    const b = await manualWorker(pool, { concurrency: 4, tasks });
    try {
      const ids = (await enqueueMany(pool, [{ task: 'counted' }, { task: 'counted', delivery: 'at_most_once' }])).map((j) => j.id);
      gate.delay('settleAndClaim');
      await expect(a.worker.runOnce()).rejects.toMatchObject({ code: 'ECONNRESET' });
      // The first release finds nothing: the statement has not reached the server yet.
      await a.worker.reconcile();
      const release = gate.calls.filter((c) => c.operation === 'reconcile').at(-1)!.args[1];
      expect(release).toMatchObject({ failedClaims: [1] });
      expect((await rowsOf(ids)).map((r) => r.state)).toEqual(['queued', 'queued']);
      await gate.delayed[0]!.commit();
      expect((await rowsOf(ids)).map((r) => [r.state, r.worker_id])).toEqual(ids.map(() => ['running', a.workerId]));
      await a.worker.reconcile();
      expect((await rowsOf(ids)).map((r) => [r.state, r.attempts])).toEqual(ids.map(() => ['queued', 0]));
      expect(a.worker.inFlight).toBe(0);
      await drain(b.worker);
      const runs = await executions(ids);
      for (const id of ids) expect(runs.get(id)).toEqual([expect.stringMatching(new RegExp(`^${b.workerId}:`))]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('test 3: outcomes waiting and on the wire across a reconciliation, then a lost settle reply: nothing requeued, the resend answers "already recorded", one execution each', async () => {
    const gate = new ReplyGate(poolDatabase(pool));
    const metrics = new WorkerMetrics(['counted']);
    const a = await manualWorker(pool, { db: gate.db, metrics, concurrency: 4, tasks });
    try {
      const ids = (await enqueueMany(pool, Array.from({ length: 4 }, () => ({ task: 'counted' })))).map((j) => j.id);
      expect((await a.worker.runOnce()).claimed).toBe(4);
      await waitFor(() => a.worker.inFlight === 0, 'the jobs to end');
      // Waiting outcomes are held: a reconciliation leaves their jobs alone.
      await a.worker.reconcile();
      expect((await rowsOf(ids)).map((r) => r.state)).toEqual(ids.map(() => 'running'));
      gate.hold('settleAndClaim');
      const settling = a.worker.runOnce();
      const held = await gate.nextHeld();
      // The settle committed, its reply is on the wire: still held, so not judged.
      await a.worker.reconcile();
      held.drop();
      await expect(settling).rejects.toMatchObject({ code: 'ECONNRESET' });
      await a.worker.flush();
      expect(gate.calls.some((c) => c.operation === 'answerUnrecorded')).toBe(true);
      expect(await lost(metrics)).toBe(0);
      for (const id of ids) expect(await getJob(pool, id)).toMatchObject({ state: 'succeeded', attempts: 1 });
      const runs = await executions(ids);
      for (const id of ids) expect(runs.get(id)).toHaveLength(1);
    } finally {
      await a.close();
    }
  });

  it('a retry and a finish sent again after a lost reply answer "already recorded", not "taken away"', async () => {
    const a = await manualWorker(pool, { concurrency: 2, tasks });
    try {
      const [retried, failed] = (await enqueueMany(pool, [{ task: 'counted' }, { task: 'counted' }])).map((j) => j.id);
      await pool.query(`update pgq.jobs set state = 'running', worker_id = $1, claim_seq = 7, attempts = 1 where id = any($2::bigint[])`, [a.workerId, [retried, failed]]);
      const run = { id: retried!, attempt: 1, claimSeq: 7 };
      expect(await runSql.retryJob(pool, a.workerId, run, 'boom', 60_000)).toBe('recorded');
      expect(await runSql.retryJob(pool, a.workerId, run, 'boom', 60_000)).toBe('already');
      // Another run's token is refused.
      expect(await runSql.retryJob(pool, a.workerId, { ...run, claimSeq: 8 }, 'boom', 60_000)).toBe('refused');
      const end = { id: failed!, attempt: 1, claimSeq: 7, state: 'failed' as const, error: 'boom' };
      expect(await runSql.finishJobs(pool, a.workerId, [end])).toEqual([failed]);
      expect(await runSql.finishJobs(pool, a.workerId, [end])).toEqual([]);
      const answers = await ownershipSql.answerUnrecorded(pool, a.workerId, [
        { ...end, resultJson: null },
        { ...end, claimSeq: 8, resultJson: null },
      ]);
      expect([...answers]).toEqual([[failed, 'already']]);
    } finally {
      await a.close();
    }
  });
});

describe('received but not held (a lost commit)', () => {
  it('an at-least-once job with attempts left goes back to the queue; an at-most-once one fails as "outcome lost", never requeued', async () => {
    const a = await manualWorker(pool, { concurrency: 2, tasks });
    try {
      const [again, once] = (await enqueueMany(pool, [{ task: 'counted' }, { task: 'counted', delivery: 'at_most_once' }])).map((j) => j.id);
      // As after a failover that lost the settles: the worker received both and no longer holds them.
      await pool.query(`update pgq.jobs set state = 'running', worker_id = $1, claim_seq = 3, attempts = 1 where id = any($2::bigint[])`, [a.workerId, [again, once]]);
      const result = await ownershipSql.reconcile(pool, a.workerId, { lowWater: 3, failedClaims: [], held: [] });
      expect(result).toEqual({ released: [], requeued: [again], lost: [once], cancelled: [] });
      expect(await getJob(pool, again!)).toMatchObject({ state: 'queued', attempts: 1, error: expect.stringMatching(/^outcome lost/) });
      expect(await getJob(pool, once!)).toMatchObject({ state: 'failed', error: expect.stringMatching(/^outcome lost/) });
    } finally {
      await a.close();
    }
  });

  it('a reconciliation leaves claims above the low-water mark, held jobs, and other workers\' jobs alone', async () => {
    const a = await manualWorker(pool, { concurrency: 2, tasks });
    const b = await manualWorker(pool, { concurrency: 2, tasks });
    try {
      const [above, held, theirs] = (await enqueueMany(pool, [{ task: 'counted' }, { task: 'counted' }, { task: 'counted' }])).map((j) => j.id);
      await pool.query(`update pgq.jobs set state = 'running', worker_id = $1, claim_seq = 5, attempts = 1 where id = $2`, [a.workerId, above]);
      await pool.query(`update pgq.jobs set state = 'running', worker_id = $1, claim_seq = 2, attempts = 1 where id = $2`, [a.workerId, held]);
      await pool.query(`update pgq.jobs set state = 'running', worker_id = $1, claim_seq = 2, attempts = 1 where id = $2`, [b.workerId, theirs]);
      const result = await ownershipSql.reconcile(pool, a.workerId, { lowWater: 4, failedClaims: [], held: [held!] });
      expect(result).toEqual({ released: [], requeued: [], lost: [], cancelled: [] });
      expect((await rowsOf([above!, held!, theirs!])).map((r) => r.state)).toEqual(['running', 'running', 'running']);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('a late outcome (rule 9)', () => {
  it('replaces the rescuer\'s "outcome unknown" once, under the same token only', async () => {
    const a = await manualWorker(pool, { concurrency: 1, tasks });
    try {
      const [id] = (await enqueueMany(pool, [{ task: 'counted', delivery: 'at_most_once' }])).map((j) => j.id);
      await pool.query(`update pgq.jobs set state = 'running', worker_id = $1, claim_seq = 4, attempts = 1 where id = $2`, [a.workerId, id]);
      // The rescuer takes it from a worker it believes dead.
      await pool.query('delete from pgq.workers where id = $1', [a.workerId]);
      expect((await rescueOrphans(pool, [a.workerId])).failed).toEqual([id]);
      expect((await getJob(pool, id!))!.error).toMatch(/^outcome unknown/);
      const late = { id: id!, attempt: 1, claimSeq: 4, state: 'succeeded' as const, resultJson: '{"late":true}', error: null };
      expect([...(await ownershipSql.answerUnrecorded(pool, a.workerId, [{ ...late, claimSeq: 5 }]))]).toEqual([]);
      expect([...(await ownershipSql.answerUnrecorded(pool, a.workerId, [late]))]).toEqual([[id, 'replaced']]);
      expect(await getJob(pool, id!)).toMatchObject({ state: 'succeeded', result: { late: true }, error: null });
      expect([...(await ownershipSql.answerUnrecorded(pool, a.workerId, [{ ...late, resultJson: '{"again":true}' }]))]).toEqual([[id, 'already']]);
      expect((await getJob(pool, id!))!.result).toEqual({ late: true });
    } finally {
      await a.close();
    }
  });

  it('replaces reconciliation\'s "outcome lost" too: a settle lost in a failover, judged before the worker noticed, is recorded by the resend', async () => {
    const a = await manualWorker(pool, { concurrency: 1, tasks });
    try {
      const [id] = (await enqueueMany(pool, [{ task: 'counted', delivery: 'at_most_once' }])).map((j) => j.id);
      // On the new primary the claim survived and the settle did not; a reconciliation got there first.
      await pool.query(`update pgq.jobs set state = 'running', worker_id = $1, claim_seq = 6, attempts = 1 where id = $2`, [a.workerId, id]);
      expect((await ownershipSql.reconcile(pool, a.workerId, { lowWater: 6, failedClaims: [], held: [] })).lost).toEqual([id]);
      const resent = { id: id!, attempt: 1, claimSeq: 6, state: 'succeeded' as const, resultJson: '{"ran":true}', error: null };
      expect([...(await ownershipSql.answerUnrecorded(pool, a.workerId, [resent]))]).toEqual([[id, 'replaced']]);
      expect(await getJob(pool, id!)).toMatchObject({ state: 'succeeded', result: { ran: true }, error: null });
    } finally {
      await a.close();
    }
  });

  it('a worker revoked with successes waiting sends them late: the "outcome unknown" records become what happened', async () => {
    let workerId: string | undefined;
    const presence = (id: string): PresenceView => {
      workerId = id;
      return { get workerId() { return workerId; }, ready: true, whenReady: () => Promise.resolve() };
    };
    const a = await manualWorker(pool, { concurrency: 2, tasks, presence });
    try {
      const ids = (await enqueueMany(pool, [{ task: 'counted', delivery: 'at_most_once' }, { task: 'counted', delivery: 'at_most_once' }])).map((j) => j.id);
      const oldId = a.workerId;
      expect((await a.worker.runOnce()).claimed).toBe(2);
      await waitFor(() => a.worker.inFlight === 0, 'both to end');
      await pool.query('delete from pgq.workers where id = $1', [oldId]);
      expect((await rescueOrphans(pool, [oldId])).failed.sort()).toEqual([...ids].sort());
      workerId = undefined;
      a.worker.abandon(oldId);
      await a.worker.flush();
      for (const id of ids) expect(await getJob(pool, id)).toMatchObject({ state: 'succeeded', error: null });
      const runs = await executions(ids);
      for (const id of ids) expect(runs.get(id)).toHaveLength(1);
    } finally {
      await a.close();
    }
  });
});

describe('a worker revoked while it runs (rule 9)', () => {
  it('at-most-once handlers go on and their outcome, success or failure, replaces "outcome unknown"; an at-least-once handler is aborted and never recorded', async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const started = new Set<string>();
    const gated: TaskHandler = async (payload, ctx) => {
      started.add(ctx.job.id);
      await pool.query('insert into executions (job_id, token) values ($1, $2)', [ctx.job.id, ctx.job.token]);
      await held;
      if ((payload as { fail?: boolean }).fail) throw new Error('failed on purpose after the revocation');
      return { token: ctx.job.token };
    };
    let workerId: string | undefined;
    const presence = (id: string): PresenceView => {
      workerId = id;
      return { get workerId() { return workerId; }, ready: true, whenReady: () => Promise.resolve() };
    };
    const a = await manualWorker(pool, { concurrency: 3, tasks: { gated }, presence });
    try {
      const [ok, bad, again] = (
        await enqueueMany(pool, [
          { task: 'gated', delivery: 'at_most_once' },
          { task: 'gated', delivery: 'at_most_once', payload: { fail: true } },
          { task: 'gated', maxAttempts: 3 },
        ])
      ).map((j) => j.id) as [string, string, string];
      const oldId = a.workerId;
      expect((await a.worker.runOnce()).claimed).toBe(3);
      await waitFor(() => started.size === 3, 'all three to start');
      await pool.query('delete from pgq.workers where id = $1', [oldId]);
      const rescued = await rescueOrphans(pool, [oldId]);
      expect(rescued.failed.sort()).toEqual([ok, bad].sort());
      expect(rescued.requeued).toEqual([again]);
      workerId = undefined;
      a.worker.abandon(oldId);
      expect(a.worker.inFlight).toBe(2);
      release();
      await waitFor(() => a.worker.inFlight === 0, 'the at-most-once runs to end');
      await a.worker.flush();
      expect(await getJob(pool, ok)).toMatchObject({ state: 'succeeded', error: null });
      expect(await getJob(pool, bad)).toMatchObject({ state: 'failed', error: expect.stringContaining('failed on purpose after the revocation') });
      expect(await getJob(pool, again)).toMatchObject({ state: 'queued', attempts: 1 });
    } finally {
      await a.close();
    }
  });
});

describe('cancel (rule 10)', () => {
  it('against claim, retry and settle in either order: never null, and the job ends cancelled or as it really ended', async () => {
    const a = await manualWorker(pool, { concurrency: 2, tasks: { ...tasks, fails: () => Promise.reject(new Error('on purpose')) } });
    try {
      // Cancel, then claim: the claim finds nothing.
      const [before] = (await enqueueMany(pool, [{ task: 'counted' }])).map((j) => j.id);
      expect(await cancelJob(pool, before!)).toBe('cancelled');
      expect((await a.worker.runOnce()).claimed).toBe(0);
      // Claim, then cancel, then the settle: ends cancelled.
      const [mid] = (await enqueueMany(pool, [{ task: 'counted' }])).map((j) => j.id);
      await pool.query(`update pgq.jobs set state = 'running', worker_id = $1, claim_seq = 9, attempts = 1 where id = $2`, [a.workerId, mid]);
      expect(await cancelJob(pool, mid!)).toBe('running');
      expect(await runSql.retryJob(pool, a.workerId, { id: mid!, attempt: 1, claimSeq: 9 }, 'boom', 0)).toBe('refused');
      expect(await runSql.finishJobs(pool, a.workerId, [{ id: mid!, attempt: 1, claimSeq: 9, state: 'failed', error: 'boom' }])).toEqual([mid]);
      expect((await getJob(pool, mid!))!.state).toBe('cancelled');
      // Settle, then cancel: the job is already finished and stays as it ended.
      const [after] = (await enqueueMany(pool, [{ task: 'counted' }])).map((j) => j.id);
      await drain(a.worker);
      expect(await cancelJob(pool, after!)).toBe('succeeded');
      // Retry, then cancel: the queued retry is cancelled.
      const [retried] = (await enqueueMany(pool, [{ task: 'counted' }])).map((j) => j.id);
      await pool.query(`update pgq.jobs set state = 'running', worker_id = $1, claim_seq = 10, attempts = 1 where id = $2`, [a.workerId, retried]);
      expect(await runSql.retryJob(pool, a.workerId, { id: retried!, attempt: 1, claimSeq: 10 }, 'boom', 60_000)).toBe('recorded');
      expect(await cancelJob(pool, retried!)).toBe('cancelled');
    } finally {
      await a.close();
    }
  });
});

describe('a frozen worker (test 4)', () => {
  it('wakes with a buffer of at-most-once jobs and a claim reply that arrived during the freeze: none start on it, its old id never comes back, nothing is recorded twice', async () => {
    const gate = new ReplyGate(poolDatabase(pool));
    let workerId: string | undefined;
    let leaseValid = true;
    const presence = (id: string): PresenceView => {
      workerId = id;
      return { get workerId() { return workerId; }, ready: true, get leaseValid() { return leaseValid; }, whenReady: () => Promise.resolve() };
    };
    const started: string[] = [];
    let finishLong: () => void = () => {};
    // The long job ignores its abort signal, as many handlers do, and ends when the test says.
    const long: TaskHandler = () => new Promise<void>((resolve) => (finishLong = resolve));
    const noted: TaskHandler = (payload, ctx) => {
      started.push(ctx.job.id);
      return counted(payload, ctx);
    };
    // A long horizon: the long job (a task it has not run yet) must not stop the second claim reaching ahead.
    const a = await manualWorker(pool, { db: gate.db, concurrency: 1, batchSize: 10, prefetchHorizonMs: 1_000, tasks: { counted: noted, long }, presence });
    try {
      // Short jobs first, so its prefetch learns to claim ahead of its one slot.
      await enqueueMany(pool, Array.from({ length: 5 }, () => ({ task: 'counted' })));
      await drain(a.worker, 5);
      expect((await pool.query(`select 1 from pgq.jobs`)).rowCount).toBe(0);
      const long = (await enqueueMany(pool, [{ task: 'long' }])).map((j) => j.id);
      const buffered = (await enqueueMany(pool, Array.from({ length: 4 }, () => ({ task: 'counted', delivery: 'at_most_once' as const })))).map((j) => j.id);
      await a.worker.runOnce();
      expect(a.worker.inFlight).toBe(5);
      const late = (await enqueueMany(pool, Array.from({ length: 2 }, () => ({ task: 'counted', delivery: 'at_most_once' as const })))).map((j) => j.id);
      gate.hold('settleAndClaim');
      const claiming = a.worker.runOnce();
      const reply = await gate.nextHeld();
      // Frozen past its lease: the rescuer declares it dead and takes back everything it held.
      leaseValid = false;
      const oldId = a.workerId;
      await pool.query('delete from pgq.workers where id = $1', [oldId]);
      const rescued = await rescueOrphans(pool, [oldId]);
      expect(rescued.failed.sort()).toEqual([...buffered, ...late].sort());
      // It wakes: the lapse is noticed, the claim reply that came in meanwhile is handed over.
      a.worker.leaseLapsed();
      reply.release();
      await claiming;
      // The long handler ends now, freeing the slot: nothing buffered may start in it.
      finishLong();
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      expect(started.filter((id) => [...buffered, ...late].includes(id))).toEqual([]);
      // Its heartbeat finds the row gone: the incarnation is revoked and a new one drawn.
      workerId = undefined;
      a.worker.abandon(oldId);
      await a.worker.flush();
      const runs = await executions([...buffered, ...late]);
      for (const id of [...buffered, ...late]) expect(runs.get(id)).toEqual([]);
      const { rows } = await pool.query<{ id: string; state: string; error: string }>('select id::text, state, error from pgq.finished_jobs where id = any($1::bigint[])', [[...buffered, ...late]]);
      expect(rows).toHaveLength(6);
      for (const r of rows) expect(r).toMatchObject({ state: 'failed', error: expect.stringMatching(/^outcome unknown/) });
      expect((await getJob(pool, long[0]!))!.state).toBe('queued');
      expect((await pool.query('select 1 from pgq.workers where id = $1', [oldId])).rowCount).toBe(0);
    } finally {
      await a.close();
    }
  });
});
