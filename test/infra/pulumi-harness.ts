/**
 * Runs infra/index.ts under Pulumi's mocks and records every resource it registers: type, name, the
 * resolved inputs, and the explicit dependencies the program declared. No CLI, no cloud.
 */
import * as pulumi from '@pulumi/pulumi';
import { vi } from 'vitest';
import { answerCall, computed, DIGEST_A, fullConfig, idFor, PROJECT, STACK, unwrapSecrets, type CallAnswers, type ConfigValues } from './pulumi-mocks.ts';

export { CA_NEXT_PEM, CA_PEM, DIGEST_A, DIGEST_B, GCP_PROJECT, PASSWORD, PROJECT, STACK, ZONES } from './pulumi-mocks.ts';

export interface Recorded {
  readonly type: string;
  readonly name: string;
  /** Inputs as the provider would receive them (secrets unwrapped). */
  readonly inputs: Record<string, any>;
  /** Names of the resources this one was told to depend on (dependsOn, as registered). */
  readonly dependsOn: readonly string[];
  /** Resource options the program set that the engine acts on. */
  readonly options: {
    readonly ignoreChanges?: readonly string[];
    readonly customTimeouts?: Record<string, string>;
    readonly deleteBeforeReplace?: boolean;
  };
  /** Input property names that were marked secret. */
  readonly secretInputs: readonly string[];
}

export interface ProgramRun {
  readonly resources: readonly Recorded[];
  readonly outputs: Record<string, unknown>;
  ofType(type: string): Recorded[];
  one(type: string): Recorded;
}

/** Resolves an Output under mocks (undefined when unknown). */
export function valueOf<T>(output: pulumi.Output<T> | T): Promise<T> {
  return new Promise((resolve) => pulumi.output(output).apply((v) => resolve(v as T)));
}

/** Loads the stack configuration the way infra/index.ts does, with the given values. */
export async function loadConfigWith(config: ConfigValues): Promise<unknown> {
  await pulumi.runtime.setMocks({ newResource: (a) => ({ id: a.name, state: a.inputs }), call: () => ({}) }, PROJECT, STACK, false);
  setConfig(config);
  vi.resetModules();
  const { loadConfig } = await import('../../infra/config.ts');
  return loadConfig();
}

function setConfig(config: ConfigValues): void {
  pulumi.runtime.setAllConfig(fullConfig(config), [`${PROJECT}:dbPassword`]);
}

/**
 * Runs the program with the given project config (keys without the project prefix; gcp:* keys as is).
 * Each call gets fresh module instances of infra/, so a test can run the program several times.
 */
export async function runProgram(
  config: ConfigValues,
  options: { digest?: string } & CallAnswers = {},
): Promise<ProgramRun> {
  const digest = options.digest ?? DIGEST_A;
  const registered: Array<{ type: string; name: string; inputs: Record<string, any> }> = [];
  const declared = new Map<string, { dependsOn: string[]; options: Recorded['options']; secrets: Array<Promise<string | undefined>> }>();

  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        const state = { ...args.inputs, ...computed(args.type, args.name, args.inputs, digest) };
        return { id: idFor(args.type, args.name), state };
      },
      call: (args) => answerCall(args, options),
    },
    PROJECT,
    STACK,
    false,
  );
  setConfig(config);

  vi.resetModules();
  let exported: Record<string, unknown> = {};
  await pulumi.runtime.runInPulumiStack(async () => {
    // Legacy (SDK-side) transformations see every resource's options before it registers.
    pulumi.runtime.registerStackTransformation((args) => {
      const deps = args.opts.dependsOn;
      const list: unknown[] = deps === undefined ? [] : Array.isArray(deps) ? deps : [deps];
      declared.set(`${args.type}::${args.name}`, {
        dependsOn: list.map((d) => (pulumi.Resource.isInstance(d) ? String((d as any).__name) : '?')),
        options: {
          ignoreChanges: args.opts.ignoreChanges,
          customTimeouts: args.opts.customTimeouts as Record<string, string> | undefined,
          deleteBeforeReplace: (args.opts as pulumi.CustomResourceOptions).deleteBeforeReplace,
        },
        secrets: Object.entries(args.props ?? {}).map(async ([key, value]) =>
          pulumi.Output.isInstance(value) && (await pulumi.isSecret(value)) ? key : undefined,
        ),
      });
      return undefined;
    });
    exported = { ...(await import('../../infra/index.ts')) };
    return {};
  });
  await (pulumi.runtime as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs();

  const resources: Recorded[] = [];
  for (const r of registered) {
    const info = declared.get(`${r.type}::${r.name}`);
    const secretInputs = info ? (await Promise.all(info.secrets)).filter((k): k is string => k !== undefined) : [];
    resources.push({ ...r, inputs: unwrapSecrets(r.inputs) as Record<string, any>, dependsOn: info?.dependsOn ?? [], options: info?.options ?? {}, secretInputs });
  }
  const outputs: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(exported)) outputs[key] = await valueOf(value as pulumi.Output<unknown>);
  return {
    resources,
    outputs,
    ofType: (type) => resources.filter((r) => r.type === type),
    one(type) {
      const found = resources.filter((r) => r.type === type);
      if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
      return found[0]!;
    },
  };
}
