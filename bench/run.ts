/**
 * `npm run bench`: ours, graphile-worker and pg-boss side by side on one fresh Postgres, plus the
 * floor (the raw SQL a job needs). Writes bench/results/<date>.json and, for a full unfiltered
 * run, the table in BENCHMARKS.md.
 *
 *   npm run bench -- [--quick] [--reps N] [--only a,b] [--systems a,b] [--crash-cap S] [--markdown | --no-markdown]
 *
 * This entry only makes sure the suite runs on the bench's Node (lib/bench-node.ts); the suite
 * is loaded afterwards, so the peers' packages are never loaded on a Node they do not support.
 */
import { BenchNodeError, handOverToBenchNode } from './lib/bench-node.ts';

try {
  const code = await handOverToBenchNode();
  if (code === null) await import('./suite.ts');
  else process.exit(code);
} catch (error) {
  if (!(error instanceof BenchNodeError)) throw error;
  process.stderr.write(`bench: ${error.message}\n`);
  process.exit(1);
}
