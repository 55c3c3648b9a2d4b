/**
 * The child side of the benchmark: every worker process's task handler calls `handle()` first
 * thing, which records the job in memory (an array push, so the no-op job stays a no-op) and
 * reports to the runner over the IPC channel. Nothing is written per job to the database or a
 * file: that would cost more than the queue work being measured.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { nowMs } from '../lib/stats.ts';
import type { BenchPayload, ChildMessage, ParentMessage } from './protocol.ts';

const ids: string[] = [];
const latencies: number[] = [];
let firstStartAt: number | null = null;
let reported = 0;

function send(message: ChildMessage): void {
  // A worker started by hand (not by the runner) has no IPC channel: it just runs the jobs.
  if (process.send && process.connected) process.send(message);
}

// Progress is sampled rather than sent per job, so reporting costs nothing measurable even at
// tens of thousands of jobs per second. The timer is unref'd so it never keeps a worker alive.
setInterval(() => {
  if (ids.length !== reported) {
    reported = ids.length;
    send({ type: 'progress', handled: reported });
  }
}, 50).unref();

process.on('message', (message: ParentMessage) => {
  if (message?.type === 'report') {
    send({ type: 'report', pid: process.pid, ids, latencies, firstStartAt, node: process.version });
  }
});

/** Tell the runner this worker is up and looking for jobs. */
export function ready(): void {
  send({ type: 'ready' });
}

/**
 * Record one job at the start of its handler. A hold job (the crash scenario) reports its start
 * at once and then waits `hold` ms or until its signal aborts. The signal is asked for only
 * then: a queue may make it on first use, and a no-op job must not pay for one it never reads.
 */
export async function handle(id: string, payload: unknown, signalOf?: () => AbortSignal): Promise<void> {
  const at = nowMs();
  firstStartAt ??= at;
  const p = (payload ?? {}) as BenchPayload;
  if (typeof p.hold === 'number') {
    send({ type: 'started', id, at });
    const signal = signalOf?.();
    await delay(p.hold, undefined, signal ? { signal } : undefined);
    return;
  }
  ids.push(id);
  if (typeof p.t === 'number') latencies.push(at - p.t);
}
