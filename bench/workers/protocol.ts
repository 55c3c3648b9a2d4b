/**
 * What benchmark worker processes and the runner say to each other over the IPC channel, and
 * the payload every benchmark job carries. Shared by both sides so they cannot drift apart.
 */

/** The payload of a benchmark job. A plain job is a no-op. */
export interface BenchPayload {
  /** Sequence number, so the payloads are small but not all identical. */
  n?: number;
  /** Enqueue time (nowMs()) for the latency scenario. */
  t?: number;
  /** Keep the handler busy this many ms (the crash scenario's long job). */
  hold?: number;
}

/** Everything a worker process handled, sent when the runner asks for it. */
export interface WorkerReport {
  type: 'report';
  pid: number;
  /** Ids of the no-op and latency jobs handled, in order; duplicates are kept so they can be seen. */
  ids: string[];
  /** Enqueue-to-handler-start in ms, for jobs that carried `t`. */
  latencies: number[];
  /** nowMs() at the first handler start, or null when nothing ran. */
  firstStartAt: number | null;
  /** The Node that ran this worker (process.version), so the report says what ran, not what was meant to. */
  node: string;
}

export type ChildMessage =
  /** The worker is running and looking for jobs (sent by the peers' entries; ours is seen in pgq.workers). */
  | { type: 'ready' }
  /** Handled-job count so far, sent at most every 50 ms while it changes. */
  | { type: 'progress'; handled: number }
  /** A hold job's handler started. */
  | { type: 'started'; id: string; at: number }
  | WorkerReport;

export type ParentMessage = { type: 'report' };

/** Name of the task (graphile-worker identifier, pg-boss queue) every benchmark job uses. */
export const BENCH_TASK = 'bench';
