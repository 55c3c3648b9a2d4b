/**
 * The reply gate the fault tests stand on: the statement commits, the caller's reply is held,
 * released later, or dropped as a reset connection.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { enqueueMany, getJob } from '../worker/index.ts';
import { poolDatabase } from '../worker/loop/database.ts';
import { WorkerMetrics } from '../worker/metrics.ts';
import { drain, manualWorker, openDatabase, waitFor } from './harness.ts';
import { ReplyGate } from './support/reply-gate.ts';

const { pool } = await openDatabase();
afterAll(() => pool.end());

describe('the reply gate', () => {
  it('holds a committed claim reply, then releases it', async () => {
    const gate = new ReplyGate(poolDatabase(pool));
    const w = await manualWorker(pool, { db: gate.db, concurrency: 2 });
    try {
      const [a, b] = await enqueueMany(pool, [{ task: 'sleep', payload: { workMs: 1 } }, { task: 'sleep', payload: { workMs: 1 } }]);
      gate.hold('settleAndClaim');
      const iteration = w.worker.runOnce();
      const held = await gate.nextHeld();
      // Committed on the server while the worker has not seen it.
      expect((await getJob(pool, a!.id))?.state).toBe('running');
      expect(w.worker.inFlight).toBe(0);
      held.release();
      expect((await iteration).claimed).toBe(2);
      await drain(w.worker);
      expect((await getJob(pool, b!.id))?.state).toBe('succeeded');
    } finally {
      await w.close();
    }
  });

  it('drops a committed reply as a reset connection', async () => {
    const gate = new ReplyGate(poolDatabase(pool));
    const w = await manualWorker(pool, { db: gate.db, concurrency: 1 });
    try {
      const [job] = await enqueueMany(pool, [{ task: 'sleep', payload: { workMs: 1 } }]);
      gate.hold('settleAndClaim');
      const iteration = w.worker.runOnce();
      (await gate.nextHeld()).drop();
      await expect(iteration).rejects.toMatchObject({ code: 'ECONNRESET' });
      // The claim committed although its worker never heard of it.
      const stored = await getJob(pool, job!.id);
      expect(stored?.state).toBe('running');
      expect(stored?.workerId).toBe(w.workerId);
      expect(w.worker.inFlight).toBe(0);
    } finally {
      await w.close();
    }
  });
});

describe('a claim whose reply is lost after the server committed it', () => {
  it('is given back with its attempt restored, and runs exactly once', async () => {
    const gate = new ReplyGate(poolDatabase(pool));
    const runs: string[] = [];
    const w = await manualWorker(pool, { db: gate.db, concurrency: 2, tasks: { note: (_p, ctx) => void runs.push(ctx.job.id) } });
    try {
      const [job] = await enqueueMany(pool, [{ task: 'note' }]);
      gate.hold('settleAndClaim');
      const loop = w.worker.start();
      (await gate.nextHeld()).drop();
      const done = await waitFor(async () => {
        const j = await getJob(pool, job!.id);
        return j?.state === 'succeeded' ? j : undefined;
      }, 'the job to run after all');
      expect(done.attempts).toBe(1);
      expect(runs).toEqual([job!.id]);
      expect(gate.calls.some((c) => c.operation === 'reconcile')).toBe(true);
      await w.worker.stop(0);
      await loop;
    } finally {
      await w.close();
    }
  });
});

describe('a settle whose reply is lost after the server committed it', () => {
  it('is sent again, answers "already recorded", and the job is neither lost nor run twice', async () => {
    const gate = new ReplyGate(poolDatabase(pool));
    const runs: string[] = [];
    const metrics = new WorkerMetrics(['note']);
    const w = await manualWorker(pool, { db: gate.db, metrics, concurrency: 1, tasks: { note: (_p, ctx) => void runs.push(ctx.job.id) } });
    try {
      const [job] = await enqueueMany(pool, [{ task: 'note' }]);
      expect((await w.worker.runOnce()).claimed).toBe(1);
      await waitFor(() => w.worker.inFlight === 0, 'the job to end');
      gate.hold('settleAndClaim');
      const settling = w.worker.runOnce();
      (await gate.nextHeld()).drop();
      await expect(settling).rejects.toMatchObject({ code: 'ECONNRESET' });
      expect((await getJob(pool, job!.id))?.state).toBe('succeeded');
      // The resend, and its check against the history, are done when flush() returns.
      await w.worker.flush();
      expect(gate.calls.some((c) => c.operation === 'answerUnrecorded')).toBe(true);
      const lost = (await metrics.jobs.get()).values.filter((v) => v.labels.outcome === 'lost');
      expect(lost.reduce((n, v) => n + v.value, 0)).toBe(0);
      expect(runs).toEqual([job!.id]);
    } finally {
      await w.close();
    }
  });
});
