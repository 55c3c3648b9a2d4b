/**
 * Enqueues the chaos mix at a steady pace through the proxy, so that every fault meets work in
 * flight. Each job has an idempotency key, so a batch whose reply was lost is sent again without
 * doubling anything; the feeder keeps sending until the database acknowledges it.
 */
import pg from 'pg';
import { isTransient } from '../worker/errors.ts';
import { enqueueMany } from '../worker/index.ts';
import type { JobSpec } from '../worker/types.ts';
import { planJob, seeded, type Design } from './mix.ts';

export interface FedJob {
  readonly n: number;
  readonly design: Design;
  readonly delivery: 'at_least_once' | 'at_most_once';
  readonly expiresAt?: Date;
  /** When the database acknowledged its enqueue. */
  ackedAt?: number;
}

export class Feeder {
  readonly jobs = new Map<number, FedJob>();
  private next = 1;
  private readonly pool: pg.Pool;
  private readonly random: () => number;
  private readonly reasons = new Set<string>();
  private paused = false;
  private sending: Promise<void> = Promise.resolve();

  constructor(url: string, seed: number) {
    this.pool = new pg.Pool({ connectionString: url, max: 2, application_name: 'chaos-feeder', connectionTimeoutMillis: 5_000, query_timeout: 10_000 });
    this.pool.on('error', () => {});
    this.random = seeded(seed);
  }

  /**
   * Enqueue `total` mixed jobs evenly over `durationMs`, then resolve. Once `done()` says the
   * faults are over, what is left goes at once.
   */
  async feed(total: number, durationMs: number, done: () => boolean): Promise<void> {
    const started = Date.now();
    while (this.next <= total) {
      const due = done() ? total : Math.min(total, Math.ceil((total * (Date.now() - started + 500)) / durationMs));
      const specs: JobSpec[] = [];
      while (this.next <= due && specs.length < 500) {
        const planned = planJob(this.next, this.random, Date.now());
        this.jobs.set(this.next, { n: this.next, design: planned.design, delivery: planned.spec.delivery ?? 'at_least_once', expiresAt: planned.spec.expiresAt });
        specs.push(planned.spec);
        this.next++;
      }
      if (specs.length > 0) {
        this.sending = this.send(specs);
        await this.sending;
      }
      while (this.paused && !done()) await new Promise((resolve) => setTimeout(resolve, 50));
      if (!done()) await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  /** Stop enqueueing (once the batch on its way is acknowledged) until resume(). */
  async pause(): Promise<void> {
    this.paused = true;
    await this.sending;
  }

  resume(): void {
    this.paused = false;
  }

  /** Enqueue extra jobs a fault needs (kept in the same books), acknowledged before it resolves. */
  async extra(make: (n: number) => { spec: JobSpec; design: Design }, count: number): Promise<number[]> {
    const specs: JobSpec[] = [];
    const ns: number[] = [];
    for (let i = 0; i < count; i++) {
      const n = 1_000_000 + this.jobs.size + 1;
      const { spec, design } = make(n);
      this.jobs.set(n, { n, design, delivery: spec.delivery ?? 'at_least_once' });
      specs.push(spec);
      ns.push(n);
    }
    await this.send(specs);
    return ns;
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => {});
  }

  private async send(specs: JobSpec[]): Promise<void> {
    for (let failures = 0; ; failures++) {
      try {
        await enqueueMany(this.pool, specs);
        const now = Date.now();
        for (const s of specs) this.jobs.get(numberOf(s))!.ackedAt = now;
        return;
      } catch (error) {
        if (!isTransient(error)) throw error;
        // Each distinct reason once: an outage repeats the same one many times.
        const reason = error instanceof Error ? error.message : String(error);
        if (!this.reasons.has(reason)) {
          this.reasons.add(reason);
          console.log(`chaos feeder: enqueue failed, retrying: ${reason}`);
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(2_000, 100 * 2 ** failures)));
      }
    }
  }
}

function numberOf(spec: JobSpec): number {
  return (spec.payload as { n: number }).n;
}
