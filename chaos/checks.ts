/**
 * What a chaos run must show afterwards, read from the queue's final server and the ledger:
 * every job in exactly one terminal state and ended as designed (or for a counted reason), no
 * at-most-once job run twice outside a lost window, no success recorded as a plain failure, no
 * job stuck, no worker dead that the run did not kill. A failing check names the jobs and shows
 * their ledger.
 */
import type pg from 'pg';
import type { FedJob } from './feeder.ts';
import type { Exit } from './fleet.ts';
import { duplicates, type Execution } from './ledger.ts';
import { keyOf } from './mix.ts';

export interface Window {
  readonly from: number;
  readonly to: number;
}

export interface CheckInput {
  readonly queue: pg.Pool;
  readonly jobs: ReadonlyMap<number, FedJob>;
  readonly executions: ReadonlyMap<number, Execution[]>;
  readonly lostWindows: readonly Window[];
  readonly exits: readonly Exit[];
  /** Job ids the workers reported as started again after a failover, and whether one said its memory fell short. */
  readonly reported?: { readonly ids: ReadonlySet<string>; readonly pastMemory: boolean };
  /** Per "worker pid/job id", how often it was reported after a failover. */
  readonly failoverReports?: ReadonlyMap<string, number>;
}

export interface Check {
  readonly name: string;
  readonly failed: number[];
  readonly detail?: string;
}

export interface CheckReport {
  readonly checks: Check[];
  /** Counted, not failures: why jobs ended otherwise than designed, and what the lost windows took. */
  readonly counted: Record<string, number>;
  readonly ok: boolean;
  /** How the named jobs ended on the queue and what the ledger says of them (a function: not in the JSON). */
  readonly describe: (ns: readonly number[]) => string;
}

interface Row {
  key: string;
  id: string;
  state: string;
  error: string | null;
  delivery: string;
}

const TERMINAL = new Set(['succeeded', 'failed', 'expired', 'cancelled']);
const inWindow = (t: number, windows: readonly Window[]) => windows.some((w) => t >= w.from && t <= w.to);

export async function runChecks(input: CheckInput): Promise<CheckReport> {
  const { rows } = await input.queue.query<Row>(
    `select idempotency_key as key, id::text, state, error, delivery from pgq.all_jobs where idempotency_key like 'chaos-%'`,
  );
  const byKey = new Map<string, Row[]>();
  for (const r of rows) byKey.set(r.key, [...(byKey.get(r.key) ?? []), r]);
  const missing: number[] = [];
  const lostEnqueues: number[] = [];
  const twice: number[] = [];
  const stuck: number[] = [];
  const undesigned: number[] = [];
  const amoTwice: number[] = [];
  const amoTwiceAllowed: number[] = [];
  const successFailed: number[] = [];
  const counted: Record<string, number> = {};
  const count = (why: string) => (counted[why] = (counted[why] ?? 0) + 1);
  for (const job of input.jobs.values()) {
    const found = byKey.get(keyOf(job.n)) ?? [];
    const runs = input.executions.get(job.n) ?? [];
    if (found.length === 0) {
      if (job.ackedAt !== undefined && inWindow(job.ackedAt, input.lostWindows)) lostEnqueues.push(job.n);
      else missing.push(job.n);
      continue;
    }
    if (found.length > 1) twice.push(job.n);
    const row = found[0]!;
    if (!TERMINAL.has(row.state)) {
      stuck.push(job.n);
      continue;
    }
    const unknown = row.error?.startsWith('outcome unknown') ?? false;
    const ended = designedEnd(job, row, runs);
    if (ended === 'as designed') count(`${job.design}: as designed`);
    else if (ended) count(ended);
    else undesigned.push(job.n);
    if (job.delivery === 'at_most_once' && runs.length > 1) {
      // Allowed only in a lost window, and only when a worker said so: detected, not silent.
      const told = input.reported && (input.reported.ids.has(runs[0]!.jobId) || input.reported.pastMemory);
      if (inWindow(runs[0]!.startedAt.getTime(), input.lostWindows) && (told ?? true)) amoTwiceAllowed.push(job.n);
      else amoTwice.push(job.n);
    }
    if (row.state === 'failed' && job.design !== 'poison' && !unknown && runs.some((r) => r.outcome === 'ok')) successFailed.push(job.n);
  }
  if (lostEnqueues.length > 0) counted['enqueue lost with an asynchronous promotion (allowed)'] = lostEnqueues.length;
  if (amoTwiceAllowed.length > 0) counted['at-most-once started again after an asynchronous promotion (allowed, reported)'] = amoTwiceAllowed.length;
  const dead = input.exits.filter((e) => !e.meant);
  // A take-back pass and the few more that refused outcomes ask for may each report a job; a loop reports it without end.
  const looping = [...(input.failoverReports ?? new Map<string, number>())].filter(([, times]) => times > 5);
  const checks: Check[] = [
    { name: 'every enqueued job exists (except enqueues lost with an asynchronous promotion)', failed: missing },
    { name: 'no job recorded twice', failed: twice },
    { name: 'no job stuck queued or running', failed: stuck },
    { name: 'every job ended as designed, or for a counted reason', failed: undesigned },
    { name: 'no at-most-once job executed twice (outside a lost window, and there only when reported)', failed: amoTwice },
    { name: 'no record says failed for a job whose handler succeeded, unless "outcome unknown"', failed: successFailed },
    {
      name: 'no worker reports a job after a failover more than five times (a take-back in a loop)',
      failed: looping.map(([key]) => Number(key.split('/')[1])),
      detail: looping.slice(0, 10).map(([key, times]) => `worker pid/job id ${key}: reported ${times} times`).join('\n'),
    },
    {
      name: 'no worker process died except those killed on purpose',
      failed: dead.map((e) => e.pid),
      detail: dead.map((e) => `pid ${e.pid} exited ${e.code ?? e.signal}: ${e.stderr.trim().split('\n').slice(-3).join(' | ')}`).join('\n'),
    },
  ];
  const describe = (ns: readonly number[]) => describeJobs(ns, input.executions, (n) => byKey.get(keyOf(n)) ?? [], input.jobs);
  return { checks, counted, ok: checks.every((c) => c.failed.length === 0), describe };
}

/**
 * 'as designed', or the counted reason a job ended otherwise (a fault's fair cost), or
 * undefined when nothing explains it.
 */
function designedEnd(job: FedJob, row: Row, runs: readonly Execution[]): string | undefined {
  const error = row.error ?? '';
  switch (job.design) {
    case 'succeed':
      if (row.state === 'succeeded') return 'as designed';
      if (row.state === 'failed' && error.startsWith('outcome unknown')) {
        return job.delivery === 'at_most_once' ? 'at-most-once: outcome unknown (its worker was killed)' : 'at-least-once: attempts used up by kills';
      }
      if (row.state === 'failed' && /stopp|shut/i.test(error) && job.delivery === 'at_most_once') return 'at-most-once: failed by a stop (SIGTERM) mid-run';
      return undefined;
    case 'fail':
      if (row.state === 'failed' && (error.includes('failing on purpose') || error.startsWith('outcome unknown'))) return 'as designed';
      return undefined;
    case 'expire':
      if (row.state === 'expired' && runs.length === 0) return 'as designed';
      if (row.state === 'succeeded' && job.expiresAt && runs.length === 1) {
        // Claimed in the millisecond between due and expired. A buffered job checks its expiry
        // before it starts, on the database's clock as the worker reckons it (behind by the claim
        // reply's trip), so a start just after the expiry can still happen: counted apart.
        return runs[0]!.startedAt <= job.expiresAt ? 'expire: started in the millisecond before its expiry' : 'expire: claimed before its expiry, started just after it';
      }
      return undefined;
    case 'poison':
      return row.state === 'failed' ? 'as designed' : undefined;
  }
}

/** The named jobs as the queue recorded them, with their ledger, for a failing check. */
function describeJobs(ns: readonly number[], executions: ReadonlyMap<number, Execution[]>, rowsOf: (n: number) => Row[], jobs: ReadonlyMap<number, FedJob>, limit = 10): string {
  return ns
    .slice(0, limit)
    .map((n) => {
      const runs = executions.get(n) ?? [];
      const job = jobs.get(n);
      const recorded = rowsOf(n).map((r) => `id ${r.id} ${r.state}${r.error ? `: ${r.error.slice(0, 200)}` : ''}`).join('; ') || 'no row';
      const lines = runs.map((r) => `    attempt ${r.attempt} token ${r.token} pid ${r.pid} at ${r.startedAt.toISOString()} → ${r.outcome ?? 'cut short'}`);
      return [`  job ${keyOf(n)} (${job?.design ?? '?'}, ${job?.delivery ?? '?'}; recorded: ${recorded}; ${runs.length} executions)`, ...lines].join('\n');
    })
    .join('\n');
}

/** Duplicate executions (see ledger.duplicates), each with its job's delivery. */
export function duplicateExecutions(executions: ReadonlyMap<number, Execution[]>, jobs: ReadonlyMap<number, FedJob>): { at: number; n: number; delivery: string }[] {
  const out: { at: number; n: number; delivery: string }[] = [];
  for (const [n, runs] of executions) {
    for (const d of duplicates(runs)) out.push({ at: d.startedAt.getTime(), n, delivery: jobs.get(n)?.delivery ?? 'at_least_once' });
  }
  return out;
}
