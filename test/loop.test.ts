/**
 * The loop's own logic against a fake database and a manual clock: fast, and exact about timing
 * and order. What the statements do is tested against real Postgres in queue.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../worker/logger.ts';
import { PrefetchSizer } from '../worker/loop/prefetch.ts';
import type { WorkerOptions } from '../worker/loop/types.ts';
import { Worker } from '../worker/loop/worker.ts';
import type { TaskHandler } from '../worker/tasks/types.ts';
import type { ThreadPool } from '../worker/thread-pool.ts';
import { FakeDatabase } from './support/fake-db.ts';
import { ManualClock, settle } from './support/manual-clock.ts';
import { waitFor } from './harness.ts';

const presence = { workerId: '1', ready: true, whenReady: () => Promise.resolve() };
// No task here runs on threads.
const threads = {} as ThreadPool;

function loop(db: FakeDatabase, options: Partial<WorkerOptions> = {}, tasks: Record<string, TaskHandler> = {}, clock?: ManualClock) {
  return new Worker(
    { db, presence, tasks: new Map(Object.entries({ noop: () => null, ...tasks })), threads, logger: silentLogger, clock },
    { concurrency: 4, batchSize: 1000, queues: null, pollMs: 1_000, retryBaseMs: 1_000, retryMaxMs: 60_000, ...options },
  );
}

describe('prefetch sizing', () => {
  const sizer = (options: Partial<ConstructorParameters<typeof PrefetchSizer>[0]> = {}) =>
    new PrefetchSizer({ concurrency: 16, horizonMs: 50, max: 2000, maxBytes: 1_000_000, ...options });
  const jobs = (n: number, task = 'short', payloadBytes = 10) => Array.from({ length: n }, () => ({ task, payloadBytes }));

  it('holds nothing until what claims bring has run here', () => {
    const s = sizer();
    expect(s.target()).toBe(0);
    s.arrived(jobs(16));
    expect(s.target()).toBe(0);
    s.observe('short', 10);
    expect(s.target()).toBe(80);
  });

  it('holds about the horizon of work at the run time of what claims bring, capped', () => {
    const s = sizer();
    s.observe('short', 10);
    s.arrived(jobs(1));
    expect(s.target()).toBe(80); // 16 slots x 50 ms / 10 ms
    const fast = sizer();
    fast.observe('short', 0.001);
    fast.arrived(jobs(1));
    expect(fast.target()).toBe(2000);
  });

  it('stops reaching ahead once claims bring long jobs, however short the last runs were', () => {
    const s = sizer();
    for (let i = 0; i < 100; i++) s.observe('short', 0.01);
    s.arrived(jobs(100));
    expect(s.target()).toBe(2000);
    s.observe('long', 5_000);
    s.arrived(jobs(30, 'long'));
    expect(s.target()).toBe(0);
    // Claims that bring short jobs again bring the reach back.
    for (let i = 0; i < 12; i++) s.arrived(jobs(16));
    expect(s.target()).toBeGreaterThan(100);
  });

  it('keeps the prefix within the work, the count and the bytes; never a long or unknown task', () => {
    const s = sizer({ concurrency: 2, max: 100, maxBytes: 1_000 });
    s.observe('short', 10);
    s.observe('long', 5_000);
    // 2 slots x 50 ms of work: ten 10 ms jobs.
    expect(s.admit(jobs(30))).toBe(10);
    expect(s.admit([...jobs(3), ...jobs(1, 'long'), ...jobs(3)])).toBe(3);
    expect(s.admit([...jobs(2), ...jobs(1, 'never seen')])).toBe(2);
    expect(s.admit(jobs(5, 'short', 300))).toBe(3);
    expect(sizer({ max: 4 }).admit(jobs(10, 'x'))).toBe(0);
    const many = sizer({ max: 4 });
    many.observe('tiny', 0.001);
    expect(many.admit(jobs(10, 'tiny'))).toBe(4);
  });

  it('after giving jobs back, reaches only as far as it kept, then doubles with every claim that fits', () => {
    const s = sizer();
    s.observe('short', 0.01);
    s.arrived(jobs(100));
    expect(s.target()).toBe(2000);
    s.observe('long', 5_000);
    expect(s.admit([...jobs(3), ...jobs(5, 'long')])).toBe(3);
    expect(s.target()).toBe(3);
    s.admit([]);
    expect(s.target()).toBe(6);
    for (let i = 0; i < 10; i++) s.admit([]);
    expect(s.target()).toBe(2000);
  });
});

describe('the claim loop', () => {
  it('keeps at most `pipeline` round trips in flight, and every job is recorded once', async () => {
    for (const pipeline of [1, 2]) {
      const db = new FakeDatabase();
      db.add(3_000);
      const w = loop(db, { pipeline, concurrency: 16 });
      const running = w.start();
      await waitFor(() => db.succeeded.length === 3_000, 'the drain');
      await w.stop(0);
      await running;
      expect(db.maxInFlight).toBe(pipeline);
      expect(new Set(db.succeeded.map((s) => s.id)).size).toBe(3_000);
    }
  });

  it('asks only for free slots until run times are known, then claims ahead', async () => {
    const db = new FakeDatabase();
    db.add(200);
    const w = loop(db, { concurrency: 4 });
    expect((await w.runOnce()).requested).toBe(4);
    await waitFor(() => w.inFlight === 0, 'the first jobs to end');
    expect(w.prefetchTarget()).toBeGreaterThan(0);
    expect((await w.runOnce()).requested).toBe(Math.min(1000, 4 + w.prefetchTarget()));
    await w.stop(0);
  });

  it('backs off exponentially after failed claims (200, 400, 800 ms), then claims as usual', async () => {
    const clock = new ManualClock();
    const db = new FakeDatabase(() => clock.now());
    db.add(1);
    const transient = () => Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
    db.failNext.push(transient(), transient(), transient());
    const w = loop(db, {}, {}, clock);
    const running = w.start();
    await waitFor(() => db.claims.length === 1, 'the first claim');
    await settle();
    await clock.advance(199);
    expect(db.claims.length).toBe(1);
    await clock.advance(1);
    await waitFor(() => db.claims.length === 2, 'the second claim');
    await settle();
    await clock.advance(400);
    await waitFor(() => db.claims.length === 3, 'the third claim');
    await settle();
    await clock.advance(800);
    await waitFor(() => db.claims.length >= 4, 'the fourth claim');
    expect(db.claims.slice(0, 4).map((c) => c.at)).toEqual([0, 200, 600, 1400]);
    await waitFor(() => db.succeeded.length === 1, 'the job to be recorded');
    await w.stop(0);
    await running;
  });
});

describe('a settle batch Postgres refuses', () => {
  it('is halved until the refused row is found; it fails, the others are recorded as they were', async () => {
    const db = new FakeDatabase();
    const ids = db.add(40);
    db.refuse = ids[17];
    const w = loop(db, { concurrency: 8 });
    const running = w.start();
    await waitFor(() => db.succeeded.length === 39 && db.finished.length === 1, 'every outcome to be recorded');
    await w.stop(0);
    await running;
    expect(db.finished[0]).toMatchObject({ id: ids[17], state: 'failed' });
    expect(db.finished[0]!.error).toMatch(/^result could not be stored: unsupported Unicode escape sequence/);
    expect(new Set(db.succeeded.map((s) => s.id))).toEqual(new Set(ids.filter((id) => id !== ids[17])));
  });
});

describe('settles are bounded', () => {
  /** `count` jobs that all end at the same moment, so their successes wait for one settle together. */
  async function endTogether(db: FakeDatabase, options: Partial<WorkerOptions>, count: number, result: unknown = null) {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    db.add(count, { task: 'together' });
    const w = loop(db, { concurrency: count, pipeline: 1, ...options }, { together: async () => { await gate; return result; } });
    const running = w.start();
    await waitFor(() => w.inFlight === count, 'every job to start');
    open();
    await waitFor(() => db.succeeded.length === count, 'every success to be recorded');
    await w.stop(0);
    await running;
  }

  it('a settle that runs out of time is halved until it fits, and nothing is lost', async () => {
    const db = new FakeDatabase();
    db.timeoutAbove = 10;
    await endTogether(db, {}, 64);
    const sizes = db.claims.map((c) => c.settled).filter((n) => n > 0);
    // 64 times out, then 32, then 16; 8 fits, and every later settle stays within what fitted.
    expect(sizes.slice(0, 4)).toEqual([64, 32, 16, 8]);
    expect(new Set(db.succeeded.map((s) => s.id)).size).toBe(64);
  });

  it('a settle carries at most maxSettleBytes of results', async () => {
    const db = new FakeDatabase();
    await endTogether(db, { maxSettleBytes: 1_000 }, 12, 'x'.repeat(300));
    const sizes = db.claims.map((c) => c.settled).filter((n) => n > 0);
    expect(Math.max(...sizes)).toBe(2);
    expect(db.succeeded).toHaveLength(12);
  });
});

/**
 * A one-slot loop whose prefetch has seen one quick run of `hold` (a job with payload
 * `{ quick: true }`), so its next claim reaches ahead.
 */
async function taught(db: FakeDatabase, clock: ManualClock, hold: TaskHandler): Promise<Worker> {
  const w = loop(db, { concurrency: 1 }, { hold }, clock);
  db.add(1, { task: 'hold', payload: { quick: true } });
  await w.runOnce();
  await waitFor(() => w.inFlight === 0, 'the first job');
  await w.flush();
  return w;
}

describe('the history clock', () => {
  it("a job's start is its claim time on the database clock plus its monotonic wait in the buffer, never the VM's clock", async () => {
    const clock = new ManualClock();
    const db = new FakeDatabase(() => clock.now());
    const gates: (() => void)[] = [];
    const hold: TaskHandler = (payload) => ((payload as { quick?: boolean }).quick ? null : new Promise<void>((resolve) => gates.push(resolve)));
    const w = await taught(db, clock, hold);
    const claimedAt = new Date('2026-01-01T00:00:00.000Z');
    const ids = db.add(3, { task: 'hold', startedAt: claimedAt });
    await w.runOnce();
    expect(w.inFlight).toBe(3);
    await clock.advance(500);
    gates.shift()!();
    await waitFor(() => gates.length === 1, 'the second job to start');
    await clock.advance(250);
    gates.shift()!();
    await waitFor(() => gates.length === 1, 'the third job to start');
    gates.shift()!();
    await waitFor(() => w.inFlight === 0, 'the jobs to end');
    await w.flush();
    const started = new Map(db.succeeded.map((s) => [s.id, s.startedAt.toISOString()]));
    expect(ids.map((id) => started.get(id))).toEqual(['2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.500Z', '2026-01-01T00:00:00.750Z']);
  });
});

describe('expiry in the buffer', () => {
  it('a buffered job whose expires_at passed while it waited for a slot is given back unstarted', async () => {
    const clock = new ManualClock();
    const db = new FakeDatabase(() => clock.now());
    const gates: (() => void)[] = [];
    const started: string[] = [];
    const hold: TaskHandler = (payload, ctx) => {
      if ((payload as { quick?: boolean }).quick) return null;
      started.push(ctx.job.id);
      return new Promise<void>((resolve) => gates.push(resolve));
    };
    const w = await taught(db, clock, hold);
    const claimedAt = new Date('2026-01-01T00:00:00.000Z');
    const [first] = db.add(1, { task: 'hold', startedAt: claimedAt });
    const [soon] = db.add(1, { task: 'hold', startedAt: claimedAt, expiresAt: new Date(claimedAt.getTime() + 300) });
    const [later] = db.add(1, { task: 'hold', startedAt: claimedAt, expiresAt: new Date(claimedAt.getTime() + 60_000) });
    await w.runOnce();
    expect(w.inFlight).toBe(3);
    await clock.advance(500);
    gates.shift()!();
    await waitFor(() => started.length === 2, 'the next job to start');
    expect(started).toEqual([first, later]);
    await waitFor(() => db.handedBack.includes(soon!), 'the expired job to be given back');
    gates.shift()!();
    await waitFor(() => w.inFlight === 0, 'the jobs to end');
  });
});

describe('stop', () => {
  it('hands back unstarted and at-least-once jobs, fails at-most-once ones, records what finished', async () => {
    const db = new FakeDatabase();
    const release: (() => void)[] = [];
    const hang: TaskHandler = (payload) => ((payload as { quick?: boolean }).quick ? null : new Promise<void>((resolve) => release.push(resolve)));
    const w = loop(db, { concurrency: 3 }, { hang });
    // Quick runs first: once the task is known to be short, the next claim takes jobs ahead.
    const quick = db.add(2, { task: 'hang', payload: { quick: true } });
    await w.runOnce();
    await waitFor(() => w.inFlight === 0, 'the quick jobs to end');
    const alo = db.add(2, { task: 'hang' });
    const amo = db.add(1, { task: 'hang', delivery: 'at_most_once' });
    const buffered = db.add(3, { task: 'hang' });
    await w.runOnce();
    expect(w.inFlight).toBe(6);
    await waitFor(() => release.length === 3, 'the hanging jobs to start');
    const result = await w.stop(0);
    // Only what ends during the stop counts as finished within the grace period.
    expect(result.finished).toBe(0);
    expect(new Set(result.handedBack)).toEqual(new Set([...buffered, ...alo]));
    expect(result.failed).toEqual(amo);
    expect(db.succeeded.map((s) => s.id).sort()).toEqual(quick.sort());
    expect(db.finished.map((f) => f.id)).toEqual(amo);
  });
});

describe('after a failover', () => {
  it('sends again the outcomes recorded just before the connection went, however long the promotion took', async () => {
    const clock = new ManualClock();
    const db = new FakeDatabase(() => clock.now());
    const ids = db.add(3);
    const w = loop(db, {}, {}, clock);
    await w.runOnce();
    await waitFor(() => w.inFlight === 0, 'the jobs to end');
    await w.runOnce();
    expect(db.succeeded.map((s) => s.id)).toEqual(ids);
    // The primary is gone; the promotion takes a minute, during which nothing is recorded.
    await clock.advance(60_000);
    w.failedOver();
    await settle();
    await w.flush();
    expect(db.succeeded.map((s) => s.id)).toEqual([...ids, ...ids]);
  });
});
