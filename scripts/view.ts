import type { Snapshot, WorkerRow } from '../worker/queries.ts';
import { duration, fmt } from './format.ts';

/** What observe prints and records per sample. */
export interface Observation {
  at: string;
  counts: Snapshot['counts'];
  workers: number;
  rates: { enqueuedPerSecond: number; finishedPerSecond: number };
  oldestQueuedSeconds: number;
  latency: Snapshot['latency'];
  runTime: Snapshot['runTime'];
  workerList: { id: string; host: string; pid: number; cpu: number | null; jobsInFlight: number; concurrency: number }[];
}

/** Combine a snapshot and the live workers. Rates are per second over the last minute. */
export function observation(s: Snapshot, workers: WorkerRow[]): Observation {
  return {
    at: s.at.toISOString(),
    counts: s.counts,
    workers: workers.length,
    rates: {
      enqueuedPerSecond: Number((s.enqueuedLastMinute / 60).toFixed(2)),
      finishedPerSecond: Number((s.finishedLastMinute / 60).toFixed(2)),
    },
    oldestQueuedSeconds: Number(s.oldestQueuedSeconds.toFixed(3)),
    latency: s.latency,
    runTime: s.runTime,
    workerList: workers.map((w) => ({
      id: w.id,
      host: w.host,
      pid: w.pid,
      cpu: w.cpu,
      jobsInFlight: w.jobsInFlight,
      concurrency: w.concurrency,
    })),
  };
}

const cut = (line: string, width: number) => (line.length > width ? `${line.slice(0, Math.max(0, width - 1))}…` : line);

/** The terminal view, every line fitted to `width` so a narrow terminal truncates instead of wrapping. */
export function renderView(o: Observation, width: number, extra: string[] = []): string[] {
  const c = o.counts;
  const lines = [
    `queued ${fmt(c.queued)}  running ${fmt(c.running)}  succeeded ${fmt(c.succeeded)}  failed ${fmt(c.failed)}  expired ${fmt(c.expired)}  cancelled ${fmt(c.cancelled)}`,
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
