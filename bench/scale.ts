/**
 * The scale scenario, ours only: drain, latency, the cost of an idle claim and of an observe
 * sample on an empty queue, then the same with a large history and many jobs scheduled for
 * later, and the rate at which maintenance prunes an old history. The large state is written
 * with SQL, not through the queue: it only has to exist, and enqueueing it would take minutes.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type pg from 'pg';
import { snapshot } from '../worker/admin.ts';
import { silentLogger } from '../worker/logger.ts';
import { Maintenance } from '../worker/maintenance.ts';
import { settleAndClaim } from '../worker/sql/run.ts';
import type { Queryable } from '../worker/sql/shared.ts';
import { repoRoot } from './lib/proc.ts';
import { summarize } from './lib/stats.ts';
import { drain, latency, type RepDb, type RepResult } from './scenarios.ts';
import type { Db, QueueSystem } from './systems/types.ts';
import { BENCH_TASK } from './workers/protocol.ts';

// Maintenance and snapshot are handed a pool of the library's own copy of pg, as the worker has.
const rootPg = createRequire(path.join(repoRoot, 'package.json'))('pg') as typeof import('pg');

/** The worker's default retention: the loaded history must stay inside it, the pruned one outside. */
const RETENTION_HOURS = 168;
/** Loaded rows take ids from here on, far above what the measured phases enqueue before them. */
const LOADED_IDS_FROM = 1_000_000_000;
/** The jobs' identity sequence continues from here once the state is loaded. */
const SEQUENCE_AFTER_LOAD = 2_000_000_000;
/** Old history for the prune: ids between the empty phase's jobs and the loaded ones. */
const OLD_IDS_FROM = 500_000_000;
const IDLE_CLAIMS = 50;
const OBSERVE_SAMPLES = 10;

export interface ScaleSizes {
  drain: number;
  latencyJobs: number;
  latencyRate: number;
  /** Finished jobs loaded into the history, all within the retention. */
  scaleHistory: number;
  /** Queued jobs loaded with run_after a day or more ahead. */
  scaleScheduled: number;
  /** Finished jobs older than the retention, for the prune. */
  scalePrune: number;
}

/** The highest job id in either table: a phase's own jobs are the ones above it. */
async function lastId(db: Db): Promise<string> {
  const { rows } = await db.query<{ id: string }>(
    `select greatest(coalesce((select max(id) from pgq.jobs), 0), coalesce((select max(id) from pgq.finished_jobs), 0))::text as id`,
  );
  return rows[0]!.id;
}

/**
 * Ours with its checks narrowed to the jobs after `afterId`, so that the loaded rows and those
 * an earlier phase left in the history do not count as leftovers or as extra finished jobs.
 */
function jobsAfter(sys: QueueSystem, afterId: string): QueueSystem {
  return {
    ...sys,
    async countWaiting(db) {
      const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from pgq.jobs where id > $1::bigint and state = 'queued'`, [afterId]);
      return rows[0]!.n;
    },
    async drained(db) {
      const { rows } = await db.query<{ done: boolean }>('select not exists (select 1 from pgq.jobs where id > $1::bigint) as done', [afterId]);
      return rows[0]!.done;
    },
    async verifyDrained(db, n) {
      const problems: string[] = [];
      const { rows: live } = await db.query<{ n: number }>('select count(*)::int as n from pgq.jobs where id > $1::bigint', [afterId]);
      if (live[0]!.n !== 0) problems.push(`${live[0]!.n} jobs left in pgq.jobs`);
      const { rows } = await db.query<{ total: number; ok: number }>(
        `select count(*)::int as total, (count(*) filter (where state = 'succeeded' and attempts = 1))::int as ok
           from pgq.finished_jobs where id > $1::bigint`,
        [afterId],
      );
      const { total, ok } = rows[0]!;
      if (total !== n) problems.push(`pgq.finished_jobs has ${total} rows of this phase, expected ${n}`);
      if (ok !== total) problems.push(`${total - ok} finished jobs are not 'succeeded' at their first attempt`);
      return problems;
    },
  };
}

/**
 * `rows` finished jobs with ids after `firstId`, finished between `oldestHours` and
 * `newestHours` ago, in id order as a real history is written (one in a hundred failed).
 */
async function loadHistory(db: Db, firstId: number, rows: number, newestHours: number, oldestHours: number): Promise<void> {
  await db.query(
    `insert into pgq.finished_jobs (id, queue, task, payload, priority, state, attempts, max_attempts, delivery,
                                    created_at, run_after, started_at, finished_at)
     select $1::bigint + i, 'default', $3, jsonb_build_object('n', i), 0,
            case when i % 100 = 0 then 'failed' else 'succeeded' end, case when i % 100 = 0 then 5 else 1 end, 5, 'at_least_once',
            f - interval '1 second', f - interval '1 second', f - interval '5 milliseconds', f
       from (select i, now() - make_interval(secs => ($5::float8 - ($5::float8 - $4::float8) * i / $2::int) * 3600) as f
               from generate_series(1, $2::int) i) g`,
    [firstId, rows, BENCH_TASK, newestHours, oldestHours],
  );
}

/** The large state: a history within the retention, and jobs scheduled a day or more ahead. */
async function loadLargeState(db: Db, sizes: ScaleSizes): Promise<void> {
  await loadHistory(db, LOADED_IDS_FROM, sizes.scaleHistory, 0, RETENTION_HOURS - 24);
  await db.query(
    `insert into pgq.jobs (id, task, payload, priority, run_after)
     select $1::bigint + i, $3, jsonb_build_object('n', i), i % 3, now() + interval '1 day' + make_interval(secs => i)
       from generate_series(1, $2::int) i`,
    [LOADED_IDS_FROM + sizes.scaleHistory, sizes.scaleScheduled, BENCH_TASK],
  );
  await db.query(`select setval(pg_get_serial_sequence('pgq.jobs', 'id'), $1::bigint)`, [SEQUENCE_AFTER_LOAD]);
  await db.query('vacuum analyze pgq.finished_jobs, pgq.jobs');
}

const median = (values: number[]) => summarize(values)?.median ?? Number.NaN;

/**
 * The worker's settle-and-claim statement with nothing to settle and nothing due, for a
 * registered worker (a worker row that is gone makes the claim stop early): its median time,
 * and the shared buffers one run touches, from EXPLAIN of the very text the worker sends.
 */
async function idleClaim(pool: pg.Pool): Promise<{ ms: number; buffers: number }> {
  const client = await pool.connect();
  try {
    const { rows } = await client.query<{ id: string }>(
      'insert into pgq.workers (host, pid, concurrency, version) values ($1, $2, $3, $4) returning id::text',
      ['bench-scale', process.pid, 16, 'bench'],
    );
    const workerId = rows[0]!.id;
    let captured: pg.QueryConfig | undefined;
    const capturing = {
      query: (config: pg.QueryConfig) => {
        captured = config;
        return client.query(config);
      },
    } as unknown as Queryable;
    const times: number[] = [];
    try {
      for (let i = 0; i < IDLE_CLAIMS; i++) {
        await client.query('begin');
        const start = performance.now();
        const result = await settleAndClaim(capturing, workerId, 1, [], 16, null);
        times.push(performance.now() - start);
        await client.query('rollback');
        if (result.claimed.length > 0) throw new Error(`the idle claim took ${result.claimed.length} jobs: some were due`);
      }
      if (!captured) throw new Error('settleAndClaim sent no statement');
      await client.query('begin');
      // Unnamed: a prepared statement of the same name holds the worker's text already.
      const { rows: plan } = await client.query<{ 'QUERY PLAN': { Plan: Record<string, number> }[] }>({
        text: `explain (analyze, buffers, format json) ${captured.text}`,
        values: captured.values,
      });
      await client.query('rollback');
      const top = plan[0]!['QUERY PLAN'][0]!.Plan;
      return { ms: median(times), buffers: (top['Shared Hit Blocks'] ?? 0) + (top['Shared Read Blocks'] ?? 0) };
    } finally {
      await client.query('rollback').catch(() => {});
      await client.query('delete from pgq.workers where id = $1', [workerId]);
    }
  } finally {
    client.release();
  }
}

/** Median time of observe's sample (the system-wide snapshot), in ms. */
async function observeSample(pool: pg.Pool): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < OBSERVE_SAMPLES; i++) {
    const start = performance.now();
    await snapshot(pool);
    times.push(performance.now() - start);
  }
  return median(times);
}

/**
 * Load `rows` finished jobs older than the retention and run maintenance passes, each made due
 * at once, until they are gone. Returns rows pruned per second of pass time, and the problems.
 */
async function pruneRate(pool: pg.Pool, db: Db, rows: number): Promise<{ rate: number; problems: string[] }> {
  await loadHistory(db, OLD_IDS_FROM, rows, RETENTION_HOURS + 24, RETENTION_HOURS + 48);
  await db.query('analyze pgq.finished_jobs');
  const maintenance = new Maintenance(
    { pool, logger: silentLogger },
    { leaseMs: 15_000, intervalMs: 1_000, retentionMs: RETENTION_HOURS * 3_600_000 },
  );
  const problems: string[] = [];
  let pruned = 0;
  let ms = 0;
  const giveUpAt = performance.now() + 300_000;
  while (pruned < rows) {
    await db.query(`update pgq.maintenance set last_pass_at = least(last_pass_at, now() - interval '1 second')`);
    const start = performance.now();
    const pass = await maintenance.runOnce();
    ms += performance.now() - start;
    if (pass.skipped) problems.push('a maintenance pass was skipped although it was due');
    if (pass.pruned === 0) break;
    pruned += pass.pruned;
    if (performance.now() > giveUpAt) {
      problems.push(`pruning gave up after 300 s with ${pruned} of ${rows} rows pruned`);
      break;
    }
  }
  const { rows: left } = await db.query<{ old: number; kept: number }>(
    `select (count(*) filter (where finished_at < now() - make_interval(hours => $1)))::int as old,
            (count(*) filter (where finished_at >= now() - make_interval(hours => $1)))::int as kept
       from pgq.finished_jobs`,
    [RETENTION_HOURS],
  );
  if (left[0]!.old !== 0) problems.push(`${left[0]!.old} finished jobs older than the retention left after pruning`);
  if (pruned !== rows) problems.push(`maintenance pruned ${pruned} rows, expected ${rows}`);
  return { rate: pruned / (ms / 1000), problems };
}

/**
 * Idle claim, observe, drain and latency figures of one phase, suffixed with `phase`. The idle
 * claim and observe come first, on the state alone: after a drain, the dead index entries it
 * leaves until the next vacuum and the history it adds to the last minute would weigh on
 * them differently in each phase.
 */
async function measurePhase(sys: QueueSystem, rep: RepDb, pool: pg.Pool, sizes: ScaleSizes, phase: 'empty' | 'large'): Promise<RepResult> {
  const figures: Record<string, number> = {};
  const problems: string[] = [];
  const workerNodes: string[] = [];
  const claim = await idleClaim(pool);
  figures[`scale-idle-claim-ms-${phase}`] = claim.ms;
  figures[`scale-idle-claim-buffers-${phase}`] = claim.buffers;
  figures[`scale-observe-ms-${phase}`] = await observeSample(pool);
  const drained = await drain(jobsAfter(sys, await lastId(rep.db)), rep, sizes.drain, 1, `scale-drain-${phase}`);
  figures[`scale-drain-${phase}`] = drained.figures[`scale-drain-${phase}`]!;
  problems.push(...drained.problems.map((p) => `drain (${phase}): ${p}`));
  workerNodes.push(...(drained.workerNodes ?? []));
  // The empty case stays empty: the drain's history must not weigh on its latency figures.
  if (phase === 'empty') await rep.db.query('truncate pgq.finished_jobs, pgq.job_keys');
  const lat = await latency(jobsAfter(sys, await lastId(rep.db)), rep, sizes.latencyJobs, sizes.latencyRate);
  figures[`scale-latency-p50-${phase}`] = lat.figures['latency-p50']!;
  figures[`scale-latency-p99-${phase}`] = lat.figures['latency-p99']!;
  problems.push(...lat.problems.map((p) => `latency (${phase}): ${p}`));
  workerNodes.push(...(lat.workerNodes ?? []));
  return { figures, problems, workerNodes };
}

/** The whole scenario on one database: the empty phase, the load, the large phase, the prune. */
export async function scale(sys: QueueSystem, rep: RepDb, sizes: ScaleSizes, log: (line: string) => void): Promise<RepResult> {
  if (sys.name !== 'pgqueue') throw new Error(`the scale scenario measures pgqueue only, not ${sys.name}`);
  const pool = new rootPg.Pool({ connectionString: rep.url, max: 2 });
  pool.on('error', () => {});
  try {
    const empty = await measurePhase(sys, rep, pool, sizes, 'empty');
    log(`scale: empty phase done; loading ${sizes.scaleHistory.toLocaleString('en-US')} finished and ${sizes.scaleScheduled.toLocaleString('en-US')} scheduled jobs`);
    const loadStart = performance.now();
    await loadLargeState(rep.db, sizes);
    log(`scale: loaded and vacuumed in ${((performance.now() - loadStart) / 1000).toFixed(1)} s`);
    await rep.checkpoint();
    const large = await measurePhase(sys, rep, pool, sizes, 'large');
    const { rows } = await rep.db.query<{ scheduled: number }>(
      `select count(*)::int as scheduled from pgq.jobs where id > $1::bigint and id <= $2::bigint and state = 'queued'`,
      [LOADED_IDS_FROM, LOADED_IDS_FROM + sizes.scaleHistory + sizes.scaleScheduled],
    );
    const lost = rows[0]!.scheduled !== sizes.scaleScheduled ? [`${rows[0]!.scheduled} scheduled jobs still queued, expected ${sizes.scaleScheduled}`] : [];
    log(`scale: large phase done; loading ${sizes.scalePrune.toLocaleString('en-US')} finished jobs older than the retention to prune`);
    await rep.checkpoint();
    const prune = await pruneRate(pool, rep.db, sizes.scalePrune);
    const figures: Record<string, number> = { ...empty.figures, ...large.figures, 'scale-prune-rows-per-s': prune.rate };
    figures['scale-drain-ratio'] = figures['scale-drain-large']! / figures['scale-drain-empty']!;
    return {
      figures,
      problems: [...empty.problems, ...large.problems, ...lost, ...prune.problems.map((p) => `prune: ${p}`)],
      workerNodes: [...(empty.workerNodes ?? []), ...(large.workerNodes ?? [])],
    };
  } finally {
    await pool.end();
  }
}
