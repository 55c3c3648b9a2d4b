/**
 * Worker processes run compiled JavaScript with plain `node`, as the container runs ours
 * (`node dist/worker/main.js`): a TypeScript loader would add ~35 MB to every process's resident
 * memory and its own start-up work. The runner compiles our worker and the benchmark's worker
 * entries into bench/.build/ at the start of each run, so the figures are always of the sources
 * as they are now.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { benchDir, repoRoot } from './proc.ts';

/** Where the compiled files go: .build/worker/... and .build/bench/workers/... */
export const buildDir = path.join(benchDir, '.build');

/** The compiled path of a source file given relative to the repository root. */
export function built(sourceFromRoot: string): string {
  return path.join(buildDir, sourceFromRoot.replace(/\.ts$/, '.js'));
}

/** Compile with the root's TypeScript; a type error stops the run with tsc's own message. */
export function buildWorkers(): void {
  fs.rmSync(buildDir, { recursive: true, force: true });
  const tsc = path.join(repoRoot, 'node_modules/typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', path.join(benchDir, 'tsconfig.build.json')], { cwd: repoRoot, encoding: 'utf8', stdio: 'pipe' });
  } catch (error) {
    const out = error as { stdout?: string; stderr?: string };
    throw new Error(`compiling the worker processes failed:\n${out.stdout ?? ''}${out.stderr ?? ''}`);
  }
  // The migration runner looks for migrations/ beside the compiled worker/ (as dist/ has it).
  fs.cpSync(path.join(repoRoot, 'migrations'), path.join(buildDir, 'migrations'), { recursive: true });
}
