/**
 * What the mocked Google Cloud answers: provider-computed outputs of each resource type and the data
 * sources the program calls. Shared by the in-process harness (pulumi-harness.ts) and the child process that
 * runs the program the way Pulumi's Node.js host does (pulumi-host.ts), so it must not import vitest.
 */
import { createHash } from 'node:crypto';
import type * as pulumi from '@pulumi/pulumi';

export const PROJECT = 'gcpmig-pgqueue';
export const STACK = 'test';
export const GCP_PROJECT = 'test-project';
/** A digest the mocked image build "pushes". */
export const DIGEST_A = `sha256:${'a'.repeat(64)}`;
export const DIGEST_B = `sha256:${'b'.repeat(64)}`;
export const PASSWORD = `S3cret pa$$ 'word" \\ \`x\``;
/** The instance's current server CA (what `serverCaCerts` holds). */
export const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIBmockmockmock\n-----END CERTIFICATE-----';
/** A second CA the instance trusts (an upcoming CA before a rotation): only `getCaCerts` lists it. */
export const CA_NEXT_PEM = '-----BEGIN CERTIFICATE-----\nMIIBnextnextnext\n-----END CERTIFICATE-----';
export const ZONES = ['us-central1-f', 'us-central1-c', 'us-central1-a', 'us-central1-b'];

export type ConfigValues = Record<string, string | number | boolean | string[]>;

/** Pulumi's config map for the values: project keys get the project prefix; gcp:* keys stay as they are. */
export function fullConfig(config: ConfigValues): Record<string, string> {
  const all: Record<string, string> = {};
  for (const [key, value] of Object.entries(config)) {
    const full = key.includes(':') ? key : `${PROJECT}:${key}`;
    all[full] = Array.isArray(value) ? JSON.stringify(value) : String(value);
  }
  return all;
}

/** Outputs the provider would compute for a resource, beyond its inputs. */
export function computed(type: string, name: string, inputs: Record<string, any>, digest: string): Record<string, any> {
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

export function idFor(type: string, name: string): string {
  if (type === 'gcp:secretmanager/secret:Secret') return `projects/${GCP_PROJECT}/secrets/${name}`;
  if (type === 'gcp:compute/network:Network') return `projects/${GCP_PROJECT}/global/networks/${name}`;
  return `${name}_id`;
}

export interface CallAnswers {
  /** Certificates `gcp.sql.getCaCerts` lists (default: the current and the upcoming CA). */
  readonly caCerts?: readonly string[];
}

/** Answers the data sources (invokes) the program calls. */
export function answerCall(args: pulumi.runtime.MockCallArgs, answers: CallAnswers = {}): Record<string, any> {
  switch (args.token) {
    case 'gcp:organizations/getClientConfig:getClientConfig':
      return { accessToken: 'ya29.mock', project: GCP_PROJECT, region: 'us-central1', zone: '', id: 'x' };
    case 'gcp:compute/getZones:getZones':
      return { names: ZONES, id: 'zones' };
    case 'gcp:sql/getCaCerts:getCaCerts': {
      const certs = answers.caCerts ?? [CA_NEXT_PEM, CA_PEM];
      return {
        instance: args.inputs.instance,
        activeVersion: 'v1',
        certs: certs.map((cert, i) => ({
          cert,
          commonName: `C=US,O=Google\\, Inc,CN=Google Cloud SQL Server CA ${i}`,
          createTime: '2026-01-01T00:00:00Z',
          expirationTime: '2036-01-01T00:00:00Z',
          sha1Fingerprint: createHash('sha1').update(cert).digest('hex'),
        })),
        id: 'ca-certs',
      };
    }
    default:
      return {};
  }
}

const SECRET_SIG = '4dabf18193072939515e22adb298388d';

/** Replaces the mock monitor's secret envelopes by their values. */
export function unwrapSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(unwrapSecrets);
  if (value && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    if (SECRET_SIG in record && 'value' in record) return unwrapSecrets(record.value);
    return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, unwrapSecrets(v)]));
  }
  return value;
}
