/**
 * An in-memory stand-in for the loop's database operations, for fast tests of the loop's own
 * logic (prefetch sizing, pipelining, stop, backoff). The queue's semantics are tested against
 * real Postgres elsewhere; this fake only hands out jobs and records what the loop sent.
 */
import type { LateOutcome, LoopDatabase, ReclaimResult, ReconcileResult, RunRef, Succeeded } from '../../worker/loop/database.ts';
import type { ClaimedJob, Delivery } from '../../worker/types.ts';

export interface FakeJob {
  id: string;
  delivery?: Delivery;
  task?: string;
  payload?: unknown;
  /** The claim time on the database's clock (default: now). */
  startedAt?: Date;
  expiresAt?: Date;
  payloadBytes?: number;
}

export class FakeDatabase implements LoopDatabase {
  private queue: ClaimedJob[] = [];
  private nextId = 1;
  /** A job whose result the "server" refuses: any settle carrying it fails, as Postgres would. */
  refuse: string | undefined;
  /** Settles carrying more successes than this run out of time (statement_timeout), as a slow server's would. */
  timeoutAbove = Infinity;
  /** Errors to throw from the next settleAndClaim calls, in order. */
  readonly failNext: unknown[] = [];
  readonly claims: { limit: number; settled: number; at: number }[] = [];
  readonly succeeded: Succeeded[] = [];
  readonly retried: string[] = [];
  readonly finished: { id: string; state: string; error: string | null }[] = [];
  readonly handedBack: string[] = [];
  /** Claims in flight now, and the most there ever were at once. */
  inFlight = 0;
  maxInFlight = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  add(count: number, job: Omit<FakeJob, 'id'> = {}): string[] {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = String(this.nextId++);
      ids.push(id);
      const at = new Date();
      this.queue.push({
        id,
        queue: 'default',
        task: job.task ?? 'noop',
        payload: job.payload ?? {},
        priority: 0,
        attempt: 1,
        maxAttempts: job.delivery === 'at_most_once' ? 1 : 5,
        delivery: job.delivery ?? 'at_least_once',
        createdAt: at,
        runAfter: at,
        startedAt: job.startedAt ?? at,
        expiresAt: job.expiresAt ?? null,
        payloadBytes: job.payloadBytes ?? 2,
        claimSeq: 0,
        token: '',
      });
    }
    return ids;
  }

  get queued(): number {
    return this.queue.length;
  }

  async settleAndClaim(workerId: string, claimSeq: number, succeeded: Succeeded[], limit: number) {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((resolve) => setImmediate(resolve));
      this.claims.push({ limit, settled: succeeded.length, at: this.now() });
      const failure = this.failNext.shift();
      if (failure !== undefined) throw failure;
      if (succeeded.length > this.timeoutAbove) {
        throw Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' });
      }
      if (succeeded.some((s) => s.id === this.refuse)) {
        throw Object.assign(new Error('unsupported Unicode escape sequence'), { code: '22P05' });
      }
      this.succeeded.push(...succeeded);
      const claimed = this.queue.splice(0, limit).map((j) => ({ ...j, claimSeq, token: `${workerId}:${claimSeq}` }));
      return { settled: succeeded.map((s) => s.id), claimed };
    } finally {
      this.inFlight--;
    }
  }

  async retry(_workerId: string, ref: RunRef): Promise<'recorded'> {
    this.retried.push(ref.id);
    return 'recorded';
  }

  async finish(_workerId: string, finished: { id: string; state: string; error: string | null }[]): Promise<string[]> {
    this.finished.push(...finished);
    return finished.map((f) => f.id);
  }

  async handBack(_workerId: string, started: RunRef[], notStarted: RunRef[] = []): Promise<string[]> {
    const ids = [...started, ...notStarted].map((r) => r.id);
    this.handedBack.push(...ids);
    return ids;
  }

  async reconcile(): Promise<ReconcileResult> {
    return { released: [], requeued: [], lost: [], cancelled: [] };
  }

  async reclaimRuns(): Promise<ReclaimResult> {
    return { taken: [], elsewhere: [], gone: [] };
  }

  async setProgress(): Promise<boolean> {
    return true;
  }

  async answerUnrecorded(_workerId: string, outcomes: LateOutcome[]): Promise<Map<string, 'already'>> {
    const recorded = new Set(this.succeeded.map((s) => s.id));
    return new Map(outcomes.filter((o) => recorded.has(o.id)).map((o) => [o.id, 'already' as const]));
  }
}
