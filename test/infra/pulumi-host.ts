/**
 * Runs the Pulumi program the way `pulumi up` does, minus the engine: the project's Pulumi.yaml decides the
 * program directory and entry point as the CLI does, and the Node.js SDK's own launcher (`run()` from
 * @pulumi/pulumi/cmd/run, what the language host executes) resolves and loads it — package.json `main` and
 * `exports` included — under mocks. Prints one JSON line: the resources registered and the warnings logged.
 *
 * Usage (with the runtime's nodeargs from Pulumi.yaml): node --import tsx pulumi-host.ts PROJECT_DIR
 */
import fs from 'node:fs';
import Module, { createRequire } from 'node:module';
import path from 'node:path';
import { parse } from 'yaml';
import { answerCall, computed, DIGEST_A, fullConfig, idFor, PROJECT, STACK, type ConfigValues } from './pulumi-mocks.ts';

const require = createRequire(import.meta.url);
const pulumi = require('@pulumi/pulumi') as typeof import('@pulumi/pulumi');
// run.js requires its CLI wrapper (index.js), which parses process.argv and starts a run on load; it needs
// only one constant from it, so the wrapper is stood in for in the module cache.
const cliPath = require.resolve('@pulumi/pulumi/cmd/run/index.js');
const cli = new Module(cliPath);
cli.filename = cliPath;
cli.loaded = true;
cli.exports = { nodeJSProcessExitedAfterLoggingUserActionableMessage: 32 };
require.cache[cliPath] = cli;
const { run } = require('@pulumi/pulumi/cmd/run/run.js') as {
  run(argv: Record<string, unknown>, started: () => void, reportLoggedError: (e: Error) => void, isErrorReported: (e: Error) => boolean): Promise<unknown>;
};

/**
 * The CLI's reading of `main`: a directory becomes the program directory with entry point "." (the SDK then
 * consults package.json), a file becomes its directory plus the file name; no `main` is the project root.
 */
export function programLocation(projectDir: string, main: string | undefined): { programDir: string; entryPoint: string } {
  const full = path.resolve(projectDir, main ?? '.');
  if (!main || (fs.existsSync(full) && fs.statSync(full).isDirectory())) return { programDir: full, entryPoint: '.' };
  return { programDir: path.dirname(full), entryPoint: path.basename(full) };
}

const projectDir = process.argv[2];
if (!projectDir) {
  console.error('usage: pulumi-host.ts PROJECT_DIR');
  process.exit(2);
}
const project = parse(fs.readFileSync(path.join(projectDir, 'Pulumi.yaml'), 'utf8')) as { name: string; main?: string };
const config = JSON.parse(process.env.PGQ_HOST_CONFIG ?? '{}') as ConfigValues;

const registered: string[] = [];
const warnings: string[] = [];
const errors: string[] = [];
const warn = console.warn;
// The SDK logs through console when no engine is attached.
console.warn = (...args: unknown[]) => warnings.push(args.map(String).join(' '));
console.error = (...args: unknown[]) => errors.push(args.map(String).join(' '));

await pulumi.runtime.setMocks(
  {
    newResource(args) {
      registered.push(args.type);
      return { id: idFor(args.type, args.name), state: { ...args.inputs, ...computed(args.type, args.name, args.inputs, DIGEST_A) } };
    },
    call: (args) => answerCall(args),
  },
  project.name ?? PROJECT,
  STACK,
  false,
);
pulumi.runtime.setAllConfig(fullConfig(config), [`${PROJECT}:dbPassword`]);

const { programDir, entryPoint } = programLocation(projectDir, project.main);
let failure: string | undefined;
try {
  await run({ _: [entryPoint], pwd: programDir }, () => undefined, (e) => (failure = e.message), () => false);
  await (pulumi.runtime as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs();
} catch (error) {
  failure = (error as Error).message;
}
console.warn = warn;
process.stdout.write(`${JSON.stringify({ programDir, entryPoint, resources: registered, warnings, errors, failure })}\n`);
process.exit(0);
