/**
 * `npm run chaos`: 20,000 mixed jobs through 4 supervised worker processes while every fault we
 * can make is made, one after another, with recovery between; then the checks of checks.ts and a
 * table of figures per fault (chaos/results/, and printed). Exits 1 when a check fails.
 * `--short` is CI's run: fewer jobs, shorter faults and a shorter lease, every fault still made.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { numberArg, parseFlags, runCli, UsageError } from '../scripts/cli.ts';
import { checkList, faultTable, type FaultFigures, type RunFigures } from './report.ts';
import { duplicateExecutions, runChecks, type Window } from './checks.ts';
import { Cluster, until } from './cluster.ts';
import { FAULTS, type FaultContext } from './faults.ts';
import { Feeder } from './feeder.ts';
import { Fleet, root } from './fleet.ts';
import { executionsByJob } from './ledger.ts';
import { seeded } from './mix.ts';

const USAGE = `usage: npm run chaos -- [--short] [--jobs N] [--seed N] [--only 1,7,15a]
  --short     CI's run: 4,000 jobs, faults at 30 % of their length, a 6 s worker lease
  --jobs N    jobs to enqueue over the run (default 20,000; 4,000 with --short)
  --seed N    the seed of the job mix and of every random choice (default: the time)
  --only IDS  make only these faults (for working on one; the checks still run)`;

/** The release before the fencing tokens, for the mixed-version fault. */
const PREVIOUS_RELEASE = '29df9ae';
const WORKERS = 4;

interface Options {
  short: boolean;
  jobs: number;
  seed: number;
  only: Set<string> | undefined;
}

function parse(argv: string[]): Options {
  const { values, positionals } = parseFlags(argv, {
    short: { type: 'boolean' },
    jobs: { type: 'string' },
    seed: { type: 'string' },
    only: { type: 'string' },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const short = values.short ?? false;
  const only = values.only === undefined ? undefined : new Set(values.only.split(',').map((s) => s.trim()));
  for (const id of only ?? []) if (!FAULTS.some((f) => f.id === id)) throw new UsageError(`--only: unknown fault '${id}' (expected ${FAULTS.map((f) => f.id).join(', ')})`);
  return {
    short,
    jobs: numberArg(values.jobs, '--jobs', { integer: true, min: 100, max: 1_000_000 }) ?? (short ? 4_000 : 20_000),
    seed: numberArg(values.seed, '--seed', { integer: true, min: 0, max: 2 ** 31 }) ?? Date.now() % 2 ** 31,
    only,
  };
}

const log = (message: string) => console.log(`${new Date().toISOString().slice(11, 19)} chaos: ${message}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function previousRelease(dir: string): Promise<string> {
  const tree = path.join(dir, 'previous');
  await fs.mkdir(tree, { recursive: true });
  const archive = execFileSync('git', ['-C', root, 'archive', PREVIOUS_RELEASE], { maxBuffer: 64 * 1024 * 1024 });
  execFileSync('tar', ['-x', '-C', tree], { input: archive });
  await fs.symlink(path.join(root, 'node_modules'), path.join(tree, 'node_modules'));
  return tree;
}

/** Executions started in [from, to), from the ledger (which no fault touches). */
async function started(ledger: pg.Pool, from: number, to: number): Promise<number> {
  const { rows } = await ledger.query<{ n: number }>('select count(*)::int as n from chaos_runs where started_at >= $1 and started_at < $2', [new Date(from), new Date(to)]);
  return rows[0]!.n;
}

/** From `healedAt`, how long until executions start at half `rate` (per second, the feeder's pace) again. */
async function recovery(ledger: pg.Pool, healedAt: number, rate: number): Promise<number | null> {
  if (rate < 1) return 0;
  const deadline = healedAt + 120_000;
  for (;;) {
    const now = Date.now();
    if ((await started(ledger, now - 1_000, now)) >= rate / 2) return Math.max(0, now - 1_000 - healedAt);
    if (now > deadline) return null;
    await sleep(200);
  }
}

async function main(argv: string[]): Promise<number> {
  const options = parse(argv);
  const startedAt = Date.now();
  const scale = options.short ? 0.3 : 1;
  const cooldownMs = options.short ? 2_000 : 3_000;
  const leaseMs = options.short ? 6_000 : 15_000;
  const faults = FAULTS.filter((f) => !options.only || options.only.has(f.id));
  const random = seeded(options.seed + 1);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-chaos-'));
  // The servers run as the postgres user when this runs as root: it must reach their directories.
  await fs.chmod(dir, 0o755);
  log(`seed ${options.seed}, ${options.jobs} jobs, ${WORKERS} workers, ${faults.length} faults, data in ${dir}`);
  const cluster = await Cluster.start(dir);
  const ledger = new pg.Pool({ connectionString: cluster.ledger.url, max: 2 });
  ledger.on('error', () => {});
  const fleet = new Fleet(
    {
      DATABASE_URL: cluster.queueUrl,
      CHAOS_LEDGER_URL: cluster.ledger.url,
      WORKER_TASKS: path.join(root, 'chaos/tasks.ts'),
      WORKER_CONCURRENCY: '8',
      WORKER_LEASE_MS: String(leaseMs),
      HEALTH_PORT: '0',
      LOG_LEVEL: 'warn',
    },
    WORKERS,
  );
  const feeder = new Feeder(cluster.queueUrl, options.seed);
  let stopFeeding = false;
  try {
    const ctx: FaultContext = { cluster, fleet, feeder, random, leaseMs, scale, previousTree: await previousRelease(dir) };
    fleet.start();
    await until(async () => (await cluster.admin.query('select 1 from pgq.workers')).rowCount === WORKERS, 120_000, 'the workers to register');
    // Spread the jobs over a little longer than the faults take, so that every fault meets work
    // coming in; what is left when they are over goes at once.
    const feedMs = (options.short ? 260 : 480) * 1_000 * (faults.length / FAULTS.length);
    let feedError: unknown;
    const feeding = feeder.feed(options.jobs, Math.max(20_000, feedMs), () => stopFeeding).catch((error: unknown) => (feedError = error));
    await sleep(5_000);
    const figures: FaultFigures[] = [];
    const lostWindows: Window[] = [];
    for (const fault of faults) {
      if (feedError) break;
      const before = Date.now();
      // The feeder's pace, not the rate of the moment: after an outage the backlog drains faster.
      const rate = options.jobs / (Math.max(20_000, feedMs) / 1_000);
      log(`fault ${fault.id}: ${fault.name}`);
      const result = await fault.run(ctx);
      const healedAt = Date.now();
      const recoveryMs = await recovery(ledger, healedAt, rate);
      const recoveredAt = healedAt + (recoveryMs ?? 120_000);
      const expected = rate * ((recoveredAt - before) / 1000);
      const done = await started(ledger, before, recoveredAt);
      if (result.lostWindow) lostWindows.push(result.lostWindow);
      log(`fault ${fault.id}: healed after ${((healedAt - before) / 1000).toFixed(1)} s, work flowing again ${recoveryMs === null ? 'never' : `${(recoveryMs / 1000).toFixed(1)} s`} later${result.note ? ` (${result.note})` : ''}`);
      figures.push({
        id: fault.id,
        name: fault.name,
        note: result.note ?? '',
        startedAt: before,
        endedAt: healedAt,
        recoveryMs,
        dip: expected > 0 ? Math.max(0, 1 - done / expected) : 0,
        duplicates: { atLeastOnce: 0, atMostOnce: 0 },
        lostEnqueues: 0,
        logged: [],
      });
      await sleep(cooldownMs);
    }
    stopFeeding = true;
    await feeding;
    if (feedError) throw new Error(`the feeder could not enqueue its jobs: ${feedError instanceof Error ? feedError.message : String(feedError)}`);
    log('every fault made; waiting for the queue to drain');
    await until(
      async () => (await cluster.admin.query(`select 1 from pgq.jobs where idempotency_key like 'chaos-%' limit 1`)).rowCount === 0,
      240_000,
      'the queue to drain',
    ).catch((error: unknown) => log(String(error)));
    await fleet.stop();
    const executions = await executionsByJob(ledger);
    const report = await runChecks({
      queue: cluster.admin,
      jobs: feeder.jobs,
      executions,
      lostWindows,
      exits: fleet.exits,
      reported: { ids: fleet.reportedAgain, pastMemory: fleet.lossPastMemory },
      failoverReports: fleet.failoverReports,
    });
    const dups = duplicateExecutions(executions, feeder.jobs);
    const withDetails = figures.map((f, i) => {
      const until = figures[i + 1]?.startedAt ?? Infinity;
      const mine = dups.filter((d) => d.at >= f.startedAt && d.at < until);
      const logged = [...fleet.logged(f.startedAt, Math.min(until, f.endedAt + (f.recoveryMs ?? 0) + 3_000)).entries()].sort((a, b) => b[1] - a[1]).slice(0, 3);
      const window = lostWindows.find((w) => w.from >= f.startedAt && w.to <= until);
      const lostEnqueues = window ? [...feeder.jobs.values()].filter((j) => j.ackedAt !== undefined && j.ackedAt >= window.from && j.ackedAt <= window.to).length : 0;
      return {
        ...f,
        duplicates: { atLeastOnce: mine.filter((d) => d.delivery === 'at_least_once').length, atMostOnce: mine.filter((d) => d.delivery === 'at_most_once').length },
        lostEnqueues: window ? Math.min(lostEnqueues, report.counted['enqueue lost with an asynchronous promotion (allowed)'] ?? 0) : 0,
        logged,
      };
    });
    const version = (await cluster.admin.query<{ server_version: string }>('show server_version')).rows[0]!.server_version;
    const run: RunFigures = {
      date: new Date(startedAt).toISOString(),
      machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB`,
      node: process.version,
      postgres: version,
      command: `npm run chaos -- --seed ${options.seed}${options.short ? ' --short' : ''}${options.only ? ` --only ${[...options.only].join(',')}` : ''}`,
      jobs: feeder.jobs.size,
      workers: WORKERS,
      durationS: Math.round((Date.now() - startedAt) / 1000),
      faults: withDetails,
      checks: report,
    };
    await fs.mkdir(path.join(root, 'chaos/results'), { recursive: true });
    const file = path.join(root, 'chaos/results', `${run.date.replaceAll(':', '-').slice(0, 19)}${options.short ? '-short' : ''}.json`);
    await fs.writeFile(file, `${JSON.stringify(run, null, 2)}\n`);
    console.log(`\n${run.date} · ${run.machine} · Node ${run.node} · Postgres ${run.postgres} · ${run.jobs} jobs · ${run.durationS} s · ${run.command}\n`);
    console.log(faultTable(run));
    console.log(`\n${checkList(report)}\n`);
    for (const c of report.checks.filter((c) => c.failed.length > 0)) {
      console.log(`FAILED: ${c.name}\n${c.detail || report.describe(c.failed)}\n`);
    }
    log(`figures in ${path.relative(root, file)}; ${report.ok ? 'every check passed' : 'a check FAILED'}`);
    return report.ok ? 0 : 1;
  } finally {
    stopFeeding = true;
    await fleet.stop().catch(() => {});
    await feeder.close();
    await ledger.end().catch(() => {});
    await cluster.close();
    await fs.rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

runCli('chaos', USAGE, () => main(process.argv.slice(2)));
