import type { Snapshot, WorkerRow } from '../worker/admin.ts';
import { duration, fmt } from './format.ts';

/** The managed instance group as the Compute API reports it, or why it could not be read. */
export interface MigState {
  name: string;
  region: string;
  /** Instances the group is asked to run (the autoscaler sets it). */
  targetSize: number | null;
  /** What the autoscaler would set now; null when it has no recommendation (or no autoscaler). */
  recommendedSize: number | null;
  /** Instances by their current action/status, e.g. { NONE: 3, CREATING: 1 }. */
  instances: Record<string, number>;
  /** The autoscaler's CPU target (0..1), when there is an autoscaler. */
  cpuTarget: number | null;
  /** Set when the group could not be read; the other fields are then empty. */
  error?: string;
}

/** What observe prints and records per sample (one NDJSON line each with --record). */
export interface Observation {
  at: string;
  counts: Snapshot['counts'];
  workers: number;
  /** Per second over the last minute. */
  rates: { enqueuedPerSecond: number; finishedPerSecond: number };
  /**
   * Counters that only grow, for rates between two samples: jobs ever enqueued (the highest
   * id) and jobs that have reached a final state (see Snapshot.endedTotal).
   */
  totals: { enqueued: number; ended: number };
  /** Counts estimated from the table statistics (too many rows to count on every sample). */
  estimated?: Snapshot['estimated'];
  oldestQueuedSeconds: number;
  latency: Snapshot['latency'];
  runTime: Snapshot['runTime'];
  /** Workers' host CPU (0..1): their average, and the autoscaler's target when known. */
  cpu: { average: number | null; target: number | null };
  workerList: { id: string; host: string; pid: number; cpu: number | null; jobsInFlight: number; concurrency: number }[];
  /** The deployed group, when one is named. */
  mig?: MigState;
}

/** Combine a snapshot, the live workers and (when deployed) the group into one sample. */
export function observation(s: Snapshot, workers: WorkerRow[], mig?: MigState): Observation {
  const cpus = workers.map((w) => w.cpu).filter((c): c is number => c !== null);
  const c = s.counts;
  return {
    at: s.at.toISOString(),
    counts: s.counts,
    workers: workers.length,
    rates: {
      enqueuedPerSecond: Number((s.enqueuedLastMinute / 60).toFixed(2)),
      finishedPerSecond: Number((s.finishedLastMinute / 60).toFixed(2)),
    },
    totals: { enqueued: Number(s.lastJobId), ended: s.endedTotal },
    ...(s.estimated.length > 0 ? { estimated: s.estimated } : {}),
    oldestQueuedSeconds: Number(s.oldestQueuedSeconds.toFixed(3)),
    latency: s.latency,
    runTime: s.runTime,
    cpu: {
      average: cpus.length > 0 ? Number((cpus.reduce((a, b) => a + b, 0) / cpus.length).toFixed(3)) : null,
      target: mig?.cpuTarget ?? null,
    },
    workerList: workers.map((w) => ({
      id: w.id,
      host: w.host,
      pid: w.pid,
      cpu: w.cpu,
      jobsInFlight: w.jobsInFlight,
      concurrency: w.concurrency,
    })),
    ...(mig ? { mig } : {}),
  };
}

/**
 * The sample with its last-minute rates taken from the growth of the counters since the oldest
 * of `earlier` samples within the last minute (at least 2 s back): exact at any rate, where the
 * snapshot's own last-minute counts stop at its exact-count limit. Without such a sample (the
 * first ones) the snapshot's figures stand.
 */
export function withCounterRates(o: Observation, earlier: readonly Observation[]): Observation {
  const t = Date.parse(o.at);
  const base = earlier.find((e) => t - Date.parse(e.at) <= 60_000 && t - Date.parse(e.at) >= 2_000);
  if (!base || o.totals.enqueued < base.totals.enqueued || o.totals.ended < base.totals.ended) return o;
  const seconds = (t - Date.parse(base.at)) / 1000;
  return {
    ...o,
    rates: {
      enqueuedPerSecond: Number(((o.totals.enqueued - base.totals.enqueued) / seconds).toFixed(2)),
      finishedPerSecond: Number(((o.totals.ended - base.totals.ended) / seconds).toFixed(2)),
    },
  };
}

const cut = (line: string, width: number) => (line.length > width ? `${line.slice(0, Math.max(0, width - 1))}…` : line);

/** The terminal view, every line fitted to `width` so a narrow terminal truncates instead of wrapping. */
export function renderView(o: Observation, width: number, extra: string[] = []): string[] {
  const c = o.counts;
  // An estimate is marked: beyond EXACT_COUNT_LIMIT rows a count comes from the statistics.
  const queued = `${o.estimated?.includes('queued') ? '~' : ''}${fmt(c.queued)}`;
  const done = (n: number) => `${o.estimated?.includes('history') ? '~' : ''}${fmt(n)}`;
  const lines = [
    `queued ${queued}  running ${fmt(c.running)}  succeeded ${done(c.succeeded)}  failed ${done(c.failed)}  expired ${done(c.expired)}  cancelled ${done(c.cancelled)}`,
    `last minute: enqueued ${o.rates.enqueuedPerSecond}/s  done ${o.rates.finishedPerSecond}/s  oldest waiting ${duration(o.oldestQueuedSeconds)}`,
    `wait to start p50 ${duration(o.latency.p50)}  p95 ${duration(o.latency.p95)}   run time p50 ${duration(o.runTime.p50)}  p95 ${duration(o.runTime.p95)}`,
    `workers ${o.workers}`,
    ...o.workerList.map((w) => {
      const cpu = w.cpu === null ? '  - ' : `${String(Math.round(w.cpu * 100)).padStart(3)}%`;
      return `  #${w.id.padEnd(5)} ${w.host.slice(0, 24).padEnd(24)} pid ${String(w.pid).padEnd(7)} cpu ${cpu}  jobs ${w.jobsInFlight}/${w.concurrency}`;
    }),
    ...extra,
  ];
  return lines.map((l) => cut(l, Math.max(10, width)));
}
