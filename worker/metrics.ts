import client from 'prom-client';

/** The label of a job whose task this worker does not know: job rows name tasks, and rows come from anyone. */
export const UNREGISTERED_TASK = 'unregistered';

/** The worker's Prometheus metrics, on a registry of their own. */
export class WorkerMetrics {
  readonly registry = new client.Registry();
  /** Task names that may become label values: the registered ones, so /metrics stays bounded. */
  private readonly knownTasks: ReadonlySet<string>;

  /** Runs ended, by task and outcome (succeeded, failed, retried, cancelled, handed_back, expired, lost). */
  readonly jobs = new client.Counter({
    name: 'pgq_jobs_total',
    help: 'Job runs ended by this process, by task and outcome',
    labelNames: ['task', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly duration = new client.Histogram({
    name: 'pgq_job_duration_seconds',
    help: 'Run time of jobs, from start to end of the handler',
    labelNames: ['task'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });

  readonly wait = new client.Histogram({
    name: 'pgq_job_wait_seconds',
    help: 'Time from a job being due (enqueued or retry time) to its start',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800],
    registers: [this.registry],
  });

  readonly inFlight = new client.Gauge({
    name: 'pgq_jobs_in_flight',
    help: 'Jobs this process is running',
    registers: [this.registry],
  });

  /** Jobs of dead workers returned by this process's rescuer, by what happened to them. */
  readonly rescued = new client.Counter({
    name: 'pgq_lease_recoveries_total',
    help: 'Running jobs of dead workers recovered by this process (requeued or failed)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly deadWorkers = new client.Counter({
    name: 'pgq_dead_workers_total',
    help: 'Workers this process found dead (lock gone or lease expired)',
    registers: [this.registry],
  });

  readonly dbErrors = new client.Counter({
    name: 'pgq_database_errors_total',
    help: 'Database errors met by the worker loop, by component',
    labelNames: ['component'] as const,
    registers: [this.registry],
  });

  constructor(tasks: Iterable<string> = []) {
    this.knownTasks = new Set([...tasks, 'unknown']);
    // Recoveries are rare: show them as 0 from the start so a dashboard can rate() them.
    for (const outcome of ['requeued', 'failed'] as const) this.rescued.labels({ outcome }).inc(0);
    this.deadWorkers.inc(0);
    client.collectDefaultMetrics({ register: this.registry, prefix: 'pgq_process_' });
  }

  /** Count `n` runs of `task` that ended with `outcome`. */
  jobEnded(task: string, outcome: string, n = 1): void {
    this.jobs.inc({ task: this.taskLabel(task), outcome }, n);
  }

  /** Observe one run's time. */
  jobRan(task: string, seconds: number): void {
    this.duration.observe({ task: this.taskLabel(task) }, seconds);
  }

  private taskLabel(task: string): string {
    return this.knownTasks.has(task) ? task : UNREGISTERED_TASK;
  }
}

export interface DepthRow {
  queue: string;
  due: number;
  scheduled: number;
}

/** Most queues shown by name in the depth gauge; the rest are summed under OTHER_QUEUES. */
export const MAX_DEPTH_QUEUES = 50;
export const OTHER_QUEUES = '(other)';

/**
 * Add a queue-depth gauge. The count is a GROUP BY over the hot table on the worker's small
 * pool, so it is cached for `maxAgeMs` and refreshed once however many scrapes come; a scrape
 * that would wait on a slow refresh shows the last figures instead. At most MAX_DEPTH_QUEUES
 * queues get a label of their own, the deepest ones.
 */
export function watchQueueDepth(
  metrics: WorkerMetrics,
  depth: () => Promise<DepthRow[]>,
  options: { maxAgeMs?: number; waitMs?: number; now?: () => number } = {},
): void {
  const maxAgeMs = options.maxAgeMs ?? 10_000;
  const waitMs = options.waitMs ?? 1_000;
  const now = options.now ?? (() => performance.now());
  let cached: { rows: DepthRow[]; at: number } | undefined;
  let refreshing: Promise<void> | undefined;
  const refresh = () =>
    (refreshing ??= depth()
      .then((rows) => {
        cached = { rows: bounded(rows), at: now() };
      })
      // A scrape during a database outage shows the last figures rather than failing the whole page.
      .catch(() => {})
      .finally(() => (refreshing = undefined)));
  new client.Gauge({
    name: 'pgq_queue_depth',
    help: 'Queued jobs per queue: due now, or scheduled for later (retries, run-after)',
    labelNames: ['queue', 'when'] as const,
    registers: [metrics.registry],
    async collect() {
      if (!cached || now() - cached.at >= maxAgeMs) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([refresh(), new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))]);
        clearTimeout(timer);
      }
      this.reset();
      for (const row of cached?.rows ?? []) {
        this.set({ queue: row.queue, when: 'due' }, row.due);
        this.set({ queue: row.queue, when: 'scheduled' }, row.scheduled);
      }
    },
  });
}

function bounded(rows: DepthRow[]): DepthRow[] {
  if (rows.length <= MAX_DEPTH_QUEUES) return rows;
  const deepest = [...rows].sort((a, b) => b.due + b.scheduled - (a.due + a.scheduled));
  const rest = deepest.slice(MAX_DEPTH_QUEUES - 1);
  const other = rest.reduce((sum, r) => ({ queue: OTHER_QUEUES, due: sum.due + r.due, scheduled: sum.scheduled + r.scheduled }), { queue: OTHER_QUEUES, due: 0, scheduled: 0 });
  return [...deepest.slice(0, MAX_DEPTH_QUEUES - 1), other];
}
