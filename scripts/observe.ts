/**
 * observe: watch the queue and its workers. `--once --json` prints one JSON object (the
 * contract in design.md §4); otherwise the view refreshes every --interval seconds, and
 * --record appends each sample to an NDJSON file.
 */
import fs from 'node:fs';
import { listWorkers, snapshot } from '../worker/queries.ts';
import { connect, numberArg, parseFlags, runCli, UsageError } from './cli.ts';
import { observation, renderView, type Observation } from './view.ts';

const USAGE = `usage: npm run observe -- [--once] [--json] [--interval S] [--record FILE]
  --once        one sample, then exit
  --json        JSON instead of the text view (one object per sample)
  --interval S  seconds between samples (default 2)
  --record FILE append every sample to FILE as one JSON line (NDJSON)`;

async function main(): Promise<void> {
  const { values, positionals } = parseFlags(process.argv.slice(2), {
    once: { type: 'boolean' },
    json: { type: 'boolean' },
    interval: { type: 'string' },
    record: { type: 'string' },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const intervalMs = (numberArg(values.interval, '--interval', { min: 0.1, max: 3600 }) ?? 2) * 1000;
  const pool = connect(2);
  const sample = async (): Promise<Observation> => observation(await snapshot(pool), await listWorkers(pool));
  try {
    if (values.once) {
      const o = await sample();
      if (values.record) fs.appendFileSync(values.record, `${JSON.stringify(o)}\n`);
      process.stdout.write(values.json ? `${JSON.stringify(o)}\n` : `${renderView(o, process.stdout.columns ?? 120).join('\n')}\n`);
      return;
    }
    let stop = false;
    process.on('SIGINT', () => (stop = true));
    process.on('SIGTERM', () => (stop = true));
    while (!stop) {
      const o = await sample();
      if (values.record) fs.appendFileSync(values.record, `${JSON.stringify(o)}\n`);
      if (values.json) process.stdout.write(`${JSON.stringify(o)}\n`);
      else if (process.stdout.isTTY) process.stdout.write(`\x1b[H\x1b[2J${renderView(o, process.stdout.columns).join('\n')}\n`);
      else process.stdout.write(`${renderView(o, 200).slice(0, 2).join(' | ')}\n`);
      const until = Date.now() + intervalMs;
      while (!stop && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, Math.min(100, until - Date.now())));
    }
  } finally {
    await pool.end();
  }
}

runCli('observe', USAGE, main);
