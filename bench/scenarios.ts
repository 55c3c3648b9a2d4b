/**
 * The scenarios, each written once against the QueueSystem interface. Every function gets a
 * fresh database of its own, measures one repetition, checks that each job was handled exactly
 * once and nothing was left, and returns its figures with the problems it found.
 */
import { memoryOf, sleep, waitFor, type WorkerChild } from './lib/proc.ts';
import { nowMs, percentile } from './lib/stats.ts';
import type { Db, QueueSystem } from './systems/types.ts';
import type { WorkerReport } from './workers/protocol.ts';

/** A database made for one repetition, with a connection for the runner's own checks. */
export interface RepDb {
  url: string;
  db: Db;
  /** CHECKPOINT now, so a checkpoint's write burst does not land inside a measurement. */
  checkpoint(): Promise<void>;
}

/** One repetition's figures (by figure id) and the sanity problems it found. */
export interface RepResult {
  figures: Record<string, number>;
  /** Figures whose value is a cap that was hit, not a measurement. */
  capped?: string[];
  problems: string[];
  /** The Node versions the worker processes reported running on. */
  workerNodes?: string[];
}

/**
 * Enqueues one job per call from `callers` concurrent callers sharing one client; with
 * `otherPg`, the client's pool comes from another copy of node-postgres than the system's.
 */
export async function enqueueSingle(sys: QueueSystem, rep: RepDb, jobs: number, callers: number, otherPg = false): Promise<RepResult> {
  const open = otherPg ? sys.enqueuerOtherPg : sys.enqueuer;
  if (!open) throw new Error(`${sys.name} has no enqueuer for a pool from another copy of pg`);
  const enq = await open.call(sys, rep.url, callers);
  const figure = otherPg ? 'enqueue-single-other-pg' : 'enqueue-single';
  let next = 0;
  const start = performance.now();
  try {
    await Promise.all(
      Array.from({ length: callers }, async () => {
        while (next < jobs) await enq.one({ n: next++ });
      }),
    );
  } finally {
    await enq.close();
  }
  const seconds = (performance.now() - start) / 1000;
  const waiting = await sys.countWaiting(rep.db);
  return { figures: { [figure]: jobs / seconds }, problems: waiting === jobs ? [] : [`${waiting} jobs waiting, expected ${jobs}`] };
}

/** Enqueues `jobs` in calls of `batch` jobs each, one after another. */
export async function enqueueBulk(sys: QueueSystem, rep: RepDb, jobs: number, batch: number): Promise<RepResult> {
  const enq = await sys.enqueuer(rep.url, 2);
  const start = performance.now();
  try {
    for (let done = 0; done < jobs; done += batch) {
      const n = Math.min(batch, jobs - done);
      await enq.many(Array.from({ length: n }, (_, i) => ({ n: done + i })));
    }
  } finally {
    await enq.close();
  }
  const seconds = (performance.now() - start) / 1000;
  const waiting = await sys.countWaiting(rep.db);
  return { figures: { 'enqueue-bulk': jobs / seconds }, problems: waiting === jobs ? [] : [`${waiting} jobs waiting, expected ${jobs}`] };
}

/** Problems with what the workers say they handled, against the `jobs` expected. */
function checkHandled(reports: WorkerReport[], jobs: number): string[] {
  const all = reports.flatMap((r) => r.ids);
  const distinct = new Set(all).size;
  const problems: string[] = [];
  if (all.length !== distinct) problems.push(`${all.length - distinct} jobs were handled more than once`);
  if (distinct !== jobs) problems.push(`${distinct} distinct jobs handled, expected ${jobs}`);
  return problems;
}

/** Wait until the workers together handled `jobs`, failing early if one of them dies. */
async function waitHandled(workers: WorkerChild[], jobs: number, timeoutMs: number): Promise<void> {
  await waitFor(
    () => {
      const dead = workers.find((w) => !w.alive);
      if (dead) throw new Error(`${dead.label} exited mid-run:\n${dead.tail()}`);
      return workers.reduce((sum, w) => sum + w.handled, 0) >= jobs;
    },
    `${jobs} jobs to be handled`,
    timeoutMs,
    10,
  );
}

/**
 * Pre-fill `jobs` no-op jobs, then start `processes` worker processes and time the drain from
 * the first handler start (so process start-up is not counted) until the database holds no
 * waiting or running job (so completions must be recorded, not just handlers run).
 */
export async function drain(sys: QueueSystem, rep: RepDb, jobs: number, processes: number, figure: string): Promise<RepResult> {
  const enq = await sys.enqueuer(rep.url, 2);
  try {
    for (let done = 0; done < jobs; done += 5_000) {
      const n = Math.min(5_000, jobs - done);
      await enq.many(Array.from({ length: n }, (_, i) => ({ n: done + i })));
    }
  } finally {
    await enq.close();
  }
  await rep.checkpoint();
  const workers = Array.from({ length: processes }, (_, i) => sys.startWorker(rep.url, 'tuned', `${sys.name} worker ${i + 1}`));
  try {
    // Start polling the database near the end only: the drained check itself costs the server
    // something, and it must not slow the system it is timing.
    await waitHandled(workers, Math.floor(jobs * 0.95), 600_000);
    await waitFor(() => sys.drained(rep.db), 'the queue to be drained', 120_000, 10);
    const end = nowMs();
    const reports = await Promise.all(workers.map((w) => w.report()));
    const peakMb = memoryOf(workers[0]!.pid)?.peakMb ?? Number.NaN;
    const starts = reports.map((r) => r.firstStartAt).filter((t): t is number => t !== null);
    const seconds = (end - Math.min(...starts)) / 1000;
    await Promise.all(workers.map((w) => w.stop()));
    const problems = [...checkHandled(reports, jobs), ...(await sys.verifyDrained(rep.db, jobs))];
    const figures: Record<string, number> = { [figure]: jobs / seconds };
    if (processes === 1) figures['memory-drain'] = peakMb;
    return { figures, problems, workerNodes: reports.map((r) => r.node) };
  } finally {
    await Promise.all(workers.map((w) => w.kill()));
  }
}

/** Unmeasured jobs run through the latency scenario first. */
const WARM_UP_JOBS = 10;

/**
 * One worker, warmed up by a few unmeasured jobs (so the enqueuer's connection set-up and the
 * first calls' compilation are not in the figures), then idle for 2 s (its resident memory is
 * read then); then `jobs` jobs enqueued one call each over one connection, on a fixed schedule
 * of `rate` per second (a slow call does not delay when the next is sent). Each job carries its
 * enqueue time; the handler takes the difference at its start.
 */
export async function latency(sys: QueueSystem, rep: RepDb, jobs: number, rate: number): Promise<RepResult> {
  const worker = sys.startWorker(rep.url, 'tuned', `${sys.name} worker`);
  try {
    await sys.waitReady(rep.db, worker, 60_000);
    const enq = await sys.enqueuer(rep.url, 1);
    for (let i = 0; i < WARM_UP_JOBS; i++) await enq.one({ n: -1 - i });
    await waitHandled([worker], WARM_UP_JOBS, 30_000);
    await sleep(2_000);
    const idleMb = memoryOf(worker.pid)?.rssMb ?? Number.NaN;
    const calls: Promise<void>[] = [];
    const failures: unknown[] = [];
    try {
      const start = performance.now() + 20;
      for (let i = 0; i < jobs; i++) {
        const due = start + (i * 1000) / rate;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        // Caught at once: a call that fails while later ones are still being scheduled must not
        // become an unhandled rejection.
        calls.push(enq.one({ n: i, t: nowMs() }).catch((error: unknown) => void failures.push(error)));
      }
      await Promise.all(calls);
    } finally {
      await enq.close();
    }
    if (failures.length > 0) throw new Error(`${failures.length} enqueue calls failed, the first: ${String(failures[0])}`);
    await waitHandled([worker], WARM_UP_JOBS + jobs, 60_000);
    await waitFor(() => sys.drained(rep.db), 'the queue to be drained', 60_000);
    const report = await worker.report();
    await worker.stop();
    const sorted = [...report.latencies].sort((a, b) => a - b);
    const problems = [...checkHandled([report], WARM_UP_JOBS + jobs), ...(await sys.verifyDrained(rep.db, WARM_UP_JOBS + jobs))];
    if (sorted.length !== jobs) problems.push(`${sorted.length} latencies recorded, expected ${jobs}`);
    return {
      figures: {
        'latency-p50': percentile(sorted, 50),
        'latency-p95': percentile(sorted, 95),
        'latency-p99': percentile(sorted, 99),
        'latency-max': sorted[sorted.length - 1] ?? Number.NaN,
        'memory-idle': idleMb,
      },
      problems,
      workerNodes: [report.node],
    };
  } finally {
    await worker.kill();
  }
}

/**
 * Worker A (default settings) starts a long job; worker B (default settings) is up and idle;
 * A is SIGKILLed. The figure is the time from the kill to B's handler starting the job, or the
 * cap when B never does within it.
 */
export async function crash(sys: QueueSystem, rep: RepDb, capSeconds: number): Promise<RepResult> {
  const a = sys.startWorker(rep.url, 'default', `${sys.name} worker A`);
  let b: WorkerChild | undefined;
  try {
    await sys.waitReady(rep.db, a, 60_000);
    const enq = await sys.enqueuer(rep.url, 1);
    try {
      await enq.one({ hold: 600_000 });
    } finally {
      await enq.close();
    }
    await a.waitForMessage((m) => (m.type === 'started' ? m : undefined), 30_000, 'start of the long job');
    b = sys.startWorker(rep.url, 'default', `${sys.name} worker B`);
    await sys.waitReady(rep.db, b, 60_000);
    // Let B settle into its idle loop, as a standby worker would be.
    await sleep(1_000);
    // Listen before the kill: the rerun can start within milliseconds of it.
    const rerun = b.waitForMessage((m) => (m.type === 'started' ? m : undefined), capSeconds * 1000, 'rerun of the job');
    // Awaited below; this only keeps a rejection during the kill from counting as unhandled.
    rerun.catch(() => {});
    const killedAt = nowMs();
    await a.kill();
    try {
      const started = await rerun;
      return { figures: { crash: (started.at - killedAt) / 1000 }, problems: [] };
    } catch (error) {
      if (!b.alive) throw error;
      return { figures: { crash: capSeconds }, capped: ['crash'], problems: [] };
    }
  } finally {
    await a.kill();
    await b?.kill();
  }
}
