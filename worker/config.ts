import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import type pg from 'pg';
import { parseConnection } from './connection.ts';
import { InvalidInputError } from './errors.ts';
import { BacklogMetricConfigError, parseBacklogMetricConfig, type BacklogMetricConfig } from './monitoring/backlog-publisher.ts';

export { parseConnection } from './connection.ts';

/** Everything a worker runs with, resolved and checked once (from the env or from runWorker()). */
export interface WorkerConfig {
  /** Connection settings for node-postgres (libpq variables or DATABASE_URL). */
  readonly connection: pg.ClientConfig;
  /** Jobs in flight per process. Default: the number of CPUs, right for CPU-bound tasks. */
  readonly concurrency: number;
  /** Queues to take jobs from; null means every queue. */
  readonly queues: readonly string[] | null;
  /** Most jobs one claim statement takes (default 1000); free slots and the prefetch decide how many it asks for. */
  readonly batchSize: number;
  /** Port of /healthz, /readyz and /metrics; 0 picks a free one. */
  readonly healthPort: number;
  /** Address the health server listens on; null for every interface. */
  readonly healthHost: string | null;
  /**
   * /healthz turns unhealthy when the worker's statements have failed this long while its
   * heartbeats get through (a fault of this worker, not of the database).
   */
  readonly healthStallMs: number;
  /** Time running jobs get to finish after SIGTERM before they are handed back. */
  readonly shutdownGraceMs: number;
  /** Apply pending migrations at start. */
  readonly migrate: boolean;
  readonly logLevel: string;
  /**
   * Pool connections (at least 2): claims use all but one, which is kept for failure records,
   * hand-backs and maintenance. One more connection listens and heartbeats.
   */
  readonly poolSize: number;
  /** The server's statement_timeout for claims, settles and outcome records; the client waits a margin longer. */
  readonly statementTimeoutMs: number;
  /** A worker silent for this long is dead and its jobs come back. */
  readonly leaseMs: number;
  /** How often to look for due jobs when no notification arrives. */
  readonly pollMs: number;
  /** How often to look for dead workers and expired jobs. */
  readonly rescueIntervalMs: number;
  /** How long finished jobs stay in pgq.finished_jobs. */
  readonly retentionMs: number;
  /** First retry delay; doubled per attempt, with jitter. */
  readonly retryBaseMs: number;
  /** Longest retry delay. */
  readonly retryMaxMs: number;
  /** Modules that export user tasks. */
  readonly taskModules: readonly string[];
  /** Threads for CPU-bound tasks. */
  readonly cpuThreads: number;
  /** Publishing the backlog to Cloud Monitoring for the autoscaler (BACKLOG_METRIC_*); null when off. */
  readonly backlogMetric: BacklogMetricConfig | null;
}

/** The settings besides the connection, as a caller may give them (any may be left out). */
export type WorkerSettings = Partial<Omit<WorkerConfig, 'connection'>>;

type Env = Record<string, string | undefined>;
type NumberField = 'concurrency' | 'batchSize' | 'healthPort' | 'healthStallMs' | 'shutdownGraceMs' | 'poolSize' | 'statementTimeoutMs' | 'leaseMs' | 'pollMs'
  | 'rescueIntervalMs' | 'retentionMs' | 'retryBaseMs' | 'retryMaxMs' | 'cpuThreads';

const HOUR_MS = 3_600_000;

/**
 * Every number setting: its environment variable, range and default, in one place. The env
 * parser and runWorker() both resolve through this table, so they cannot drift apart.
 */
const NUMBERS: Record<NumberField, { env: string; min: number; max: number; fallback: () => number; integer?: false; envScale?: number }> = {
  concurrency: { env: 'WORKER_CONCURRENCY', min: 1, max: 1000, fallback: () => os.availableParallelism() },
  batchSize: { env: 'WORKER_BATCH_SIZE', min: 1, max: 5000, fallback: () => 1000 },
  healthPort: { env: 'HEALTH_PORT', min: 0, max: 65535, fallback: () => 8080 },
  healthStallMs: { env: 'HEALTH_STALL_MS', min: 1_000, max: HOUR_MS, fallback: () => 60_000 },
  shutdownGraceMs: { env: 'SHUTDOWN_GRACE_MS', min: 0, max: HOUR_MS, fallback: () => 25_000 },
  poolSize: { env: 'DB_POOL_SIZE', min: 2, max: 100, fallback: () => 3 },
  statementTimeoutMs: { env: 'DB_STATEMENT_TIMEOUT_MS', min: 100, max: 600_000, fallback: () => 10_000 },
  leaseMs: { env: 'WORKER_LEASE_MS', min: 1_000, max: HOUR_MS, fallback: () => 15_000 },
  pollMs: { env: 'WORKER_POLL_MS', min: 10, max: 600_000, fallback: () => 1_000 },
  rescueIntervalMs: { env: 'WORKER_RESCUE_INTERVAL_MS', min: 100, max: 600_000, fallback: () => 1_000 },
  // The env gives hours (fractions allowed); ten years at most, so a timestamp cannot overflow.
  retentionMs: { env: 'JOB_RETENTION_HOURS', min: 0, max: 87_600 * HOUR_MS, fallback: () => 168 * HOUR_MS, integer: false, envScale: HOUR_MS },
  retryBaseMs: { env: 'RETRY_BASE_MS', min: 0, max: 86_400_000, fallback: () => 1_000 },
  retryMaxMs: { env: 'RETRY_MAX_MS', min: 0, max: 604_800_000, fallback: () => HOUR_MS },
  cpuThreads: { env: 'WORKER_CPU_THREADS', min: 1, max: 256, fallback: () => os.availableParallelism() },
};

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** How a setting is named in errors: its env variable, or its runWorker() option. */
type Naming = (field: keyof WorkerConfig) => string;
const envName: Naming = (field) =>
  field in NUMBERS
    ? NUMBERS[field as NumberField].env
    : ({ queues: 'WORKER_QUEUES', migrate: 'MIGRATE', logLevel: 'LOG_LEVEL', taskModules: 'WORKER_TASKS', connection: 'DATABASE_URL', healthHost: 'HEALTH_HOST' } as Record<string, string>)[field]!;
const optionName: Naming = (field) => field;

/**
 * Load `.env` from the working directory into process.env, as the original demo did for local
 * runs. Variables already set win, as with every .env loader.
 */
export function loadDotEnv(): void {
  if (fs.existsSync('.env')) process.loadEnvFile('.env');
}

/**
 * Apply the defaults and check every setting and their contradictions. Errors are
 * InvalidInputErrors naming the setting as the caller wrote it (`naming`).
 */
export function resolveWorkerConfig(connection: pg.ClientConfig, settings: WorkerSettings, naming: Naming = optionName): WorkerConfig {
  const numbers = {} as Record<NumberField, number>;
  for (const [field, spec] of Object.entries(NUMBERS) as [NumberField, (typeof NUMBERS)[NumberField]][]) {
    const value = settings[field] ?? spec.fallback();
    const scale = naming === envName ? (spec.envScale ?? 1) : 1;
    const whole = spec.integer !== false;
    if (typeof value !== 'number' || !Number.isFinite(value) || (whole && !Number.isInteger(value)) || value < spec.min || value > spec.max) {
      const unit = scale === HOUR_MS ? ' hours' : '';
      throw new InvalidInputError(
        naming(field),
        `expected ${whole ? 'a whole number' : 'a number'} from ${spec.min / scale} to ${spec.max / scale}${unit}, got ${naming === envName ? `'${value / scale}'` : JSON.stringify(value)}`,
      );
    }
    numbers[field] = value;
  }
  if (numbers.rescueIntervalMs >= numbers.leaseMs) {
    throw new InvalidInputError(naming('rescueIntervalMs'), `must be shorter than ${naming('leaseMs')} (${numbers.leaseMs})`);
  }
  if (numbers.retryMaxMs < numbers.retryBaseMs) {
    throw new InvalidInputError(naming('retryMaxMs'), `must not be less than ${naming('retryBaseMs')} (${numbers.retryBaseMs})`);
  }
  const queues = settings.queues ?? null;
  if (queues !== null && (!Array.isArray(queues) || queues.length === 0 || queues.some((q) => typeof q !== 'string' || q.trim() === ''))) {
    throw new InvalidInputError(naming('queues'), `expected a list of queue names, got ${JSON.stringify(queues)}`);
  }
  const logLevel = (settings.logLevel ?? 'info').toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new InvalidInputError(naming('logLevel'), `expected one of ${LOG_LEVELS.join(', ')}, got '${settings.logLevel}'`);
  }
  const healthHost = settings.healthHost ?? null;
  if (healthHost !== null && (typeof healthHost !== 'string' || (net.isIP(healthHost) === 0 && healthHost !== 'localhost'))) {
    throw new InvalidInputError(naming('healthHost'), `expected an IP address to listen on (0.0.0.0, ::, 127.0.0.1...), got ${JSON.stringify(healthHost)}`);
  }
  const migrate = settings.migrate ?? true;
  if (typeof migrate !== 'boolean') throw new InvalidInputError(naming('migrate'), `expected true or false, got ${JSON.stringify(migrate)}`);
  return { connection, ...numbers, healthHost, queues, logLevel, migrate, taskModules: settings.taskModules ?? [], backlogMetric: settings.backlogMetric ?? null };
}

/** A number from the environment, before range checks; an unparseable one names its variable. */
function envNumber(env: Env, field: NumberField): number | undefined {
  const spec = NUMBERS[field];
  const raw = env[spec.env];
  if (raw === undefined || raw.trim() === '') return undefined;
  const value = Number(raw.trim());
  const whole = spec.integer !== false;
  if (!Number.isFinite(value) || (whole && !Number.isInteger(value))) {
    const unit = spec.envScale === HOUR_MS ? ' hours' : '';
    const scale = spec.envScale ?? 1;
    throw new InvalidInputError(spec.env, `expected ${whole ? 'a whole number' : 'a number'} from ${spec.min / scale} to ${spec.max / scale}${unit}, got '${raw}'`);
  }
  return value * (spec.envScale ?? 1);
}

function envBoolean(env: Env, name: string): boolean | undefined {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '') return undefined;
  if (['true', '1', 'yes', 'on'].includes(raw)) return true;
  if (['false', '0', 'no', 'off'].includes(raw)) return false;
  throw new InvalidInputError(name, `expected true or false, got '${env[name]}'`);
}

/** Parse the worker's environment. Throws InvalidInputError naming the first bad variable. */
export function parseWorkerConfig(env: Env = process.env): WorkerConfig {
  const connection = parseConnection(env);
  const settings: { -readonly [K in keyof WorkerSettings]: WorkerSettings[K] } = {};
  for (const field of Object.keys(NUMBERS) as NumberField[]) settings[field] = envNumber(env, field);
  const rawQueues = env.WORKER_QUEUES?.trim();
  if (rawQueues) {
    const queues = rawQueues.split(',').map((q) => q.trim());
    if (queues.some((q) => q === '')) {
      throw new InvalidInputError('WORKER_QUEUES', `expected a comma-separated list of queue names, got '${env.WORKER_QUEUES}'`);
    }
    settings.queues = queues;
  }
  if (env.LOG_LEVEL?.trim()) settings.logLevel = env.LOG_LEVEL.trim();
  if (env.HEALTH_HOST?.trim()) settings.healthHost = env.HEALTH_HOST.trim();
  settings.migrate = envBoolean(env, 'MIGRATE');
  settings.taskModules = (env.WORKER_TASKS ?? '')
    .split(',')
    .map((m) => m.trim())
    .filter((m) => m !== '');
  try {
    settings.backlogMetric = parseBacklogMetricConfig(env) ?? null;
  } catch (error) {
    if (error instanceof BacklogMetricConfigError) throw new InvalidInputError(error.variable, error.message.slice(error.variable.length + 2));
    throw error;
  }
  return resolveWorkerConfig(connection, settings, envName);
}
