/**
 * Stack configuration: every knob, its default, and the checks that turn a bad combination into an error at
 * `pulumi preview` instead of an outage later.
 *
 * `parseConfig` is pure: it takes the raw strings Pulumi holds and returns a typed, validated object. The defaults
 * live here as well as in Pulumi.yaml because the CLI applies Pulumi.yaml's defaults but unit tests (and
 * `setMocks`) do not; a test keeps the two in step.
 */
import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';

/** Every knob of the project namespace, with the default Pulumi.yaml declares for it. */
export const DEFAULTS = {
  region: 'us-central1',
  zones: [] as readonly string[],
  subnetCidr: '10.10.0.0/24',
  privateServicesPrefixLength: 20,
  machineType: 'e2-medium',
  bootDiskSizeGb: 20,
  minReplicas: 1,
  maxReplicas: 8,
  cpuTargetPercent: 60,
  cooldownSeconds: 120,
  scaleInMaxReplicas: 2,
  scaleInWindowSeconds: 600,
  autohealInitialDelaySeconds: 300,
  maxSurge: 3,
  healthPort: 8080,
  workerConcurrency: 8,
  workerQueues: '',
  workerLogLevel: 'info',
  workerMigrate: true,
  shutdownGraceMs: 25000,
  dbPoolSize: 2,
  dbVersion: 'POSTGRES_17',
  dbTier: 'db-g1-small',
  dbEdition: 'ENTERPRISE',
  dbDiskSizeGb: 10,
  dbHighAvailability: false,
  dbMaxConnections: 0,
  dbConnectionHeadroom: 5,
  dbDeletionProtection: true,
  dbBackupStartTime: '03:00',
  dbBackupRetainedCount: 7,
  dbPointInTimeRecovery: true,
  dbName: 'pgqueue',
  dbUser: 'pgqueue',
  dbSslMode: 'verify-ca',
  imageRetainCount: 5,
  rolloutTimeoutMinutes: 45,
  backlogScaling: false,
  backlogJobsPerVm: 20,
  backlogMetricIntervalSeconds: 60,
} as const;

/** Secret knobs: required, no default. */
export const SECRET_KEYS = ['dbPassword'] as const;

export type Knob = keyof typeof DEFAULTS;

/** The validated stack configuration (the password is handed over separately, as a Pulumi secret). */
export interface StackConfig {
  readonly project: string;
  readonly region: string;
  /** Zones of the regional group; empty means "the first three zones Compute Engine lists as UP". */
  readonly zones: readonly string[];
  readonly subnetCidr: string;
  readonly privateServicesPrefixLength: number;
  readonly machineType: string;
  readonly bootDiskSizeGb: number;
  readonly minReplicas: number;
  readonly maxReplicas: number;
  /** The autoscaler's CPU target as a fraction (cpuTargetPercent / 100). */
  readonly cpuTarget: number;
  readonly cooldownSeconds: number;
  readonly scaleInMaxReplicas: number;
  readonly scaleInWindowSeconds: number;
  readonly autohealInitialDelaySeconds: number;
  readonly maxSurge: number;
  readonly healthPort: number;
  readonly workerConcurrency: number;
  readonly workerQueues: string;
  readonly workerLogLevel: string;
  readonly workerMigrate: boolean;
  readonly shutdownGraceMs: number;
  readonly dbPoolSize: number;
  readonly dbVersion: string;
  readonly dbTier: string;
  readonly dbEdition: 'ENTERPRISE' | 'ENTERPRISE_PLUS';
  readonly dbDiskSizeGb: number;
  readonly dbHighAvailability: boolean;
  /** Explicit max_connections flag, or undefined to keep the tier's default. */
  readonly dbMaxConnectionsFlag: number | undefined;
  /** The limit the connection budget was checked against. */
  readonly dbConnectionLimit: number;
  /** Connections the workers can open at the peak (all replicas plus the update surge). */
  readonly dbConnectionsAtPeak: number;
  readonly dbConnectionHeadroom: number;
  readonly dbDeletionProtection: boolean;
  readonly dbBackupStartTime: string;
  readonly dbBackupRetainedCount: number;
  readonly dbPointInTimeRecovery: boolean;
  readonly dbName: string;
  readonly dbUser: string;
  readonly dbSslMode: string;
  readonly imageRetainCount: number;
  /** How long `pulumi up` waits for the group to create or roll out its VMs and report them healthy. */
  readonly rolloutTimeoutMinutes: number;
  /** Scale on the backlog (jobs due now, a Cloud Monitoring metric) as well as on CPU. */
  readonly backlogScaling: boolean;
  /** With backlogScaling: due jobs one VM is meant to take; the autoscaler wants backlog / this many VMs. */
  readonly backlogJobsPerVm: number;
  /** With backlogScaling: seconds between the backlog points the workers write. */
  readonly backlogMetricIntervalSeconds: number;
}

/** Connections Postgres keeps for superusers; Cloud SQL's users are not superusers, so they cannot use them. */
export const SUPERUSER_RESERVED_CONNECTIONS = 3;
/** A regional group spreads over three zones unless told otherwise. */
export const DEFAULT_ZONE_COUNT = 3;
/**
 * Compute Engine gives a VM that its group deletes about 90 s (best effort) to shut down. The worker's grace
 * period plus docker's and systemd's margins (startup.ts) must leave the rest of the guest's shutdown time
 * (docker's daemon, journald, unmounts), so the cap is 45 s: docker kills at 50 s, systemd at 65 s, 25 s spare.
 */
export const MAX_SHUTDOWN_GRACE_MS = 45_000;
/** Seconds Compute Engine waits for a stopping or deleted VM's guest to shut down. */
export const GCE_STOP_WINDOW_SEC = 90;
/** Seconds of that window kept for the guest's own shutdown after the worker's unit has stopped. */
export const GUEST_SHUTDOWN_RESERVE_SEC = 20;
/** Cloud Monitoring takes at most one point per time series per 5 s; the autoscaler needs one a minute or so. */
export const MIN_BACKLOG_INTERVAL_SEC = 30;

const SHARED_CORE_CONNECTIONS: Readonly<Record<string, number>> = { 'db-f1-micro': 25, 'db-g1-small': 50 };

/** Cloud SQL's default max_connections by instance memory (GiB lower bound -> connections). */
const CONNECTIONS_BY_MEMORY: ReadonlyArray<readonly [number, number]> = [
  [120, 1000],
  [60, 800],
  [30, 600],
  [15, 500],
  [7.5, 400],
  [6, 200],
  [3.75, 100],
];

/** Cloud SQL's default max_connections for a tier, or undefined when it cannot be told from the name. */
export function defaultMaxConnections(tier: string): number | undefined {
  const shared = SHARED_CORE_CONNECTIONS[tier];
  if (shared !== undefined) return shared;
  const custom = /^db-custom-(\d+)-(\d+)$/.exec(tier);
  if (!custom?.[2]) return undefined;
  const memoryGiB = Number(custom[2]) / 1024;
  return CONNECTIONS_BY_MEMORY.find(([floor]) => memoryGiB >= floor)?.[1];
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
// verify-full is left out on purpose: Cloud SQL's per-instance server certificate does not name the private IP.
const SSL_MODES = ['require', 'verify-ca'];

/** Raw values as Pulumi holds them: strings (arrays as JSON), undefined when unset. */
export type RawConfig = Readonly<Record<string, string | undefined>>;

/** Thrown with every problem at once, one per line, each naming the knob. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid stack configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Reads and validates the stack configuration. `project` is gcp:project. */
export function parseConfig(raw: RawConfig, project: string | undefined): StackConfig {
  const problems: string[] = [];

  const text = (key: Knob): string => {
    const value = raw[key];
    return value === undefined ? String(DEFAULTS[key]) : value.trim();
  };
  const int = (key: Knob, min: number, max: number, why = ''): number => {
    const value = raw[key];
    const parsed = value === undefined ? Number(DEFAULTS[key]) : Number(value.trim());
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      problems.push(`${key} must be a whole number from ${min} to ${max}${why}, got "${value}"`);
      return Number(DEFAULTS[key]);
    }
    return parsed;
  };
  const bool = (key: Knob): boolean => {
    const value = raw[key];
    if (value === undefined) return Boolean(DEFAULTS[key]);
    if (value === 'true' || value === 'false') return value === 'true';
    problems.push(`${key} must be true or false, got "${value}"`);
    return Boolean(DEFAULTS[key]);
  };
  const oneOf = (key: Knob, allowed: readonly string[]): string => {
    const value = text(key);
    if (!allowed.includes(value)) problems.push(`${key} must be one of ${allowed.join(', ')}, got "${value}"`);
    return value;
  };

  if (!project) {
    problems.push('gcp:project is not set: run `pulumi config set gcp:project <your-project-id>`');
  }

  const region = text('region');
  if (!/^[a-z]+-[a-z]+\d+$/.test(region)) problems.push(`region must be a Compute Engine region like us-central1, got "${region}"`);

  let zones: readonly string[] = [];
  const rawZones = raw.zones;
  if (rawZones !== undefined && rawZones.trim() !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(rawZones);
    } catch {
      parsed = undefined;
    }
    if (!Array.isArray(parsed) || !parsed.every((z): z is string => typeof z === 'string')) {
      problems.push(`zones must be a list of zone names, e.g. pulumi config set --path 'zones[0]' ${region}-a`);
    } else {
      zones = parsed;
      for (const zone of zones) {
        if (!zone.startsWith(`${region}-`)) problems.push(`zone "${zone}" is not in region ${region}`);
      }
      if (new Set(zones).size !== zones.length) problems.push('zones lists a zone twice');
    }
  }

  const subnetCidr = text('subnetCidr');
  if (!/^(\d{1,3}\.){3}\d{1,3}\/(\d|[12]\d|3[0-2])$/.test(subnetCidr)) {
    problems.push(`subnetCidr must be an IPv4 CIDR range like 10.10.0.0/24, got "${subnetCidr}"`);
  }
  const privateServicesPrefixLength = int('privateServicesPrefixLength', 8, 24, ' (Cloud SQL needs at least a /24)');
  const machineType = text('machineType');
  if (!/^[a-z0-9]+-[a-z0-9-]+$/.test(machineType)) problems.push(`machineType "${machineType}" is not a machine type name`);
  const bootDiskSizeGb = int('bootDiskSizeGb', 10, 1000);

  const minReplicas = int('minReplicas', 1, 1000, ' (CPU autoscaling cannot start from zero VMs)');
  const maxReplicas = int('maxReplicas', 1, 1000);
  if (maxReplicas < minReplicas) problems.push(`maxReplicas (${maxReplicas}) must be at least minReplicas (${minReplicas})`);
  const cpuTargetPercent = int('cpuTargetPercent', 10, 95);
  const cooldownSeconds = int('cooldownSeconds', 15, 3600);
  const scaleInMaxReplicas = int('scaleInMaxReplicas', 1, 1000);
  const scaleInWindowSeconds = int('scaleInWindowSeconds', 60, 3600);
  const autohealInitialDelaySeconds = int('autohealInitialDelaySeconds', 60, 3600, ' (it must cover boot, image pull and start)');

  const zoneCount = zones.length > 0 ? zones.length : DEFAULT_ZONE_COUNT;
  const maxSurge = int('maxSurge', 1, 1000, ' (a proactive rolling update with no unavailable VM needs a surge)');
  if (maxSurge < zoneCount) {
    problems.push(
      `maxSurge (${maxSurge}) must be at least the number of zones (${zoneCount}): a regional group's fixed surge is 0 or one VM per zone or more`,
    );
  }

  const healthPort = int('healthPort', 1024, 65535, ' (the container runs as a non-root user)');
  const workerConcurrency = int('workerConcurrency', 1, 10000);
  const workerQueues = text('workerQueues');
  if (!/^[A-Za-z0-9_.:-]*(,[A-Za-z0-9_.:-]+)*$/.test(workerQueues)) {
    problems.push(`workerQueues must be a comma-separated list of queue names (or empty for all), got "${workerQueues}"`);
  }
  const workerLogLevel = oneOf('workerLogLevel', LOG_LEVELS);
  const workerMigrate = bool('workerMigrate');
  const shutdownGraceMs = int(
    'shutdownGraceMs',
    0,
    MAX_SHUTDOWN_GRACE_MS,
    ' (a VM the group deletes has about 90 s to shut down; docker, systemd and the guest need the rest)',
  );
  const dbPoolSize = int('dbPoolSize', 2, 100);

  const dbVersion = text('dbVersion');
  const major = /^POSTGRES_(\d+)$/.exec(dbVersion)?.[1];
  if (!major || Number(major) < 14) problems.push(`dbVersion must be POSTGRES_14 or newer (the queue's SQL needs 14+), got "${dbVersion}"`);
  const dbTier = text('dbTier');
  const dbEdition = oneOf('dbEdition', ['ENTERPRISE', 'ENTERPRISE_PLUS']) as StackConfig['dbEdition'];
  const perfOptimized = dbTier.startsWith('db-perf-optimized-');
  if (dbEdition === 'ENTERPRISE_PLUS' && !perfOptimized) {
    problems.push(`dbTier ${dbTier} is not available in the ENTERPRISE_PLUS edition: use dbEdition ENTERPRISE (or a db-perf-optimized-* tier)`);
  }
  if (dbEdition === 'ENTERPRISE' && perfOptimized) {
    problems.push(`dbTier ${dbTier} needs dbEdition ENTERPRISE_PLUS`);
  }
  const dbDiskSizeGb = int('dbDiskSizeGb', 10, 65536);
  const dbHighAvailability = bool('dbHighAvailability');
  const dbMaxConnections = int('dbMaxConnections', 0, 262143, ' (0 keeps the tier default)');
  const dbConnectionHeadroom = int('dbConnectionHeadroom', 0, 1000);
  const dbDeletionProtection = bool('dbDeletionProtection');
  const dbBackupStartTime = text('dbBackupStartTime');
  if (!/^([01]\d|2[0-3]):[0-5]\d$/.test(dbBackupStartTime)) {
    problems.push(`dbBackupStartTime must be HH:MM (UTC), got "${dbBackupStartTime}"`);
  }
  const dbBackupRetainedCount = int('dbBackupRetainedCount', 1, 365);
  const dbPointInTimeRecovery = bool('dbPointInTimeRecovery');
  const dbName = text('dbName');
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(dbName)) problems.push(`dbName must be a plain lower-case identifier, got "${dbName}"`);
  const dbUser = text('dbUser');
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(dbUser)) problems.push(`dbUser must be a plain lower-case identifier, got "${dbUser}"`);
  const dbSslMode = oneOf('dbSslMode', SSL_MODES);
  const imageRetainCount = int('imageRetainCount', 1, 100);
  const rolloutTimeoutMinutes = int('rolloutTimeoutMinutes', 10, 24 * 60);
  // A rollout is at least one VM booting and passing its autohealing delay; leave room for a second wave.
  const minRollout = Math.ceil((2 * autohealInitialDelaySeconds) / 60) + 5;
  if (rolloutTimeoutMinutes < minRollout) {
    problems.push(
      `rolloutTimeoutMinutes (${rolloutTimeoutMinutes}) must be at least ${minRollout}: twice autohealInitialDelaySeconds ` +
        `(${autohealInitialDelaySeconds}) plus 5 minutes, or a healthy rollout would time out`,
    );
  }
  const backlogScaling = bool('backlogScaling');
  const backlogJobsPerVm = int('backlogJobsPerVm', 1, 1_000_000);
  const backlogMetricIntervalSeconds = int(
    'backlogMetricIntervalSeconds',
    MIN_BACKLOG_INTERVAL_SEC,
    600,
    ' (Cloud Monitoring limits how often a series may be written; the autoscaler wants a point a minute or more often)',
  );

  // The connection budget: every VM runs one worker process holding DB_POOL_SIZE + 1 connections (the +1 is
  // its LISTEN connection), and a rolling update runs maxSurge VMs on top of maxReplicas.
  const perProcess = dbPoolSize + 1;
  const peakVms = maxReplicas + maxSurge;
  const dbConnectionsAtPeak = perProcess * peakVms;
  const tierLimit = defaultMaxConnections(dbTier);
  const dbConnectionLimit = dbMaxConnections > 0 ? dbMaxConnections : (tierLimit ?? 0);
  if (dbMaxConnections === 0 && tierLimit === undefined) {
    problems.push(
      `cannot tell the default max_connections of dbTier ${dbTier}: set dbMaxConnections to the value the database should use`,
    );
  } else {
    const needed = dbConnectionsAtPeak + dbConnectionHeadroom + SUPERUSER_RESERVED_CONNECTIONS;
    if (needed > dbConnectionLimit) {
      const source = dbMaxConnections > 0 ? 'dbMaxConnections' : `dbTier ${dbTier}`;
      problems.push(
        `${source} allows ${dbConnectionLimit} connections, but the workers can need ${needed}: ` +
          `(${maxReplicas} maxReplicas + ${maxSurge} maxSurge) VMs x ${perProcess} connections ` +
          `(dbPoolSize ${dbPoolSize} + 1 listener) + ${dbConnectionHeadroom} dbConnectionHeadroom + ` +
          `${SUPERUSER_RESERVED_CONNECTIONS} reserved for superusers. Lower maxReplicas or dbPoolSize, ` +
          `or choose a larger dbTier or dbMaxConnections`,
      );
    }
  }

  if (problems.length > 0) throw new ConfigError(problems);

  return {
    project: project ?? '',
    region,
    zones,
    subnetCidr,
    privateServicesPrefixLength,
    machineType,
    bootDiskSizeGb,
    minReplicas,
    maxReplicas,
    cpuTarget: cpuTargetPercent / 100,
    cooldownSeconds,
    scaleInMaxReplicas,
    scaleInWindowSeconds,
    autohealInitialDelaySeconds,
    maxSurge,
    healthPort,
    workerConcurrency,
    workerQueues,
    workerLogLevel,
    workerMigrate,
    shutdownGraceMs,
    dbPoolSize,
    dbVersion,
    dbTier,
    dbEdition,
    dbDiskSizeGb,
    dbHighAvailability,
    dbMaxConnectionsFlag: dbMaxConnections > 0 ? dbMaxConnections : undefined,
    dbConnectionLimit,
    dbConnectionsAtPeak,
    dbConnectionHeadroom,
    dbDeletionProtection,
    dbBackupStartTime,
    dbBackupRetainedCount,
    dbPointInTimeRecovery,
    dbName,
    dbUser,
    dbSslMode,
    imageRetainCount,
    rolloutTimeoutMinutes,
    backlogScaling,
    backlogJobsPerVm,
    backlogMetricIntervalSeconds,
  };
}

/** Why a database password cannot be used, or undefined. It travels through a docker env file on the VM. */
export function passwordProblem(password: string | undefined): string | undefined {
  if (password === undefined || password === '') {
    return 'dbPassword is not set: run `pulumi config set --secret dbPassword "$(openssl rand -base64 24)"`';
  }
  if (password.length < 16) return 'dbPassword must be at least 16 characters';
  if (/[\n\r\0]/.test(password)) return 'dbPassword must not contain a line break or NUL';
  return undefined;
}

/** Reads the stack's configuration through Pulumi. The only impure part of this module. */
export function loadConfig(): { config: StackConfig; dbPassword: pulumi.Output<string> } {
  const project = pulumi.getProject();
  const raw: Record<string, string | undefined> = {};
  for (const key of Object.keys(DEFAULTS)) raw[key] = pulumi.runtime.getConfig(`${project}:${key}`);
  const problems: string[] = [];
  let config: StackConfig | undefined;
  try {
    config = parseConfig(raw, gcp.config.project);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    problems.push(...error.problems);
  }
  // Read raw so it can be validated; it becomes a secret before anything else sees it.
  const password = pulumi.runtime.getConfig(`${project}:dbPassword`);
  const passwordIssue = passwordProblem(password);
  if (passwordIssue) problems.push(passwordIssue);
  if (problems.length > 0 || !config || password === undefined) throw new ConfigError(problems);
  return { config, dbPassword: pulumi.secret(password) };
}
