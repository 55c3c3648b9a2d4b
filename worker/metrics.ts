import client from 'prom-client';

/** The worker's Prometheus metrics, on a registry of their own. */
export class WorkerMetrics {
  readonly registry = new client.Registry();

  /** Runs ended, by task and outcome (succeeded, failed, retried, cancelled, handed_back, lost). */
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

  constructor() {
    // Recoveries are rare: show them as 0 from the start so a dashboard can rate() them.
    for (const outcome of ['requeued', 'failed'] as const) this.rescued.labels({ outcome }).inc(0);
    this.deadWorkers.inc(0);
    client.collectDefaultMetrics({ register: this.registry, prefix: 'pgq_process_' });
  }
}

/** Add a queue-depth gauge read from the database at each scrape. */
export function watchQueueDepth(metrics: WorkerMetrics, depth: () => Promise<{ queue: string; due: number; scheduled: number }[]>): void {
  new client.Gauge({
    name: 'pgq_queue_depth',
    help: 'Queued jobs per queue: due now, or scheduled for later (retries, run-after)',
    labelNames: ['queue', 'when'] as const,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      try {
        for (const row of await depth()) {
          this.set({ queue: row.queue, when: 'due' }, row.due);
          this.set({ queue: row.queue, when: 'scheduled' }, row.scheduled);
        }
      } catch {
        // A scrape during a database outage shows no depth rather than failing the whole page.
      }
    },
  });
}
