/**
 * Runs infra/index.ts under Pulumi's mocks and records every resource it registers: type, name, the
 * resolved inputs, and the explicit dependencies the program declared. No CLI, no cloud.
 */
import { createHash } from 'node:crypto';
import * as pulumi from '@pulumi/pulumi';
import { vi } from 'vitest';

export const PROJECT = 'gcpmig-pgqueue';
export const STACK = 'test';
export const GCP_PROJECT = 'test-project';
/** A digest the mocked image build "pushes". */
export const DIGEST_A = `sha256:${'a'.repeat(64)}`;
export const DIGEST_B = `sha256:${'b'.repeat(64)}`;
export const PASSWORD = `S3cret pa$$ 'word" \\ \`x\``;
export const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIBmockmockmock\n-----END CERTIFICATE-----';
export const ZONES = ['us-central1-f', 'us-central1-c', 'us-central1-a', 'us-central1-b'];

export interface Recorded {
  readonly type: string;
  readonly name: string;
  /** Inputs as the provider would receive them (secrets unwrapped). */
  readonly inputs: Record<string, any>;
  /** Names of the resources this one was told to depend on (dependsOn, as registered). */
  readonly dependsOn: readonly string[];
  /** Input property names that were marked secret. */
  readonly secretInputs: readonly string[];
}

export interface ProgramRun {
  readonly resources: readonly Recorded[];
  readonly outputs: Record<string, unknown>;
  ofType(type: string): Recorded[];
  one(type: string): Recorded;
}

function computed(type: string, name: string, inputs: Record<string, any>, digest: string): Record<string, any> {
  const selfLink = (kind: string) => `https://www.googleapis.com/compute/v1/projects/${GCP_PROJECT}/${kind}/${name}`;
  switch (type) {
    case 'gcp:compute/network:Network':
      return { name, selfLink: selfLink('global/networks') };
    case 'gcp:compute/subnetwork:Subnetwork':
      return { name, selfLink: selfLink(`regions/${inputs.region}/subnetworks`) };
    case 'gcp:compute/router:Router':
      return { name };
    case 'gcp:compute/globalAddress:GlobalAddress':
      return { name };
    case 'gcp:compute/instanceTemplate:InstanceTemplate': {
      // Like the real API: a new template (different inputs) gets a new unique id.
      const unique = `${inputs.namePrefix}${createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 12)}`;
      return { name: unique, selfLink: selfLink(`global/instanceTemplates`), selfLinkUnique: `${selfLink('global/instanceTemplates')}?uniqueId=${unique}` };
    }
    case 'gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager':
      return { name, instanceGroup: selfLink(`regions/${inputs.region}/instanceGroups`) };
    case 'gcp:sql/databaseInstance:DatabaseInstance':
      return {
        name,
        connectionName: `${GCP_PROJECT}:${inputs.region}:${name}`,
        privateIpAddress: '10.77.0.3',
        serverCaCerts: [{ cert: CA_PEM, commonName: 'ca', createTime: '', expirationTime: '', sha1Fingerprint: '' }],
      };
    case 'gcp:sql/user:User':
    case 'gcp:sql/database:Database':
      return { name: inputs.name ?? name };
    case 'gcp:secretmanager/secret:Secret':
      return { secretId: name, name: `projects/123456/secrets/${name}` };
    case 'gcp:secretmanager/secretVersion:SecretVersion':
      return { name: `projects/123456/secrets/${name}/versions/1` };
    case 'gcp:serviceaccount/account:Account':
      return { email: `${inputs.accountId}@${GCP_PROJECT}.iam.gserviceaccount.com` };
    case 'gcp:artifactregistry/repository:Repository':
      return { name: inputs.repositoryId, registryUri: `${inputs.location}-docker.pkg.dev/${GCP_PROJECT}/${inputs.repositoryId}` };
    case 'docker-build:index:Image':
      return { digest, ref: `${inputs.tags?.[0]}@${digest}`, contextHash: 'hash' };
    default:
      return {};
  }
}

function idFor(type: string, name: string): string {
  if (type === 'gcp:secretmanager/secret:Secret') return `projects/${GCP_PROJECT}/secrets/${name}`;
  if (type === 'gcp:compute/network:Network') return `projects/${GCP_PROJECT}/global/networks/${name}`;
  return `${name}_id`;
}

const SECRET_SIG = '4dabf18193072939515e22adb298388d';

/** Replaces the mock monitor's secret envelopes by their values. */
function unwrapSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(unwrapSecrets);
  if (value && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    if (SECRET_SIG in record && 'value' in record) return unwrapSecrets(record.value);
    return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, unwrapSecrets(v)]));
  }
  return value;
}

/** Resolves an Output under mocks (undefined when unknown). */
export function valueOf<T>(output: pulumi.Output<T> | T): Promise<T> {
  return new Promise((resolve) => pulumi.output(output).apply((v) => resolve(v as T)));
}

/**
 * Runs the program with the given project config (keys without the project prefix; gcp:* keys as is).
 * Each call gets fresh module instances of infra/, so a test can run the program several times.
 */
/** Loads the stack configuration the way infra/index.ts does, with the given values. */
export async function loadConfigWith(config: Record<string, string | number | boolean | string[]>): Promise<unknown> {
  await pulumi.runtime.setMocks({ newResource: (a) => ({ id: a.name, state: a.inputs }), call: () => ({}) }, PROJECT, STACK, false);
  setConfig(config);
  vi.resetModules();
  const { loadConfig } = await import('../../infra/config.ts');
  return loadConfig();
}

function setConfig(config: Record<string, string | number | boolean | string[]>): void {
  const all: Record<string, string> = {};
  for (const [key, value] of Object.entries(config)) {
    const full = key.includes(':') ? key : `${PROJECT}:${key}`;
    all[full] = Array.isArray(value) ? JSON.stringify(value) : String(value);
  }
  pulumi.runtime.setAllConfig(all, [`${PROJECT}:dbPassword`]);
}

export async function runProgram(
  config: Record<string, string | number | boolean | string[]>,
  options: { digest?: string } = {},
): Promise<ProgramRun> {
  const digest = options.digest ?? DIGEST_A;
  const registered: Array<{ type: string; name: string; inputs: Record<string, any> }> = [];
  const declared = new Map<string, { dependsOn: string[]; secrets: Array<Promise<string | undefined>> }>();

  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs });
        const state = { ...args.inputs, ...computed(args.type, args.name, args.inputs, digest) };
        return { id: idFor(args.type, args.name), state };
      },
      call(args) {
        if (args.token === 'gcp:organizations/getClientConfig:getClientConfig') {
          return { accessToken: 'ya29.mock', project: GCP_PROJECT, region: 'us-central1', zone: '', id: 'x' };
        }
        if (args.token === 'gcp:compute/getZones:getZones') return { names: ZONES, id: 'zones' };
        return {};
      },
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
    resources.push({ ...r, inputs: unwrapSecrets(r.inputs) as Record<string, any>, dependsOn: info?.dependsOn ?? [], secretInputs });
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
