import type pg from 'pg';
import { describeError, isTransient } from './errors.ts';
import type { Logger } from './logger.ts';
import type { WorkerMetrics } from './metrics.ts';
import type { DeadlineClass } from './deadlines.ts';
import { withPoolClient } from './pool-client.ts';
import { withQueryDeadline } from './pool.ts';
import * as q from './sql/maintenance.ts';
import { setTransactionStatementTimeout } from './sql/session.ts';

/** Looks at the maintenance turn, fleet-wide, per interval, by processes that did not lead the last pass. */
const FOLLOWER_LOOKS_PER_INTERVAL = 4;

export interface MaintenanceOptions {
  /** A worker that has not heartbeated for this long is dead. */
  readonly leaseMs: number;
  /** Time between passes (each process jitters it by ±25%). */
  readonly intervalMs: number;
  /** Finished jobs older than this are deleted. */
  readonly retentionMs: number;
  /** Time between prunings of old history. Default one minute. */
  readonly pruneEveryMs?: number;
  /** Most rows one transaction expires or prunes, so each stays short. Default 5000. */
  readonly batchLimit?: number;
  /** Longest time one pass spends pruning, in chunks of batchLimit rows. Default half the interval. */
  readonly pruneBudgetMs?: number;
  /** Deadlines of each step (server and client); none when left out. */
  readonly deadline?: DeadlineClass;
  /**
   * How old a heartbeat must be before a lost presence lock counts as death (the fast path).
   * It must cover a worker's own lease (see presence), or a worker whose connection dropped
   * would lose its jobs while it still runs them (`livenessFor().lockLossMs`). Default: the
   * lease or 4 intervals, if less.
   */
  readonly lockLossMs?: number;
}


export interface MaintenanceDeps {
  readonly pool: pg.Pool;
  readonly logger: Logger;
  readonly metrics?: WorkerMetrics;
  /**
   * Called after a pass this process led (it held the maintenance lock), once its transaction
   * committed: work that one worker at a time should do, such as publishing the backlog.
   */
  readonly afterLeadingPass?: () => void;
}

/** What one pass did. */
export interface MaintenancePass {
  /** Another process held the maintenance lock, or had just run a pass, so this pass did nothing. */
  readonly skipped: boolean;
  /** Workers registered, as seen by this pass (0 when the pass failed before it looked). */
  readonly fleet?: number;
  readonly deadWorkers: string[];
  readonly requeued: string[];
  readonly failed: string[];
  readonly expired: number;
  readonly pruned: number;
}

/**
 * Maintenance that every worker process runs and one at a time performs: remove dead workers
 * and return their jobs, expire jobs past their deadline, refresh the hot table's statistics,
 * summarise the history's new block ranges, prune old history. Any live worker can do it, so
 * there is no single maintenance process to lose.
 */
export class Maintenance {
  private timer: NodeJS.Timeout | undefined;
  private lastPruneAt = 0;
  private lastPass: MaintenancePass | undefined;
  private current: Promise<unknown> | undefined;
  private stopped = false;

  constructor(
    private readonly deps: MaintenanceDeps,
    private readonly options: MaintenanceOptions,
  ) {}

  /**
   * One pass: each step in a short transaction of its own, under the maintenance lock, so one
   * step that keeps failing (a prune, an analyse) never holds back the rescue of dead workers.
   * When another process holds the lock at the first step, the pass is skipped.
   */
  async runOnce(): Promise<MaintenancePass> {
    const deadline = this.options.deadline;
    const limit = this.options.batchLimit ?? 5_000;
    const prune = Date.now() - this.lastPruneAt >= (this.options.pruneEveryMs ?? 60_000);
    return withPoolClient(this.deps.pool, async (pooled) => {
      const client = deadline ? withQueryDeadline(pooled, deadline.clientMs) : pooled;
      const step = async <T>(name: string, fn: () => Promise<T | undefined>, lock = true): Promise<{ led: boolean; value?: T }> => {
        try {
          await client.query('begin');
          if (deadline) await setTransactionStatementTimeout(client, deadline.statementMs);
          if (lock && !(await q.tryMaintenanceLock(client))) {
            await client.query('commit');
            return { led: false };
          }
          const value = await fn();
          await client.query('commit');
          return { led: value !== undefined || lock, value };
        } catch (error) {
          await client.query('rollback').catch(() => {});
          this.deps.metrics?.dbErrors.inc({ component: 'maintenance' });
          this.deps.logger.warn({ err: describeError(error), step: name }, 'maintenance step failed; the others go on');
          if (isTransient(error) && name === 'death') throw error;
          return { led: true };
        }
      };
      let fleet = 0;
      const death = await step('death', async () => {
        const turn = await q.claimMaintenancePass(client, this.dueMs());
        fleet = turn.fleet;
        if (!turn.lead) return undefined;
        const found = await q.deleteDeadWorkers(client, this.rules());
        return { ...found, ...(await q.rescueOrphans(client, found.dead)) };
      }, false);
      if (!death.led) return { skipped: true, fleet, deadWorkers: [], requeued: [], failed: [], expired: 0, pruned: 0 };
      const deadWorkers = death.value?.dead ?? [];
      let requeued = death.value?.requeued ?? [];
      let failed = death.value?.failed ?? [];
      if (death.value?.gap) this.deps.logger.warn('maintenance had not run for a while (database or fleet away): every lease starts again now');
      // Running jobs whose worker row is gone, whatever removed it.
      const orphans = await step('orphans', () => q.rescueOrphans(client, [], true));
      requeued = requeued.concat(orphans.value?.requeued ?? []);
      failed = failed.concat(orphans.value?.failed ?? []);
      const expired = (await step('expiry', () => q.expireJobs(client, limit))).value ?? 0;
      await step('analyse', () => q.analyzeIfStale(client));
      await step('summarise', () => q.summariseHistory(client));
      let pruned = 0;
      if (prune) {
        // Chunks of their own short transactions, until the history is down to the retention or
        // the pass's share of time is spent: a fleet finishing 20,000 jobs a second adds 1.2
        // million rows a minute, which one chunk a minute never kept up with.
        const until = Date.now() + (this.options.pruneBudgetMs ?? this.options.intervalMs / 2);
        let behind = false;
        for (;;) {
          const n = (await step('prune', () => q.pruneFinished(client, this.options.retentionMs, limit))).value;
          if (n === undefined) break;
          pruned += n;
          behind = n === limit;
          if (!behind || Date.now() >= until) break;
        }
        // Still behind: prune again at the next pass instead of a minute from now.
        this.lastPruneAt = behind ? 0 : Date.now();
      }
      const pass = { skipped: false, fleet, deadWorkers, requeued, failed, expired, pruned };
      this.report(pass);
      return pass;
    });
  }

  /** A pass is due once the last one, by any process, is this old: about one pass per interval fleet-wide. */
  private dueMs(): number {
    return this.options.intervalMs * 0.7;
  }

    private rules(): q.DeathRules {
    const { leaseMs, intervalMs } = this.options;
    return {
      leaseMs,
      lockLossMs: this.options.lockLossMs ?? Math.min(leaseMs, 4 * intervalMs),
      // Passes come every interval, jittered by a quarter, from whichever worker leads.
      passGapMs: Math.max(2 * intervalMs, 2_000),
    };
  }

  /** Run passes on a timer until stop(). */
  start(): void {
    const schedule = () => {
      if (this.stopped) return;
      // A process that just led looks again after an interval; the others space their looks by
      // the fleet's size, so the whole fleet makes about FOLLOWER_LOOKS_PER_INTERVAL of them per
      // interval: a dead leader is replaced within a fraction of an interval, and a thousand
      // workers do not spend a thousand transactions a second finding the pass taken.
      const spread = this.lastPass?.skipped ? Math.max(1, (this.lastPass.fleet ?? 1) / FOLLOWER_LOOKS_PER_INTERVAL) : 1;
      const jittered = this.options.intervalMs * spread * (spread > 1 ? 0.5 + Math.random() : 0.75 + Math.random() / 2);
      this.timer = setTimeout(() => {
        this.current = this.runOnce()
          .then((pass) => {
            this.lastPass = pass;
            if (!pass.skipped) this.deps.afterLeadingPass?.();
          })
          .catch((error) => {
            this.deps.metrics?.dbErrors.inc({ component: 'maintenance' });
            this.deps.logger.warn({ err: describeError(error) }, 'maintenance pass failed');
          })
          .finally(schedule);
      }, jittered);
    };
    schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.current;
  }

  private report(pass: MaintenancePass): void {
    const { logger, metrics } = this.deps;
    if (pass.deadWorkers.length > 0) {
      metrics?.deadWorkers.inc(pass.deadWorkers.length);
      logger.warn({ workers: pass.deadWorkers }, 'dead workers removed');
    }
    if (pass.requeued.length > 0 || pass.failed.length > 0) {
      metrics?.rescued.inc({ outcome: 'requeued' }, pass.requeued.length);
      metrics?.rescued.inc({ outcome: 'failed' }, pass.failed.length);
      logger.warn({ requeued: pass.requeued, failed: pass.failed }, 'jobs of dead workers recovered');
    }
    if (pass.expired > 0) logger.info({ expired: pass.expired }, 'expired jobs');
    if (pass.pruned > 0) logger.info({ pruned: pass.pruned }, 'pruned finished jobs');
  }
}
