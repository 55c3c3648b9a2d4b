import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { backlogMetricFilter, backlogWorkerEnv, BACKLOG_METRIC_TYPE, METRIC_WRITER_ROLE } from './backlog.ts';
import { WORKER_TAG } from './network.ts';
import { childOptions } from './options.ts';
import { renderCloudInit, workerEnvironment } from './startup.ts';

/**
 * The only project-level roles the workers' service account holds. Everything else it may do is granted on
 * one resource: read the worker repository, read the password secret.
 */
export const WORKER_PROJECT_ROLES = ['roles/logging.logWriter'] as const;
export const WORKER_REPOSITORY_ROLE = 'roles/artifactregistry.reader';
export const WORKER_SECRET_ROLE = 'roles/secretmanager.secretAccessor';
/** Name of the instance group's named port (the health/metrics server). */
export const NAMED_PORT = 'http';
/** Container-Optimized OS, stable channel: each new VM boots the newest stable image. */
export const COS_IMAGE = 'projects/cos-cloud/global/images/family/cos-stable';

export interface WorkersArgs {
  readonly project: pulumi.Input<string>;
  readonly region: pulumi.Input<string>;
  /** Service account id (6-30 characters, unique in the project). */
  readonly accountId: string;
  /** Zones of the regional group. */
  readonly zones: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * The zones were picked by the program, not configured: keep the ones the group was created with, because
   * a change of zones replaces the group (every VM) and a zone briefly not UP would otherwise cause one.
   */
  readonly zonesPinnedAtCreate: boolean;
  readonly subnetSelfLink: pulumi.Input<string>;
  /** The worker image, by digest. */
  readonly imageRef: pulumi.Input<string>;
  /** The Artifact Registry repository the image lives in (the workers get read access to it alone). */
  readonly repository: gcp.artifactregistry.Repository;
  readonly database: {
    readonly host: pulumi.Input<string>;
    readonly name: pulumi.Input<string>;
    readonly user: pulumi.Input<string>;
    /** libpq sslmode the workers connect with. */
    readonly sslMode: string;
    /** PEM bundle of the CAs the server may present, mounted for verify-ca / verify-full. */
    readonly serverCaPem: pulumi.Input<string>;
    /** Secret holding the password (`projects/P/secrets/S`), readable by the workers alone. */
    readonly passwordSecretId: pulumi.Input<string>;
    /** Version the VMs read at start (`projects/P/secrets/S/versions/N`). */
    readonly passwordSecretVersion: pulumi.Input<string>;
  };
  readonly worker: {
    readonly concurrency: number;
    readonly queues: string;
    readonly logLevel: string;
    readonly migrate: boolean;
    readonly shutdownGraceMs: number;
    readonly dbPoolSize: number;
    readonly healthPort: number;
  };
  readonly machineType: string;
  readonly bootDiskSizeGb: number;
  readonly minReplicas: number;
  readonly maxReplicas: number;
  /** Group-average CPU utilisation the autoscaler aims for, 0-1. */
  readonly cpuTarget: number;
  /** Seconds a new VM's CPU is ignored by the autoscaler (boot + pull + start). */
  readonly cooldownSeconds: number;
  readonly scaleInMaxReplicas: number;
  readonly scaleInWindowSeconds: number;
  /** Seconds before autohealing judges a new VM (boot + pull + start + migrations). */
  readonly autohealInitialDelaySeconds: number;
  /** VMs created above the target during a rolling update; at least one per zone. */
  readonly maxSurge: number;
  /** Minutes `pulumi up` waits for the group's VMs to be created or replaced and healthy. */
  readonly rolloutTimeoutMinutes: number;
  /** Scale on the backlog metric too; undefined scales on CPU alone. */
  readonly backlog?: {
    /** Value of the metric's deployment label (unique per stack in a project). */
    readonly deployment: string;
    readonly jobsPerVm: number;
    readonly intervalSeconds: number;
  };
}

/**
 * The worker fleet: its service account and grants, an instance template on COS with no external IP, an HTTP
 * health check, a regional managed instance group with autohealing and proactive rolling updates, and an
 * autoscaler on CPU (and, opted in, on the backlog metric).
 */
export class Workers extends pulumi.ComponentResource {
  readonly serviceAccountEmail: pulumi.Output<string>;
  readonly instanceGroupManagerName: pulumi.Output<string>;
  readonly instanceGroup: pulumi.Output<string>;
  readonly instanceTemplateName: pulumi.Output<string>;

  constructor(name: string, args: WorkersArgs, opts?: pulumi.ComponentResourceOptions) {
    super('gcpmig-pgqueue:infra:Workers', name, {}, opts);
    const child = childOptions(this, opts);

    const account = new gcp.serviceaccount.Account(
      `${name}-sa`,
      { accountId: args.accountId, displayName: 'gcpmig-pgqueue workers' },
      child,
    );
    const member = pulumi.interpolate`serviceAccount:${account.email}`;
    const projectRoles = args.backlog ? [...WORKER_PROJECT_ROLES, METRIC_WRITER_ROLE] : [...WORKER_PROJECT_ROLES];
    const grants: pulumi.Resource[] = projectRoles.map(
      (role) =>
        new gcp.projects.IAMMember(
          `${name}-${role.replace(/^roles\//, '').replace(/\./g, '-')}`,
          { project: args.project, role, member },
          child,
        ),
    );
    grants.push(
      new gcp.artifactregistry.RepositoryIamMember(
        `${name}-image-reader`,
        {
          location: args.repository.location,
          repository: args.repository.name,
          role: WORKER_REPOSITORY_ROLE,
          member,
        },
        child,
      ),
      new gcp.secretmanager.SecretIamMember(
        `${name}-password-reader`,
        { secretId: args.database.passwordSecretId, role: WORKER_SECRET_ROLE, member },
        child,
      ),
    );

    const db = args.database;
    const worker = args.worker;
    const backlog = args.backlog;
    const userData = pulumi
      .all([args.imageRef, db.host, db.name, db.user, db.serverCaPem, db.passwordSecretVersion, args.project])
      .apply(([image, host, dbName, user, serverCaPem, passwordSecretVersion, project]) =>
        renderCloudInit({
          image,
          passwordSecretVersion,
          shutdownGraceMs: worker.shutdownGraceMs,
          healthPort: worker.healthPort,
          serverCaPem: db.sslMode === 'require' ? undefined : serverCaPem,
          env: workerEnvironment({
            dbHost: host,
            dbPort: 5432,
            dbName,
            dbUser: user,
            dbSslMode: db.sslMode,
            dbPoolSize: worker.dbPoolSize,
            concurrency: worker.concurrency,
            queues: worker.queues,
            healthPort: worker.healthPort,
            shutdownGraceMs: worker.shutdownGraceMs,
            logLevel: worker.logLevel,
            migrate: worker.migrate,
            extra: backlog ? backlogWorkerEnv({ project, deployment: backlog.deployment, intervalSeconds: backlog.intervalSeconds }) : {},
          }),
        }),
      );

    const template = new gcp.compute.InstanceTemplate(
      `${name}-template`,
      {
        // Templates are immutable: a unique name per version lets the new one exist beside the old one.
        namePrefix: `${name}-`,
        description: 'gcpmig-pgqueue worker on Container-Optimized OS',
        region: args.region,
        machineType: args.machineType,
        disks: [
          {
            boot: true,
            autoDelete: true,
            sourceImage: COS_IMAGE,
            diskType: 'pd-balanced',
            diskSizeGb: args.bootDiskSizeGb,
          },
        ],
        // No accessConfigs: no external IP. Egress goes through Cloud NAT and Private Google Access.
        networkInterfaces: [{ subnetwork: args.subnetSelfLink }],
        serviceAccount: {
          email: account.email,
          // Access is decided by the account's IAM grants above, not by scopes.
          scopes: ['https://www.googleapis.com/auth/cloud-platform'],
        },
        shieldedInstanceConfig: { enableSecureBoot: true, enableVtpm: true, enableIntegrityMonitoring: true },
        metadata: {
          'user-data': userData,
          'google-logging-enabled': 'true',
          'enable-oslogin': 'TRUE',
          'block-project-ssh-keys': 'TRUE',
        },
        tags: [WORKER_TAG],
        labels: { app: 'gcpmig-pgqueue' },
      },
      // Create the replacement before deleting the template the group still uses.
      { ...childOptions(this, opts, ...grants), deleteBeforeReplace: false },
    );

    const healthCheck = new gcp.compute.HealthCheck(
      `${name}-health`,
      {
        description: 'gcpmig-pgqueue worker /healthz (process alive; not database reachability)',
        checkIntervalSec: 10,
        timeoutSec: 5,
        healthyThreshold: 2,
        unhealthyThreshold: 3,
        httpHealthCheck: { port: worker.healthPort, requestPath: '/healthz' },
      },
      child,
    );

    const group = new gcp.compute.RegionInstanceGroupManager(
      `${name}-group`,
      {
        region: args.region,
        baseInstanceName: `${name}`,
        distributionPolicyZones: args.zones,
        versions: [{ name: 'worker', instanceTemplate: template.selfLinkUnique }],
        namedPorts: [{ name: NAMED_PORT, port: worker.healthPort }],
        autoHealingPolicies: { healthCheck: healthCheck.id, initialDelaySec: args.autohealInitialDelaySeconds },
        updatePolicy: {
          type: 'PROACTIVE',
          minimalAction: 'REPLACE',
          mostDisruptiveAllowedAction: 'REPLACE',
          replacementMethod: 'SUBSTITUTE',
          instanceRedistributionType: 'PROACTIVE',
          maxSurgeFixed: args.maxSurge,
          // Never below the target during an update: new VMs come up before old ones drain.
          maxUnavailableFixed: 0,
        },
        // A repaired VM comes back on the current template, not the one it was created with.
        instanceLifecyclePolicy: { forceUpdateOnRepair: 'YES', defaultActionOnFailure: 'REPAIR' },
        // The first deploy creates minReplicas VMs itself instead of leaving a group of 0 for the autoscaler
        // (created after the group) to fill: with nothing to wait for, `pulumi up` would report success
        // without a single healthy VM. Afterwards the autoscaler owns the size (ignoreChanges below).
        targetSize: args.minReplicas,
        // `pulumi up` returns when every VM runs the current template and is stable — a VM is VERIFYING, not
        // stable, until the autohealing health check reports it HEALTHY — and fails at the timeout otherwise.
        waitForInstances: true,
        waitForInstancesStatus: 'UPDATED',
      },
      {
        ...child,
        ignoreChanges: ['targetSize', ...(args.zonesPinnedAtCreate ? ['distributionPolicyZones'] : [])],
        // The provider's default (15 min) can cut a healthy rollout of a large group short.
        customTimeouts: {
          create: `${args.rolloutTimeoutMinutes}m`,
          update: `${args.rolloutTimeoutMinutes}m`,
          delete: `${args.rolloutTimeoutMinutes}m`,
        },
      },
    );

    new gcp.compute.RegionAutoscaler(
      `${name}-autoscaler`,
      {
        region: args.region,
        target: group.id,
        autoscalingPolicy: {
          mode: 'ON',
          minReplicas: args.minReplicas,
          maxReplicas: args.maxReplicas,
          cooldownPeriod: args.cooldownSeconds,
          cpuUtilization: { target: args.cpuTarget },
          // With several signals the autoscaler follows whichever asks for the most VMs.
          ...(backlog
            ? {
                metrics: [
                  {
                    name: BACKLOG_METRIC_TYPE,
                    filter: backlogMetricFilter(backlog.deployment),
                    singleInstanceAssignment: backlog.jobsPerVm,
                  },
                ],
              }
            : {}),
          scaleInControl: {
            maxScaledInReplicas: { fixed: args.scaleInMaxReplicas },
            timeWindowSec: args.scaleInWindowSeconds,
          },
        },
      },
      child,
    );

    this.serviceAccountEmail = account.email;
    this.instanceGroupManagerName = group.name;
    this.instanceGroup = group.instanceGroup;
    this.instanceTemplateName = template.name;
    this.registerOutputs({
      serviceAccountEmail: this.serviceAccountEmail,
      instanceGroupManagerName: this.instanceGroupManagerName,
      instanceGroup: this.instanceGroup,
      instanceTemplateName: this.instanceTemplateName,
    });
  }
}
