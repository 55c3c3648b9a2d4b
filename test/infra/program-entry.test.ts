/**
 * `pulumi up` runs the Pulumi program, whatever else the repository builds: Pulumi.yaml's `main` is resolved
 * as the CLI resolves it and loaded by the SDK's own launcher (pulumi-host.ts), in a project directory with
 * and without a compiled dist/ — whose worker library is what package.json's `exports` points at.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GCP_PROJECT, PASSWORD } from './pulumi-mocks.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HOST = fileURLToPath(new URL('./pulumi-host.ts', import.meta.url));
const projectFile = parse(fs.readFileSync(path.join(ROOT, 'Pulumi.yaml'), 'utf8')) as {
  main?: string;
  runtime: { name: string; options?: { nodeargs?: string; typescript?: boolean } };
};

interface HostRun {
  programDir: string;
  entryPoint: string;
  resources: string[];
  warnings: string[];
  errors: string[];
  failure?: string;
}

let scratch: string;

/** A project directory like a clone: the real package.json, Pulumi.yaml (or a variant) and infra/. */
function projectDir(name: string, options: { dist: boolean; main?: string }): string {
  const dir = path.join(scratch, name);
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  const yaml = options.main === undefined ? projectFile : { ...projectFile, main: options.main };
  fs.writeFileSync(path.join(dir, 'Pulumi.yaml'), stringify(yaml));
  // A copy, not a symlink: the launcher chdirs into the program directory, and a symlink would resolve
  // back into this repository (whose package.json it would then read instead).
  fs.cpSync(path.join(ROOT, 'infra'), path.join(dir, 'infra'), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  if (options.dist) {
    // What `npm run build` leaves behind: the worker library, which registers no resources.
    fs.mkdirSync(path.join(dir, 'dist/worker'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'dist/worker/index.js'), 'export const enqueue = () => undefined;\n');
  }
  return dir;
}

async function host(dir: string): Promise<HostRun> {
  const nodeargs = (projectFile.runtime.options?.nodeargs ?? '').split(/\s+/).filter(Boolean);
  const { stdout } = await run(process.execPath, [...nodeargs, HOST, dir], {
    cwd: dir,
    env: { ...process.env, PGQ_HOST_CONFIG: JSON.stringify({ 'gcp:project': GCP_PROJECT, dbPassword: PASSWORD }) },
    maxBuffer: 16 * 1024 * 1024,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as HostRun;
}

beforeAll(() => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-entry-'));
});
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe('Pulumi.yaml names the program file', () => {
  test('main is infra/index.ts, loaded natively as ESM through tsx', () => {
    expect(projectFile.main).toBe('infra/index.ts');
    expect(projectFile.runtime).toEqual({ name: 'nodejs', options: { typescript: false, nodeargs: '--import tsx' } });
  });

  test.each([
    ['a clean clone', false],
    ['after npm run build (dist/ exists)', true],
  ])('%s: the SDK runs infra/index.ts and it registers the deployment', async (_, dist) => {
    const result = await host(projectDir(dist ? 'built' : 'clean', { dist }));
    expect(result.failure).toBeUndefined();
    expect(result.entryPoint).toBe('index.ts');
    expect(result.warnings.filter((w) => /entry point/i.test(w))).toEqual([]);
    for (const type of [
      'gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager',
      'gcp:compute/regionAutoscaler:RegionAutoscaler',
      'gcp:sql/databaseInstance:DatabaseInstance',
      'docker-build:index:Image',
    ]) {
      expect(result.resources).toContain(type);
    }
  }, 120_000);

  test('the check can fail: `main: infra/` with a dist/ runs the worker library and registers nothing', async () => {
    const result = await host(projectDir('directory-main', { dist: true, main: 'infra/' }));
    expect(result.entryPoint).toBe('.');
    expect(result.failure).toBeUndefined();
    // Only the stack itself: `pulumi up` on an existing stack would plan to delete everything.
    expect(result.resources).toEqual(['pulumi:pulumi:Stack']);
  }, 120_000);
});
