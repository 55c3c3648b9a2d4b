/**
 * observe: watch the queue, its workers and (when deployed) the instance group. `--once --json`
 * prints one JSON object (the contract in design.md §4); otherwise the view refreshes every
 * --interval seconds. --record appends each sample to an NDJSON file; --chart renders a recorded
 * series as one self-contained HTML page (at the end of a live session, or from --from FILE).
 */
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';
import { listWorkers, snapshot } from '../worker/admin.ts';
import { readRecording, renderChart } from './chart.ts';
import { connect, numberArg, parseFlags, runCli, UsageError } from './cli.ts';
import { migFromStack, migLines, readMig, type MigTarget } from './mig.ts';
import { observation, renderView, withCounterRates, type MigState, type Observation } from './view.ts';

const USAGE = `usage: npm run observe -- [--once] [--json] [--interval S] [--record FILE] [--chart FILE [--from FILE]]
                            [--mig NAME --region R [--project P] | --stack S] [--cpu-target P]
  --once          one sample, then exit
  --json          JSON instead of the text view (one object per sample)
  --interval S    seconds between samples (default 2)
  --record FILE   append every sample to FILE as one JSON line (NDJSON)
  --chart FILE    write a self-contained HTML chart of the recorded series: of --from FILE at once,
                  or of --record FILE when the live session ends (Ctrl-C)
  --mig NAME      also show this managed instance group (read with gcloud) ...
  --region R      ... in region R (and --project P, default gcloud's)
  --stack S       take the group from the outputs of Pulumi stack S
  --mig-interval S  seconds between instance group reads (default 10; gcloud is slow)
  --cpu-target P  draw this CPU target (0..1) on the chart when no autoscaler is read`;

interface Options {
  once: boolean;
  json: boolean;
  intervalMs: number;
  record?: string;
  chart?: string;
  from?: string;
  mig?: MigTarget;
  stack?: string;
  migIntervalMs: number;
  cpuTarget?: number;
}

/** Parse observe's command line; mistakes are UsageErrors naming the flag. */
export function parseObserve(argv: string[]): Options {
  const { values, positionals } = parseFlags(argv, {
    once: { type: 'boolean' },
    json: { type: 'boolean' },
    interval: { type: 'string' },
    record: { type: 'string' },
    chart: { type: 'string' },
    from: { type: 'string' },
    mig: { type: 'string' },
    region: { type: 'string' },
    project: { type: 'string' },
    stack: { type: 'string' },
    'mig-interval': { type: 'string' },
    'cpu-target': { type: 'string' },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  if (values.from !== undefined && values.chart === undefined) throw new UsageError('--from goes with --chart');
  if (values.chart !== undefined && values.from === undefined && values.record === undefined) {
    throw new UsageError('--chart needs a series: --from FILE, or --record FILE to chart this session');
  }
  if ((values.mig === undefined) !== (values.region === undefined)) throw new UsageError('--mig and --region go together');
  if (values.mig !== undefined && values.stack !== undefined) throw new UsageError('give --mig/--region or --stack, not both');
  return {
    once: values.once ?? false,
    json: values.json ?? false,
    intervalMs: (numberArg(values.interval, '--interval', { min: 0.1, max: 3600 }) ?? 2) * 1000,
    record: values.record,
    chart: values.chart,
    from: values.from,
    mig: values.mig !== undefined ? { name: values.mig, region: values.region!, project: values.project } : undefined,
    stack: values.stack,
    migIntervalMs: (numberArg(values['mig-interval'], '--mig-interval', { min: 1, max: 3600 }) ?? 10) * 1000,
    cpuTarget: numberArg(values['cpu-target'], '--cpu-target', { min: 0.01, max: 1 }),
  };
}

function writeChart(o: Options, source: string): void {
  const samples = readRecording(source);
  fs.writeFileSync(o.chart!, renderChart(samples, { title: 'gcpmig-pgqueue load test', source, cpuTarget: o.cpuTarget }));
  process.stderr.write(`chart of ${samples.length} samples written to ${o.chart}\n`);
}

async function main(): Promise<void> {
  const o = parseObserve(process.argv.slice(2));
  if (o.from) return writeChart(o, o.from);

  const pool = connect(2);
  let target = o.mig;
  let mig: MigState | undefined;
  let migReadAt = 0;
  let migReading: Promise<void> | undefined;
  const refreshMig = async () => {
    if (!target && o.stack) {
      try {
        target = await migFromStack(o.stack);
      } catch (error) {
        mig = { name: `stack ${o.stack}`, region: '-', targetSize: null, recommendedSize: null, instances: {}, cpuTarget: null, error: (error as Error).message };
        return;
      }
    }
    if (target) mig = await readMig(target);
  };
  const recent: Observation[] = [];
  // The group is read beside the database, on its own slower cadence: gcloud takes seconds.
  const sample = async (): Promise<Observation> => {
    if ((target || o.stack) && !migReading && (mig === undefined || Date.now() - migReadAt >= o.migIntervalMs)) {
      migReadAt = Date.now();
      migReading = refreshMig().finally(() => (migReading = undefined));
      if (mig === undefined) await migReading;
    }
    const obs = withCounterRates(observation(await snapshot(pool), await listWorkers(pool), mig), recent);
    recent.push(obs);
    while (recent.length > 0 && Date.parse(obs.at) - Date.parse(recent[0]!.at) > 60_000) recent.shift();
    return obs;
  };
  const emit = (obs: Observation) => {
    if (o.record) fs.appendFileSync(o.record, `${JSON.stringify(obs)}\n`);
    if (o.json) {
      process.stdout.write(`${JSON.stringify(obs)}\n`);
      return;
    }
    const width = process.stdout.columns ?? 120;
    const lines = renderView(obs, width, obs.mig ? migLines(obs.mig).map((l) => (l.length > width ? `${l.slice(0, width - 1)}…` : l)) : []);
    if (o.once) process.stdout.write(`${lines.join('\n')}\n`);
    else if (process.stdout.isTTY) process.stdout.write(`\x1b[H\x1b[2J${lines.join('\n')}\n`);
    else process.stdout.write(`${obs.at} ${lines.slice(0, 2).join(' | ')}\n`);
  };
  try {
    if (o.once) return emit(await sample());
    let stop = false;
    process.on('SIGINT', () => (stop = true));
    process.on('SIGTERM', () => (stop = true));
    while (!stop) {
      emit(await sample());
      const until = Date.now() + o.intervalMs;
      while (!stop && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, Math.min(100, until - Date.now())));
    }
    if (o.chart && o.record) writeChart(o, o.record);
  } finally {
    await migReading;
    await pool.end();
  }
}

// Importable by tests for its parser; runs when started as a command.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) runCli('observe', USAGE, main);
