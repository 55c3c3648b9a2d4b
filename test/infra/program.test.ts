/**
 * The Pulumi program under mocks: what it would ask Google Cloud for, checked against the properties the
 * deployment depends on (no public IPs, private egress, exact firewall holes, image by digest, autoscaling
 * and update policy from config, private TLS-only Cloud SQL, no password in metadata, least privilege).
 */
import { parse } from 'yaml';
import { beforeAll, describe, expect, test } from 'vitest';
import { HEALTH_CHECK_RANGES, IAP_RANGE, WORKER_TAG } from '../../infra/network.ts';
import { REQUIRED_APIS } from '../../infra/naming.ts';
import { WORKER_PROJECT_ROLES, WORKER_REPOSITORY_ROLE, WORKER_SECRET_ROLE } from '../../infra/workers.ts';
import {
  CA_NEXT_PEM,
  CA_PEM,
  DIGEST_A,
  DIGEST_B,
  GCP_PROJECT,
  loadConfigWith,
  PASSWORD,
  runProgram,
  ZONES,
  runProgram as run,
  type ProgramRun,
  type Recorded,
} from './pulumi-harness.ts';

const T = {
  api: 'gcp:projects/service:Service',
  network: 'gcp:compute/network:Network',
  subnet: 'gcp:compute/subnetwork:Subnetwork',
  router: 'gcp:compute/router:Router',
  nat: 'gcp:compute/routerNat:RouterNat',
  firewall: 'gcp:compute/firewall:Firewall',
  template: 'gcp:compute/instanceTemplate:InstanceTemplate',
  healthCheck: 'gcp:compute/healthCheck:HealthCheck',
  group: 'gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager',
  autoscaler: 'gcp:compute/regionAutoscaler:RegionAutoscaler',
  sql: 'gcp:sql/databaseInstance:DatabaseInstance',
  sqlUser: 'gcp:sql/user:User',
  connection: 'gcp:servicenetworking/connection:Connection',
  address: 'gcp:compute/globalAddress:GlobalAddress',
  account: 'gcp:serviceaccount/account:Account',
  secretVersion: 'gcp:secretmanager/secretVersion:SecretVersion',
  image: 'docker-build:index:Image',
  repo: 'gcp:artifactregistry/repository:Repository',
} as const;

const BASE = { 'gcp:project': GCP_PROJECT, dbPassword: PASSWORD };
const CUSTOM = {
  ...BASE,
  region: 'europe-west1',
  minReplicas: 2,
  maxReplicas: 7,
  cpuTargetPercent: 72,
  cooldownSeconds: 150,
  scaleInMaxReplicas: 3,
  scaleInWindowSeconds: 900,
  autohealInitialDelaySeconds: 420,
  maxSurge: 4,
  healthPort: 9191,
  dbTier: 'db-custom-2-7680',
  dbDeletionProtection: false,
  zones: ['europe-west1-b', 'europe-west1-c', 'europe-west1-d'],
};

function userData(template: Recorded): string {
  return String(template.inputs.metadata['user-data']);
}

function writtenFile(cloudInit: string, path: string): string {
  const doc = parse(cloudInit, { version: '1.1' }) as { write_files: Array<{ path: string; content: string }> };
  const file = doc.write_files.find((f) => f.path === path);
  if (!file) throw new Error(`cloud-init writes no ${path}`);
  return file.content;
}

let defaults: ProgramRun;
let custom: ProgramRun;

beforeAll(async () => {
  defaults = await runProgram(BASE);
  custom = await runProgram(CUSTOM);
}, 60_000);

describe('network', () => {
  test('no VM can get an external IP', () => {
    for (const run of [defaults, custom]) {
      const templates = run.ofType(T.template);
      expect(templates).toHaveLength(1);
      for (const t of templates) {
        expect(t.inputs.networkInterfaces).toHaveLength(1);
        for (const nic of t.inputs.networkInterfaces) {
          expect(nic.accessConfigs ?? []).toEqual([]);
          expect(nic.ipv6AccessConfigs ?? []).toEqual([]);
        }
      }
      // VMs come only from the template: no stray instances or reserved external addresses.
      expect(run.ofType('gcp:compute/instance:Instance')).toEqual([]);
      expect(run.ofType('gcp:compute/address:Address')).toEqual([]);
    }
  });

  test('the workers subnet has Private Google Access and Cloud NAT covers it', () => {
    const network = defaults.one(T.network);
    expect(network.inputs.autoCreateSubnetworks).toBe(false);
    const subnet = defaults.one(T.subnet);
    expect(subnet.inputs.privateIpGoogleAccess).toBe(true);
    expect(subnet.inputs.network).toBe(`projects/${GCP_PROJECT}/global/networks/${network.name}`);
    const template = defaults.one(T.template);
    expect(template.inputs.networkInterfaces[0].subnetwork).toContain(`/subnetworks/${subnet.name}`);

    const router = defaults.one(T.router);
    expect(router.inputs.network).toBe(subnet.inputs.network);
    const nat = defaults.one(T.nat);
    expect(nat.inputs.router).toBe(router.name);
    expect(nat.inputs.region).toBe(subnet.inputs.region);
    expect(nat.inputs.natIpAllocateOption).toBe('AUTO_ONLY');
    expect(nat.inputs.sourceSubnetworkIpRangesToNat).toBe('LIST_OF_SUBNETWORKS');
    expect(nat.inputs.subnetworks).toEqual([{ name: `${subnet.name}_id`, sourceIpRangesToNats: ['ALL_IP_RANGES'] }]);
  });

  test('ingress is exactly: health checkers to the health port, IAP to SSH', () => {
    for (const [run, port] of [
      [defaults, '8080'],
      [custom, '9191'],
    ] as const) {
      const ingress = run.ofType(T.firewall).filter((f) => (f.inputs.direction ?? 'INGRESS') === 'INGRESS');
      expect(ingress).toHaveLength(2);
      const health = ingress.find((f) => f.name.endsWith('allow-health-checks'));
      const iap = ingress.find((f) => f.name.endsWith('allow-iap-ssh'));
      expect([...health!.inputs.sourceRanges].sort()).toEqual(['130.211.0.0/22', '35.191.0.0/16']);
      expect([...HEALTH_CHECK_RANGES].sort()).toEqual(['130.211.0.0/22', '35.191.0.0/16']);
      expect(health!.inputs.allows).toEqual([{ protocol: 'tcp', ports: [port] }]);
      expect(health!.inputs.targetTags).toEqual([WORKER_TAG]);
      expect(iap!.inputs.sourceRanges).toEqual(['35.235.240.0/20']);
      expect(IAP_RANGE).toBe('35.235.240.0/20');
      expect(iap!.inputs.allows).toEqual([{ protocol: 'tcp', ports: ['22'] }]);
      expect(iap!.inputs.targetTags).toEqual([WORKER_TAG]);
      for (const rule of ingress) {
        expect(rule.inputs.denies ?? []).toEqual([]);
        expect(rule.inputs.sourceTags ?? []).toEqual([]);
        expect(rule.inputs.disabled ?? false).toBe(false);
      }
      // The rules reach the workers because the workers carry the tag.
      expect(run.one(T.template).inputs.tags).toEqual([WORKER_TAG]);
    }
  });

  test('Cloud SQL gets its private IP only after the peering exists', () => {
    const address = defaults.one(T.address);
    expect(address.inputs.purpose).toBe('VPC_PEERING');
    expect(address.inputs.addressType).toBe('INTERNAL');
    const connection = defaults.one(T.connection);
    expect(connection.inputs.service).toBe('servicenetworking.googleapis.com');
    expect(connection.inputs.reservedPeeringRanges).toEqual([address.name]);
    expect(defaults.one(T.sql).dependsOn).toContain(connection.name);
  });
});

describe('database', () => {
  test('Cloud SQL has no public IP, refuses plaintext and is backed up', () => {
    for (const run of [defaults, custom]) {
      const sql = run.one(T.sql);
      const ip = sql.inputs.settings.ipConfiguration;
      expect(ip.ipv4Enabled).toBe(false);
      expect(ip.authorizedNetworks ?? []).toEqual([]);
      expect(ip.privateNetwork).toBe(run.one(T.subnet).inputs.network);
      expect(ip.sslMode).toBe('ENCRYPTED_ONLY');
      expect(sql.inputs.settings.backupConfiguration.enabled).toBe(true);
      expect(sql.inputs.settings.edition).toBe('ENTERPRISE');
    }
    expect(defaults.one(T.sql).inputs.deletionProtection).toBe(true);
    expect(defaults.one(T.sql).inputs.settings.deletionProtectionEnabled).toBe(true);
    expect(custom.one(T.sql).inputs.deletionProtection).toBe(false);
    expect(custom.one(T.sql).inputs.settings.tier).toBe('db-custom-2-7680');
    expect(defaults.one(T.sql).inputs.databaseVersion).toBe('POSTGRES_17');
  });

  test('the password exists only as a secret: in the SQL user and in Secret Manager', () => {
    const user = defaults.one(T.sqlUser);
    expect(user.inputs.password).toBe(PASSWORD);
    expect(user.secretInputs).toContain('password');
    const version = defaults.one(T.secretVersion);
    expect(version.inputs.secretData).toBe(PASSWORD);
    expect(version.secretInputs).toContain('secretData');
    const holders = defaults.resources.filter((r) => JSON.stringify(r.inputs).includes(JSON.stringify(PASSWORD).slice(1, -1)));
    expect(holders.map((r) => r.type).sort()).toEqual([T.secretVersion, T.sqlUser].sort());
  });

  test('no password in the instance metadata', () => {
    const template = defaults.one(T.template);
    const metadata = JSON.stringify(template.inputs.metadata);
    expect(metadata).not.toContain(PASSWORD);
    expect(metadata).not.toContain('S3cret');
    const env = writtenFile(userData(template), '/var/lib/pgqueue/worker.env');
    expect(env).not.toMatch(/^PGPASSWORD=/m);
    expect(env).not.toMatch(/^DATABASE_URL=/m);
    // The VM is told where to read it instead: the exact secret version.
    expect(userData(template)).toContain(`PASSWORD_SECRET='projects/123456/secrets/pgq-db-password/versions/1'`);
  });
});

describe('image and template', () => {
  test('the template runs the image by digest, from the repository the program pushed to', () => {
    const repo = defaults.one(T.repo);
    const image = defaults.one(T.image);
    expect(image.inputs.push).toBe(true);
    expect(image.inputs.platforms).toEqual(['linux/amd64']);
    const ref = `us-central1-docker.pkg.dev/${GCP_PROJECT}/${repo.inputs.repositoryId}/worker@${DIGEST_A}`;
    expect(defaults.outputs.imageRef).toBe(ref);
    const script = writtenFile(userData(defaults.one(T.template)), '/var/lib/pgqueue/run.sh');
    expect(script).toContain(`readonly IMAGE='${ref}'`);
    expect(script).not.toMatch(/:latest/);
    expect(repo.inputs.cleanupPolicies.find((p: any) => p.action === 'KEEP').mostRecentVersions.keepCount).toBe(5);
  });

  test('a new digest changes the template; the same digest changes nothing', async () => {
    const again = await runProgram(BASE, { digest: DIGEST_A });
    expect(again.resources.map((r) => [r.type, r.name, r.inputs])).toEqual(
      defaults.resources.map((r) => [r.type, r.name, r.inputs]),
    );
    const rebuilt = await runProgram(BASE, { digest: DIGEST_B });
    const before = defaults.one(T.template);
    const after = rebuilt.one(T.template);
    expect(userData(after)).not.toBe(userData(before));
    expect(userData(after)).toContain(DIGEST_B);
    expect(userData(after)).not.toContain(DIGEST_A);
    // Only what carries the image changes: the template, and the group that points at it.
    const changed = rebuilt.resources
      .filter((r) => {
        const old = defaults.resources.find((o) => o.type === r.type && o.name === r.name);
        return JSON.stringify(old?.inputs) !== JSON.stringify(r.inputs);
      })
      .map((r) => r.type);
    expect(changed.sort()).toEqual([T.group, T.template].sort());
  }, 60_000);

  test('template: COS stable, shielded VM, named by prefix, dedicated service account', () => {
    const template = defaults.one(T.template);
    expect(template.inputs.namePrefix).toBe('pgq-worker-');
    expect(template.inputs.name).toBeUndefined();
    expect(template.inputs.disks[0].sourceImage).toBe('projects/cos-cloud/global/images/family/cos-stable');
    expect(template.inputs.shieldedInstanceConfig).toEqual({
      enableSecureBoot: true,
      enableVtpm: true,
      enableIntegrityMonitoring: true,
    });
    expect(template.inputs.metadata['gce-container-declaration']).toBeUndefined();
    expect(userData(template).startsWith('#cloud-config\n')).toBe(true);
    const account = defaults.one(T.account);
    expect(template.inputs.serviceAccount.email).toBe(`${account.inputs.accountId}@${GCP_PROJECT}.iam.gserviceaccount.com`);
    // The group follows the template version by its unique link.
    expect(defaults.one(T.group).inputs.versions[0].instanceTemplate).toContain('uniqueId=pgq-worker-');
  });
});

describe('instance group', () => {
  test('autoscaler min/max/target/cooldown/scale-in follow config', () => {
    expect(defaults.one(T.autoscaler).inputs.autoscalingPolicy).toEqual({
      mode: 'ON',
      minReplicas: 1,
      maxReplicas: 8,
      cpuUtilization: { target: 0.6 },
      cooldownPeriod: 120,
      scaleInControl: { maxScaledInReplicas: { fixed: 2 }, timeWindowSec: 600 },
    });
    expect(custom.one(T.autoscaler).inputs.autoscalingPolicy).toEqual({
      mode: 'ON',
      minReplicas: 2,
      maxReplicas: 7,
      cpuUtilization: { target: 0.72 },
      cooldownPeriod: 150,
      scaleInControl: { maxScaledInReplicas: { fixed: 3 }, timeWindowSec: 900 },
    });
    expect(custom.one(T.autoscaler).inputs.target).toBe(`${custom.one(T.group).name}_id`);
    expect(custom.one(T.autoscaler).inputs.region).toBe('europe-west1');
  });

  test('autohealing uses the /healthz check with the configured delay', () => {
    for (const [run, port, delay] of [
      [defaults, 8080, 300],
      [custom, 9191, 420],
    ] as const) {
      const check = run.one(T.healthCheck);
      expect(check.inputs.httpHealthCheck).toEqual({ port, requestPath: '/healthz' });
      const group = run.one(T.group);
      expect(group.inputs.autoHealingPolicies).toEqual({ healthCheck: `${check.name}_id`, initialDelaySec: delay });
      expect(group.inputs.namedPorts).toEqual([{ name: 'http', port }]);
    }
  });

  test('rolling updates are proactive, surge at least one per zone, never unavailable', () => {
    for (const [run, surge] of [
      [defaults, 3],
      [custom, 4],
    ] as const) {
      const group = run.one(T.group);
      const policy = group.inputs.updatePolicy;
      expect(policy.type).toBe('PROACTIVE');
      expect(policy.minimalAction).toBe('REPLACE');
      expect(policy.maxUnavailableFixed).toBe(0);
      expect(policy.maxUnavailablePercent).toBeUndefined();
      expect(policy.maxSurgeFixed).toBe(surge);
      expect(policy.maxSurgeFixed).toBeGreaterThanOrEqual(group.inputs.distributionPolicyZones.length);
    }
    expect(defaults.one(T.group).inputs.distributionPolicyZones).toEqual([...ZONES].sort().slice(0, 3));
    expect(custom.one(T.group).inputs.distributionPolicyZones).toEqual(CUSTOM.zones);
  });
});

describe('identity', () => {
  test('the workers service account holds exactly its roles', () => {
    const email = `${defaults.one(T.account).inputs.accountId}@${GCP_PROJECT}.iam.gserviceaccount.com`;
    const member = `serviceAccount:${email}`;
    const grants = defaults.resources.filter(
      (r) => /iam(member|binding|policy)/i.test(r.type) && JSON.stringify(r.inputs).includes(email),
    );
    const described = grants.map((g) => `${g.type.split(':')[1]} ${g.inputs.role} ${g.inputs.member}`).sort();
    expect(described).toEqual(
      [
        `artifactregistry/repositoryIamMember ${WORKER_REPOSITORY_ROLE} ${member}`,
        ...WORKER_PROJECT_ROLES.map((role) => `projects/iAMMember ${role} ${member}`),
        `secretmanager/secretIamMember ${WORKER_SECRET_ROLE} ${member}`,
      ].sort(),
    );
    expect([...WORKER_PROJECT_ROLES]).toEqual(['roles/logging.logWriter']);
    const repoGrant = grants.find((g) => g.inputs.role === WORKER_REPOSITORY_ROLE)!;
    expect(repoGrant.inputs.repository).toBe(defaults.one(T.repo).inputs.repositoryId);
    const secretGrant = grants.find((g) => g.inputs.role === WORKER_SECRET_ROLE)!;
    expect(secretGrant.inputs.secretId).toBe(`projects/${GCP_PROJECT}/secrets/pgq-db-password`);
    // No IAM grant of any kind at project level besides these.
    expect(defaults.ofType('gcp:projects/iAMBinding:IAMBinding')).toEqual([]);
    expect(defaults.ofType('gcp:projects/iAMPolicy:IAMPolicy')).toEqual([]);
  });

  test('the program enables the APIs it needs and never disables them', () => {
    const apis = defaults.ofType(T.api);
    expect(apis.map((a) => a.inputs.service).sort()).toEqual([...REQUIRED_APIS].sort());
    for (const api of apis) expect(api.inputs.disableOnDestroy).toBe(false);
    expect(defaults.one(T.sql).dependsOn).toContain('api-sqladmin');
    expect(defaults.one(T.template).dependsOn).toContain('api-compute');
  });
});

describe('outputs', () => {
  test('operator needs: digest, group, region, SQL connection and private IP, commands', () => {
    const o = defaults.outputs;
    expect(o.imageDigest).toBe(DIGEST_A);
    expect(o.instanceGroupManager).toBe('pgq-worker-group');
    expect(o.region).toBe('us-central1');
    expect(o.sqlConnectionName).toBe(`${GCP_PROJECT}:us-central1:pgq-db-pg`);
    expect(o.sqlPrivateIp).toBe('10.77.0.3');
    const commands = o.operatorCommands as Record<string, string>;
    expect(commands.tunnel).toContain('scripts/db-tunnel.sh --stack test tunnel');
    expect(commands.observe).toContain('run observe');
    expect(JSON.stringify(o)).not.toContain(PASSWORD);
  });

  test('every CA the instance trusts reaches the VM for verify-ca (the upcoming one too, for rotations)', () => {
    const template = defaults.one(T.template);
    const bundle = writtenFile(userData(template), '/var/lib/pgqueue/server-ca.pem');
    expect(bundle.split('-----BEGIN CERTIFICATE-----')).toHaveLength(3);
    expect(bundle).toContain(CA_PEM);
    expect(bundle).toContain(CA_NEXT_PEM);
    const env = writtenFile(userData(template), '/var/lib/pgqueue/worker.env');
    expect(env).toContain('PGSSLMODE=verify-ca\n');
    expect(env).toContain('PGSSLROOTCERT=/etc/pgqueue/server-ca.pem\n');
    expect(env).toContain('PGHOST=10.77.0.3\n');
  });
});

// infra/index.ts calls loadConfig before it creates anything, so these errors come before any resource.
describe('configuration errors stop the program', () => {
  test('a connection budget larger than max_connections is an error', async () => {
    await expect(loadConfigWith({ ...BASE, dbTier: 'db-f1-micro', maxReplicas: 10 })).rejects.toThrow(
      /dbTier db-f1-micro allows 25 connections, but the workers can need 47/,
    );
  });

  test('a missing password is named with the command that sets it', async () => {
    await expect(loadConfigWith({ 'gcp:project': GCP_PROJECT })).rejects.toThrow(/pulumi config set --secret dbPassword/);
  });
});

describe('the first deploy waits for a healthy VM', () => {
  test('the group is created with minReplicas VMs and waits until they are healthy and current', () => {
    for (const [run, min] of [
      [defaults, 1],
      [custom, 2],
    ] as const) {
      const group = run.one(T.group);
      expect(group.inputs.targetSize).toBe(min);
      expect(group.inputs.waitForInstances).toBe(true);
      expect(group.inputs.waitForInstancesStatus).toBe('UPDATED');
      expect(group.inputs.autoHealingPolicies.healthCheck).toBe(`${run.one(T.healthCheck).name}_id`);
      // From then on the autoscaler owns the size: a later `pulumi up` must not reset it.
      expect(group.options.ignoreChanges).toContain('targetSize');
      expect(run.one(T.autoscaler).inputs.autoscalingPolicy.minReplicas).toBe(min);
    }
  });

  test('the group may take rolloutTimeoutMinutes to create or roll out', async () => {
    expect(defaults.one(T.group).options.customTimeouts).toEqual({ create: '45m', update: '45m', delete: '45m' });
    const longer = await run({ ...BASE, rolloutTimeoutMinutes: 90 });
    expect(longer.one(T.group).options.customTimeouts).toEqual({ create: '90m', update: '90m', delete: '90m' });
    await expect(loadConfigWith({ ...BASE, rolloutTimeoutMinutes: 10, autohealInitialDelaySeconds: 600 })).rejects.toThrow(
      /rolloutTimeoutMinutes \(10\) must be at least 25/,
    );
  }, 60_000);
});

describe('zones', () => {
  test('picked zones are kept after the group exists; configured zones are applied', () => {
    expect(defaults.one(T.group).options.ignoreChanges).toContain('distributionPolicyZones');
    expect(custom.one(T.group).options.ignoreChanges).not.toContain('distributionPolicyZones');
  });
});

describe('CA rotation and TLS', () => {
  test('require needs no CA on the VM', async () => {
    const plain = await run({ ...BASE, dbSslMode: 'require' });
    const data = userData(plain.one(T.template));
    expect(() => writtenFile(data, '/var/lib/pgqueue/server-ca.pem')).toThrow();
    expect(writtenFile(data, '/var/lib/pgqueue/worker.env')).not.toContain('PGSSLROOTCERT');
  }, 60_000);
});

describe('backlog-aware scaling', () => {
  let backlog: ProgramRun;
  beforeAll(async () => {
    backlog = await run({ ...BASE, backlogScaling: true, backlogJobsPerVm: 50, backlogMetricIntervalSeconds: 30 });
  }, 60_000);

  test('off by default: CPU only, no metric writer, no Monitoring API, no publisher env', () => {
    const policy = defaults.one(T.autoscaler).inputs.autoscalingPolicy;
    expect(policy.metrics).toBeUndefined();
    expect(defaults.ofType('gcp:projects/iAMMember:IAMMember').map((g) => g.inputs.role)).toEqual(['roles/logging.logWriter']);
    expect(defaults.ofType(T.api).map((a) => a.inputs.service)).not.toContain('monitoring.googleapis.com');
    expect(writtenFile(userData(defaults.one(T.template)), '/var/lib/pgqueue/worker.env')).not.toContain('BACKLOG_METRIC');
    expect(defaults.outputs.backlogMetric).toBe('off');
  });

  test('on: the autoscaler scales on CPU and on the per-group backlog metric, jobs per VM from config', () => {
    const policy = backlog.one(T.autoscaler).inputs.autoscalingPolicy;
    expect(policy.cpuUtilization).toEqual({ target: 0.6 });
    expect(policy.metrics).toEqual([
      {
        name: 'custom.googleapis.com/pgqueue/jobs_due',
        filter: 'resource.type = "global" AND metric.labels.deployment = "pgq-test"',
        singleInstanceAssignment: 50,
      },
    ]);
    // A per-group metric takes a single-instance assignment, never a utilization target.
    expect(policy.metrics[0].target).toBeUndefined();
  });

  test('on: the workers get roles/monitoring.metricWriter and nothing more, and the Monitoring API is enabled', () => {
    const roles = backlog.ofType('gcp:projects/iAMMember:IAMMember').map((g) => g.inputs.role).sort();
    expect(roles).toEqual(['roles/logging.logWriter', 'roles/monitoring.metricWriter']);
    expect(backlog.ofType(T.api).map((a) => a.inputs.service)).toContain('monitoring.googleapis.com');
  });

  test('on: the workers are told where and how often to write the metric', () => {
    const env = writtenFile(userData(backlog.one(T.template)), '/var/lib/pgqueue/worker.env');
    expect(env).toContain('BACKLOG_METRIC=true\n');
    expect(env).toContain(`BACKLOG_METRIC_PROJECT=${GCP_PROJECT}\n`);
    expect(env).toContain('BACKLOG_METRIC_TYPE=custom.googleapis.com/pgqueue/jobs_due\n');
    expect(env).toContain('BACKLOG_METRIC_DEPLOYMENT=pgq-test\n');
    expect(env).toContain('BACKLOG_METRIC_INTERVAL_S=30\n');
  });

  test('the interval cannot go below 30 s', async () => {
    await expect(loadConfigWith({ ...BASE, backlogScaling: true, backlogMetricIntervalSeconds: 10 })).rejects.toThrow(
      /backlogMetricIntervalSeconds must be a whole number from 30 to 600/,
    );
  });
});
