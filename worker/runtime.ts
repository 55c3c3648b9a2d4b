import fs from 'node:fs';
import os from 'node:os';
import pg from 'pg';
import { backoffMs } from './backoff.ts';
import { describeError, isTransient } from './errors.ts';
import type { WorkerConfig } from './config.ts';
import { startHealthServer, type HealthServer } from './health.ts';
import type { Logger } from './logger.ts';
import { loadMigrations, migrate, schemaIsCurrent } from './migrate.ts';
import { WorkerMetrics, watchQueueDepth } from './metrics.ts';
import { systemClock } from './clock.ts';
import { cpuSampler } from './cpu.ts';
import { LocalFaults } from './local-faults.ts';
import { deadlinesFor, livenessFor } from './deadlines.ts';
import { createWorkerPool } from './pool.ts';
import { Presence } from './presence.ts';
import { poolDatabase } from './loop/database.ts';
import type { StopResult } from './loop/types.ts';
import { Worker } from './loop/worker.ts';
import { Maintenance } from './maintenance.ts';
import { BacklogPublisher } from './monitoring/backlog-publisher.ts';
import { countDueJobs, queueDepth } from './sql/stats.ts';
import type { TaskRegistry } from './tasks/types.ts';
import { ThreadPool } from './thread-pool.ts';

/** A running worker: what its owner needs, not its parts. */
export interface WorkerRuntime {
  /** This worker's id in pgq.workers, once registered (undefined until then). */
  readonly workerId: string | undefined;
  /** Jobs running or claimed and waiting for a slot. */
  readonly inFlight: number;
  /** The port /healthz, /readyz and /metrics are served on; null when not served. */
  readonly healthPort: number | null;
  /**
   * Drain within `graceMs`, hand back the rest, close everything. Records are retried through a
   * database outage until `recordWithinMs` (default `graceMs`); the result lists any that never
   * got through.
   */
  stop(graceMs: number, recordWithinMs?: number): Promise<StopResult>;
}

function version(): string {
  if (process.env.WORKER_VERSION) return process.env.WORKER_VERSION;
  for (const p of ['../package.json', '../../package.json']) {
    try {
      return (JSON.parse(fs.readFileSync(new URL(p, import.meta.url), 'utf8')) as { version: string }).version;
    } catch {
      // try the next layout
    }
  }
  return 'unknown';
}

/**
 * Apply migrations, waiting out a database that is not up yet; a real migration error is thrown.
 * On a connection of its own: the pool's deadlines would cut a long migration short.
 */
async function migrateWhenReachable(connection: pg.ClientConfig, logger: Logger): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const client = new pg.Client({ ...connection, connectionTimeoutMillis: 10_000, application_name: `pgq-worker ${process.pid} migrate` });
    client.on('error', () => {});
    try {
      await client.connect();
      const result = await migrate(client, undefined, {
        onLockWait: (migration, retryInMs) => logger.warn({ migration, retryInMs }, 'migration could not get its table locks in time; retrying'),
      });
      if (result.applied.length > 0) logger.info({ applied: result.applied }, 'migrations applied');
      return;
    } catch (error) {
      if (!isTransient(error)) throw error;
      const pauseMs = backoffMs(attempt, { baseMs: 200, maxMs: 5_000 });
      logger.warn({ err: describeError(error), retryInMs: pauseMs }, 'database not reachable for migrations; retrying');
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
    } finally {
      await client.end().catch(() => {});
    }
  }
}

/**
 * Start a worker: health server first (so the process answers /healthz while the database is
 * still coming up), then migrations, presence, the loop and the rescuer.
 */
export async function startWorkerRuntime(
  config: WorkerConfig,
  tasks: TaskRegistry,
  logger: Logger,
  options: { serveHealth?: boolean } = {},
): Promise<WorkerRuntime> {
  const metrics = new WorkerMetrics(tasks.keys());
  const deadlines = deadlinesFor(config);
  const pool = createWorkerPool(config.connection, { max: config.poolSize, deadline: deadlines.run, logger });
  watchQueueDepth(metrics, () => queueDepth(pool));
  const threads = new ThreadPool(config.cpuThreads);
  let worker: Worker | undefined;
  let presence: Presence | undefined;
  const migrations = await loadMigrations();
  const healthLog = logger.child({ component: 'health' });
  const liveness = livenessFor(config);
  const heartbeatMs = liveness.heartbeatMs;
  const faults = new LocalFaults({ stallMs: config.healthStallMs, heartbeatMs, clock: systemClock, logger: healthLog });
  let loopCrashed = false;
  // The database's own text stays in the log (once per distinct error), never in a response.
  let lastReadyError: string | undefined;
  const health =
    options.serveHealth === false
      ? null
      : await startHealthServer(
          config.healthPort,
          {
            metrics,
            live: () => (loopCrashed ? 'the worker loop stopped' : faults.fault()),
            ready: async () => {
              if (!presence?.ready) return { ok: false, reason: 'worker not registered with the database (yet)' };
              try {
                if (!(await schemaIsCurrent(pool, migrations))) return { ok: false, reason: 'database schema is not current' };
                lastReadyError = undefined;
                return { ok: true };
              } catch (error) {
                const text = describeError(error);
                if (text !== lastReadyError) healthLog.warn({ err: text }, 'readiness check could not reach the database');
                lastReadyError = text;
                return { ok: false, reason: 'database not reachable' };
              }
            },
          },
          config.healthHost,
          (error) => healthLog.error({ err: describeError(error) }, 'health endpoint failed'),
        );
  if (config.migrate) await migrateWhenReachable(config.connection, logger.child({ component: 'migrate' }));

  const cpu = cpuSampler();
  presence = new Presence({
    connection: config.connection,
    host: os.hostname(),
    pid: process.pid,
    queues: config.queues,
    concurrency: config.concurrency,
    version: version(),
    heartbeatMs,
    deadline: deadlines.presence,
    logger: logger.child({ component: 'presence' }),
    inFlight: () => worker?.inFlight ?? 0,
    cpu,
    onNotify: (queue) => worker?.wake(queue),
    onCancel: (ids) => worker?.cancel(ids),
    onHeartbeat: () => {
      faults.heartbeatSucceeded();
      worker?.leaseRenewed();
    },
    onRevoked: (workerId) => worker?.abandon(workerId),
    onLeaseLapsed: () => worker?.leaseLapsed(),
    onFailover: () => worker?.failedOver(),
    liveness,
  });
  worker = new Worker(
    { db: poolDatabase(pool), presence, tasks, threads, logger: logger.child({ component: 'worker' }), metrics, statements: faults },
    {
      concurrency: config.concurrency,
      batchSize: config.batchSize,
      queues: config.queues,
      pollMs: config.pollMs,
      // One connection is never the claims': failure records, hand-backs and maintenance need it.
      pipeline: config.poolSize - 1,
      // A claim that failed on the client may still commit until its statement times out on
      // the server, or the server notices the broken connection — by then the lease has ended.
      failedClaimWindowMs: config.leaseMs + deadlines.run.clientMs,
      reconcileEveryMs: config.leaseMs,
      retryBaseMs: config.retryBaseMs,
      retryMaxMs: config.retryMaxMs,
    },
  );
  const backlog = config.backlogMetric
    ? new BacklogPublisher(config.backlogMetric, { countDue: () => countDueJobs(pool, config.queues) })
    : undefined;
  const backlogLog = logger.child({ component: 'backlog-metric' });
  const maintenance = new Maintenance(
    {
      pool,
      logger: logger.child({ component: 'maintenance' }),
      metrics,
      // Not awaited: a slow Monitoring call must never delay the next rescue.
      afterLeadingPass: backlog
        ? () => void backlog.publishIfDue().catch((error: unknown) => backlogLog.warn({ err: describeError(error) }, 'could not publish the backlog metric'))
        : undefined,
    },
    {
      leaseMs: config.leaseMs,
      intervalMs: config.rescueIntervalMs,
      retentionMs: config.retentionMs,
      deadline: deadlines.maintenance,
      lockLossMs: liveness.lockLossMs,
    },
  );
  void presence.start();
  const loop = worker.start().catch((error: unknown) => {
    loopCrashed = true;
    logger.fatal({ err: describeError(error) }, 'worker loop crashed');
  });
  maintenance.start();
  const w = worker;
  const p = presence;

  return {
    get workerId() {
      return p.workerId;
    },
    get inFlight() {
      return w.inFlight;
    },
    healthPort: health?.port ?? null,
    async stop(graceMs, recordWithinMs) {
      let result: StopResult = { finished: 0, handedBack: [], failed: [], unrecorded: [] };
      try {
        result = await w.stop(graceMs, recordWithinMs);
      } catch (error) {
        logger.error({ err: describeError(error) }, 'could not hand back jobs; maintenance returns them once this worker is gone');
        result = { ...result, unrecorded: w.heldIds() };
      }
      await loop;
      await maintenance.stop();
      await p.close();
      await threads.close();
      await pool.end().catch(() => {});
      await health?.close();
      return result;
    },
  };
}
