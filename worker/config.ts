import fs from 'node:fs';
import os from 'node:os';
import type pg from 'pg';
import { InvalidInputError } from './errors.ts';

/** Everything the worker process reads from its environment, parsed and checked once. */
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
  /** Time running jobs get to finish after SIGTERM before they are handed back. */
  readonly shutdownGraceMs: number;
  /** Apply pending migrations at start. */
  readonly migrate: boolean;
  readonly logLevel: string;
  /** Pool connections for claims, settles and maintenance; one more connection listens. */
  readonly poolSize: number;
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
}

type Env = Record<string, string | undefined>;

/**
 * Load `.env` from the working directory into process.env, as the original demo did for local
 * runs. Variables already set win, as with every .env loader.
 */
export function loadDotEnv(): void {
  if (fs.existsSync('.env')) process.loadEnvFile('.env');
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const SSL_MODES = ['disable', 'require', 'no-verify', 'verify-ca', 'verify-full'];

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw.trim());
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidInputError(name, `expected a whole number from ${min} to ${max}, got '${raw}'`);
  }
  return value;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '') return fallback;
  if (['true', '1', 'yes', 'on'].includes(raw)) return true;
  if (['false', '0', 'no', 'off'].includes(raw)) return false;
  throw new InvalidInputError(name, `expected true or false, got '${env[name]}'`);
}

/**
 * TLS as libpq means it: `require` encrypts without checking the certificate (what Cloud SQL's
 * server certificates need without their CA at hand), `verify-ca`/`verify-full` check it against
 * PGSSLROOTCERT. node-postgres alone would verify on `require` and fail against Cloud SQL.
 */
function sslFor(mode: string, source: string, env: Env): pg.ClientConfig['ssl'] {
  if (!SSL_MODES.includes(mode)) {
    throw new InvalidInputError(source, `expected one of ${SSL_MODES.join(', ')}, got '${mode}'`);
  }
  if (mode === 'disable') return false;
  if (mode === 'require' || mode === 'no-verify') return { rejectUnauthorized: false };
  const rootCert = env.PGSSLROOTCERT;
  if (!rootCert) throw new InvalidInputError('PGSSLROOTCERT', `required with ${source}=${mode}: the CA certificate file`);
  let ca: string;
  try {
    ca = fs.readFileSync(rootCert, 'utf8');
  } catch (error) {
    throw new InvalidInputError('PGSSLROOTCERT', `cannot read '${rootCert}': ${(error as Error).message}`);
  }
  return mode === 'verify-ca' ? { ca, checkServerIdentity: () => undefined } : { ca };
}

/** Connection settings from DATABASE_URL, or else from the libpq variables. */
export function parseConnection(env: Env): pg.ClientConfig {
  const url = env.DATABASE_URL?.trim();
  if (url) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new InvalidInputError('DATABASE_URL', 'not a URL (expected postgres://user:password@host:port/database)');
    }
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
      throw new InvalidInputError('DATABASE_URL', `expected the postgres:// scheme, got '${parsed.protocol}//'`);
    }
    const sslmode = parsed.searchParams.get('sslmode');
    parsed.searchParams.delete('sslmode');
    const config: pg.ClientConfig = { connectionString: parsed.toString() };
    const mode = sslmode ?? env.PGSSLMODE;
    if (mode) config.ssl = sslFor(mode, sslmode ? 'DATABASE_URL sslmode' : 'PGSSLMODE', env);
    return config;
  }
  const config: pg.ClientConfig = {};
  if (env.PGHOST !== undefined) config.host = env.PGHOST;
  if (env.PGPORT !== undefined) config.port = integer(env, 'PGPORT', 5432, 1, 65535);
  if (env.PGDATABASE !== undefined) config.database = env.PGDATABASE;
  if (env.PGUSER !== undefined) config.user = env.PGUSER;
  if (env.PGPASSWORD !== undefined) config.password = env.PGPASSWORD;
  config.ssl = env.PGSSLMODE ? sslFor(env.PGSSLMODE, 'PGSSLMODE', env) : false;
  return config;
}

/** Parse the worker's environment. Throws InvalidInputError naming the first bad variable. */
export function parseWorkerConfig(env: Env = process.env): WorkerConfig {
  const connection = parseConnection(env);
  const cpus = os.availableParallelism();
  const concurrency = integer(env, 'WORKER_CONCURRENCY', cpus, 1, 1000);
  let queues: string[] | null = null;
  const rawQueues = env.WORKER_QUEUES?.trim();
  if (rawQueues) {
    queues = rawQueues.split(',').map((q) => q.trim());
    if (queues.some((q) => q === '')) {
      throw new InvalidInputError('WORKER_QUEUES', `expected a comma-separated list of queue names, got '${env.WORKER_QUEUES}'`);
    }
  }
  const logLevel = (env.LOG_LEVEL?.trim() || 'info').toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new InvalidInputError('LOG_LEVEL', `expected one of ${LOG_LEVELS.join(', ')}, got '${env.LOG_LEVEL}'`);
  }
  const leaseMs = integer(env, 'WORKER_LEASE_MS', 15_000, 1_000, 3_600_000);
  const pollMs = integer(env, 'WORKER_POLL_MS', 1_000, 10, 600_000);
  const rescueIntervalMs = integer(env, 'WORKER_RESCUE_INTERVAL_MS', 1_000, 100, 600_000);
  if (rescueIntervalMs >= leaseMs) {
    throw new InvalidInputError('WORKER_RESCUE_INTERVAL_MS', `must be shorter than WORKER_LEASE_MS (${leaseMs})`);
  }
  const retryBaseMs = integer(env, 'RETRY_BASE_MS', 1_000, 0, 86_400_000);
  const retryMaxMs = integer(env, 'RETRY_MAX_MS', 3_600_000, 0, 604_800_000);
  if (retryMaxMs < retryBaseMs) throw new InvalidInputError('RETRY_MAX_MS', `must not be less than RETRY_BASE_MS (${retryBaseMs})`);
  const retentionHours = Number(env.JOB_RETENTION_HOURS?.trim() || '168');
  if (!Number.isFinite(retentionHours) || retentionHours < 0) {
    throw new InvalidInputError('JOB_RETENTION_HOURS', `expected a number of hours (0 or more), got '${env.JOB_RETENTION_HOURS}'`);
  }
  const taskModules = (env.WORKER_TASKS ?? '')
    .split(',')
    .map((m) => m.trim())
    .filter((m) => m !== '');
  return {
    connection,
    concurrency,
    queues,
    batchSize: integer(env, 'WORKER_BATCH_SIZE', 1000, 1, 5000),
    healthPort: integer(env, 'HEALTH_PORT', 8080, 0, 65535),
    shutdownGraceMs: integer(env, 'SHUTDOWN_GRACE_MS', 25_000, 0, 3_600_000),
    migrate: boolean(env, 'MIGRATE', true),
    logLevel,
    poolSize: integer(env, 'DB_POOL_SIZE', 2, 1, 100),
    leaseMs,
    pollMs,
    rescueIntervalMs,
    retentionMs: retentionHours * 3_600_000,
    retryBaseMs,
    retryMaxMs,
    taskModules,
    cpuThreads: integer(env, 'WORKER_CPU_THREADS', cpus, 1, 256),
  };
}
