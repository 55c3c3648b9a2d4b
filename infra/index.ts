/**
 * `pulumi up`: a GCP project becomes an autoscaling work-queue cluster. This file only reads the
 * configuration, enables the APIs, wires the components and exports what an operator needs.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { loadConfig } from './config.ts';
import { backlogMetricFilter, BACKLOG_METRIC_TYPE } from './backlog.ts';
import { Database } from './database.ts';
import { WorkerImage } from './image.ts';
import { physicalPrefix, requiredApis } from './naming.ts';
import { Network } from './network.ts';
import { Workers } from './workers.ts';

const { config: c, dbPassword } = loadConfig();
const stack = pulumi.getStack();
const prefix = physicalPrefix(stack);

// Every resource waits for the APIs; disabling them on destroy could break anything else in the project.
const apis = requiredApis({ backlogScaling: c.backlogScaling }).map((api) => new gcp.projects.Service(`api-${api.split('.')[0]}`, { service: api, disableOnDestroy: false }));
const after = { dependsOn: apis };

const network = new Network('pgq-net', {
  region: c.region, subnetCidr: c.subnetCidr, healthPort: c.healthPort, privateServicesPrefixLength: c.privateServicesPrefixLength,
}, after);

const database = new Database('pgq-db', {
  region: c.region, networkId: network.networkId, privateServicesConnection: network.privateServicesConnection,
  databaseVersion: c.dbVersion, tier: c.dbTier, edition: c.dbEdition, diskSizeGb: c.dbDiskSizeGb,
  highAvailability: c.dbHighAvailability, maxConnections: c.dbMaxConnectionsFlag, deletionProtection: c.dbDeletionProtection,
  backupStartTime: c.dbBackupStartTime, backupRetainedCount: c.dbBackupRetainedCount, pointInTimeRecovery: c.dbPointInTimeRecovery,
  databaseName: c.dbName, userName: c.dbUser, password: dbPassword,
}, after);

// The build context is the repository root, relative to where Pulumi runs the program, so the image's
// inputs are the same on every machine.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const image = new WorkerImage('pgq-image', {
  region: c.region, repositoryId: prefix, context: path.relative(process.cwd(), repoRoot) || '.', retainCount: c.imageRetainCount,
}, after);

// Unconfigured zones are picked once, from those UP when the group is created, and then kept (Workers).
const zones = c.zones.length > 0
  ? pulumi.output([...c.zones])
  : gcp.compute.getZonesOutput({ region: c.region, status: 'UP' }, after).apply((z) => [...z.names].sort().slice(0, 3));

const workers = new Workers('pgq-worker', {
  project: c.project, region: c.region, zones, zonesPinnedAtCreate: c.zones.length === 0, accountId: `${prefix}-worker`, subnetSelfLink: network.subnetSelfLink,
  imageRef: image.imageRef, repository: image.repository,
  database: {
    host: database.privateIp, name: database.databaseName, user: database.userName, sslMode: c.dbSslMode,
    serverCaPem: database.serverCaPem, passwordSecretId: database.passwordSecretId, passwordSecretVersion: database.passwordSecretVersion,
  },
  worker: {
    concurrency: c.workerConcurrency, queues: c.workerQueues, logLevel: c.workerLogLevel, migrate: c.workerMigrate,
    shutdownGraceMs: c.shutdownGraceMs, dbPoolSize: c.dbPoolSize, healthPort: c.healthPort,
  },
  machineType: c.machineType, bootDiskSizeGb: c.bootDiskSizeGb, minReplicas: c.minReplicas, maxReplicas: c.maxReplicas,
  cpuTarget: c.cpuTarget, cooldownSeconds: c.cooldownSeconds, scaleInMaxReplicas: c.scaleInMaxReplicas,
  scaleInWindowSeconds: c.scaleInWindowSeconds, autohealInitialDelaySeconds: c.autohealInitialDelaySeconds, maxSurge: c.maxSurge,
  rolloutTimeoutMinutes: c.rolloutTimeoutMinutes,
  backlog: c.backlogScaling
    ? { deployment: prefix, jobsPerVm: c.backlogJobsPerVm, intervalSeconds: c.backlogMetricIntervalSeconds }
    : undefined,
}, after);

export const project = c.project;
export const region = c.region;
export const imageRef = image.imageRef;
export const imageDigest = image.digest;
export const instanceGroupManager = workers.instanceGroupManagerName;
export const instanceGroup = workers.instanceGroup;
export const workerServiceAccount = workers.serviceAccountEmail;
export const backlogMetric = c.backlogScaling ? `${BACKLOG_METRIC_TYPE} (${backlogMetricFilter(prefix)})` : 'off';
export const sqlInstance = database.instanceName;
export const sqlConnectionName = database.connectionName;
export const sqlPrivateIp = database.privateIp;
export const databaseName = database.databaseName;
export const databaseUser = database.userName;
export const passwordSecret = database.passwordSecretId;
export const connectionBudget = `${c.dbConnectionsAtPeak} worker connections at peak + ${c.dbConnectionHeadroom} headroom, of ${c.dbConnectionLimit}`;
const tunnel = `scripts/db-tunnel.sh --stack ${stack}`;
export const operatorCommands = {
  tunnel: `${tunnel} tunnel 15432   # then, in another shell: eval "$(${tunnel} env 15432)" && npm run observe`,
  psql: `${tunnel} psql 15432   # with the tunnel open`,
  observe: `${tunnel} run observe --once`,
  addJobs: `${tunnel} run add-jobs 2000 500 --task burn`,
};
