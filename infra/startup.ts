/**
 * Renders the cloud-init `user-data` that starts the worker container on Container-Optimized OS.
 *
 * Pure: no Pulumi, no I/O. Everything a VM does at boot is decided here, so it is unit-tested byte for byte.
 *
 * Why cloud-init and not `gce-container-declaration`: Google shut the container startup agent down for new
 * VMs on 2026-07-31. The replacement is the pattern Google documents for COS: cloud-init writes a systemd
 * unit to /etc/systemd/system (rebuilt at every boot, and cloud-init runs at every boot on COS) and a script
 * to the stateful partition, then starts the unit.
 *
 * Why the password is fetched at start instead of passed in: instance metadata is readable by anything on the
 * VM and by every principal with compute.instances.get, and it is stored in the instance template. So the
 * template carries only the Secret Manager *version name*; the script reads the value with the VM's service
 * account (metadata-server token, Secret Manager over Private Google Access) into a libpq password file on
 * tmpfs, mounted read-only into the container (PGPASSFILE). Not an environment variable: docker keeps a
 * container's environment in its config on COS's stateful disk. Cloud SQL IAM database authentication was the other
 * option; it was rejected because its OAuth tokens expire after an hour and the worker's contract is the
 * libpq environment, read once at start, which cannot refresh a password for the pool's later connections.
 */
import fs from 'node:fs';
import { stringify } from 'yaml';

/** Name of the systemd unit and of the container (one worker container per VM). */
export const UNIT_NAME = 'pgqueue-worker.service';
export const CONTAINER_NAME = 'pgqueue-worker';
/** On COS's stateful partition: survives reboots, but mounted noexec, so scripts run as `bash <file>`. */
export const STATE_DIR = '/var/lib/pgqueue';
/** tmpfs: the password file never reaches a disk. */
export const RUN_DIR = '/run/pgqueue';
/** Where the container sees the password file (PGPASSFILE points here). */
export const CONTAINER_PASSFILE_PATH = '/run/secrets/pgqueue/pgpass';
/**
 * The uid (and gid) the container runs as: the `node` user of the official Node image, which the Dockerfile's
 * USER names. The run script passes it to docker explicitly and gives the password file to it alone (libpq
 * and node-postgres ignore a password file that group or others can read).
 */
export const CONTAINER_UID = 1000;
export const RUN_SCRIPT_PATH = `${STATE_DIR}/run.sh`;
export const ENV_FILE_PATH = `${STATE_DIR}/worker.env`;
export const SERVER_CA_PATH = `${STATE_DIR}/server-ca.pem`;
export const UNIT_PATH = `/etc/systemd/system/${UNIT_NAME}`;
/** Where the container sees the Cloud SQL server CA (PGSSLROOTCERT points here). */
export const CONTAINER_SERVER_CA_PATH = '/etc/pgqueue/server-ca.pem';

/**
 * Seconds between SIGTERM and SIGKILL on top of the worker's grace period: the worker drains for the grace
 * period and then still has to hand back unfinished jobs, close its pool and exit.
 */
export const STOP_MARGIN_SEC = 5;
/** Seconds systemd waits beyond docker's own stop timeout before it kills `docker start` itself. */
export const SYSTEMD_STOP_MARGIN_SEC = 15;

/** The libpq variables the container must receive (the password comes as a file, through PGPASSFILE). */
export const LIBPQ_ENV_FROM_TEMPLATE = ['PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGSSLMODE', 'PGPASSFILE'] as const;
/** sslmodes that check the server certificate against PGSSLROOTCERT. */
const VERIFYING_SSL_MODES = ['verify-ca', 'verify-full'];
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----/g;

/** The certificates of a PEM bundle, each as its own block (anything between them is dropped). */
export function pemCertificates(pem: string): string[] {
  return pem.match(PEM_CERTIFICATE) ?? [];
}

const IMAGE_BY_DIGEST = /^([a-z0-9.-]+(?::[0-9]+)?)\/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$/;
const SECRET_VERSION = /^projects\/[^/\s']+\/secrets\/[A-Za-z0-9_-]+\/versions\/[A-Za-z0-9_-]+$/;
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** What the VM needs to run the worker. */
export interface WorkerStartupSpec {
  /** The worker image pinned by digest: `HOST/PATH@sha256:<64 hex>`. A tag is refused. */
  readonly image: string;
  /** Non-secret container environment; must hold every libpq variable except PGPASSWORD. */
  readonly env: Readonly<Record<string, string>>;
  /** Secret Manager version holding the database password: `projects/P/secrets/S/versions/V`. */
  readonly passwordSecretVersion: string;
  /** The worker's SHUTDOWN_GRACE_MS; docker's stop timeout is derived from it. */
  readonly shutdownGraceMs: number;
  /** Port of /healthz on the host network; opened in COS's host firewall for Google's health checkers. */
  readonly healthPort: number;
  /**
   * PEM bundle of every CA the Cloud SQL instance trusts, mounted read-only at CONTAINER_SERVER_CA_PATH; required
   * (with at least one certificate) when PGSSLMODE verifies the server.
   */
  readonly serverCaPem?: string;
}

/** Seconds docker waits after SIGTERM before SIGKILL (`--stop-timeout`). */
export function containerStopTimeoutSec(shutdownGraceMs: number): number {
  return Math.ceil(shutdownGraceMs / 1000) + STOP_MARGIN_SEC;
}

/** systemd's TimeoutStopSec for the unit: always longer than docker's stop timeout. */
export function unitStopTimeoutSec(shutdownGraceMs: number): number {
  return containerStopTimeoutSec(shutdownGraceMs) + SYSTEMD_STOP_MARGIN_SEC;
}

/** The registry host of an image reference (what docker-credential-gcr must be configured for). */
export function registryHost(image: string): string {
  const match = IMAGE_BY_DIGEST.exec(image);
  if (!match?.[1]) throw new Error(`image must be referenced by digest (HOST/PATH@sha256:<64 hex>), got "${image}"`);
  return match[1];
}

/**
 * Why a value cannot go into a docker `--env-file`, or undefined when it can.
 *
 * docker reads an env file line by line and takes everything after the first `=` verbatim: no quotes, no
 * escapes, no `$` expansion. So any value is carried exactly, except a line break (it ends the value; a CR
 * before the LF is dropped too), NUL (not representable on the way to execve) and text that is not valid
 * UTF-8 (docker refuses the file). Refusing those three is the whole safety argument: nothing is quoted.
 */
export function envValueProblem(value: string): string | undefined {
  if (/[\n\r]/.test(value)) return 'contains a line break';
  if (value.includes('\0')) return 'contains a NUL character';
  if (LONE_SURROGATE.test(value)) return 'is not valid Unicode (lone surrogate)';
  return undefined;
}

/** Renders a docker env file: sorted `KEY=VALUE` lines, values verbatim (see envValueProblem). */
export function renderEnvFile(env: Readonly<Record<string, string>>): string {
  const keys = Object.keys(env).sort();
  return keys
    .map((key) => {
      if (!ENV_KEY.test(key)) throw new Error(`environment variable name "${key}" is not a valid name`);
      const value = env[key] ?? '';
      const problem = envValueProblem(value);
      if (problem) throw new Error(`environment variable ${key} ${problem}: docker's --env-file cannot carry it`);
      return `${key}=${value}\n`;
    })
    .join('');
}

/** Quotes a string for bash: single quotes, with each embedded quote closed, escaped and reopened. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

function checkSpec(spec: WorkerStartupSpec): void {
  registryHost(spec.image);
  if (!SECRET_VERSION.test(spec.passwordSecretVersion)) {
    throw new Error(
      `passwordSecretVersion must look like projects/P/secrets/S/versions/V, got "${spec.passwordSecretVersion}"`,
    );
  }
  if ('PGPASSWORD' in spec.env || 'DATABASE_URL' in spec.env) {
    throw new Error('the database password must not be in the template environment: it is fetched at start');
  }
  const missing = LIBPQ_ENV_FROM_TEMPLATE.filter((key) => !spec.env[key]);
  if (missing.length > 0) throw new Error(`worker environment lacks ${missing.join(', ')}`);
  if (spec.env.PGPASSFILE !== CONTAINER_PASSFILE_PATH) {
    throw new Error(`PGPASSFILE must be ${CONTAINER_PASSFILE_PATH}, where the VM mounts the password file`);
  }
  const sslMode = spec.env.PGSSLMODE ?? '';
  if (VERIFYING_SSL_MODES.includes(sslMode)) {
    if (spec.env.PGSSLROOTCERT !== CONTAINER_SERVER_CA_PATH) {
      throw new Error(`PGSSLMODE=${sslMode} needs PGSSLROOTCERT=${CONTAINER_SERVER_CA_PATH}, where the VM mounts the server CA`);
    }
    if (pemCertificates(spec.serverCaPem ?? '').length === 0) {
      throw new Error(
        `PGSSLMODE=${sslMode} needs the server CA, but the CA bundle has no certificate: every worker would fail to connect. ` +
          'Check the Cloud SQL instance (gcloud sql ssl server-ca-certs list) or use dbSslMode require',
      );
    }
  } else if (spec.env.PGSSLROOTCERT !== undefined) {
    throw new Error(`PGSSLROOTCERT is set but PGSSLMODE=${sslMode} does not verify the server`);
  }
  if (!Number.isInteger(spec.shutdownGraceMs) || spec.shutdownGraceMs < 0) {
    throw new Error(`shutdownGraceMs must be a non-negative integer, got ${spec.shutdownGraceMs}`);
  }
  if (!Number.isInteger(spec.healthPort) || spec.healthPort < 1 || spec.healthPort > 65535) {
    throw new Error(`healthPort must be a TCP port, got ${spec.healthPort}`);
  }
}

/** The run script as written in infra/worker-run.sh: real bash, linted, with @@NAME@@ placeholders. */
export const RUN_SCRIPT_TEMPLATE = fs.readFileSync(new URL('./worker-run.sh', import.meta.url), 'utf8');

const PLACEHOLDER = /@@([A-Z_]+)@@/g;

/** The values the run script's placeholders stand for (each becomes one single-quoted shell word). */
export function runScriptValues(spec: WorkerStartupSpec): Record<string, string> {
  checkSpec(spec);
  return {
    IMAGE: spec.image,
    REGISTRY: registryHost(spec.image),
    PASSWORD_SECRET: spec.passwordSecretVersion,
    CONTAINER_NAME,
    ENV_FILE: ENV_FILE_PATH,
    RUN_DIR,
    HEALTH_PORT: String(spec.healthPort),
    STOP_TIMEOUT: String(containerStopTimeoutSec(spec.shutdownGraceMs)),
    CONTAINER_USER: `${CONTAINER_UID}:${CONTAINER_UID}`,
    CONTAINER_PASSFILE: CONTAINER_PASSFILE_PATH,
    SERVER_CA: spec.serverCaPem ? SERVER_CA_PATH : '',
    CONTAINER_SERVER_CA: CONTAINER_SERVER_CA_PATH,
  };
}

/**
 * Fills the template's placeholders by substitution, never by writing bash here: each value is quoted as one
 * word, every placeholder must have a value and every value a placeholder.
 */
export function fillTemplate(template: string, values: Readonly<Record<string, string>>): string {
  const used = new Set<string>();
  const filled = template.replace(PLACEHOLDER, (_, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`the run script has a placeholder @@${name}@@ with no value`);
    used.add(name);
    return shellQuote(value);
  });
  const unused = Object.keys(values).filter((name) => !used.has(name));
  if (unused.length > 0) throw new Error(`the run script has no placeholder for ${unused.join(', ')}`);
  return filled;
}

/**
 * The script the unit runs (infra/worker-run.sh with this VM's values). `run.sh serve` (the unit) pulls the
 * image by digest and runs the worker in the foreground; `run.sh exec CMD...` runs a one-off command
 * (add-jobs, observe) in the same image with the same environment, for operators who reach the VM by IAP.
 */
export function renderRunScript(spec: WorkerStartupSpec, template = RUN_SCRIPT_TEMPLATE): string {
  return fillTemplate(template, runScriptValues(spec));
}

/** The systemd unit: restart forever, and stop through `docker stop` so SIGTERM reaches the worker. */
export function renderUnit(spec: WorkerStartupSpec): string {
  checkSpec(spec);
  return `[Unit]
Description=gcpmig-pgqueue worker container
Wants=network-online.target gcr-online.target docker.service
After=network-online.target gcr-online.target docker.service
# Never give up: a VM that cannot start its worker is repaired by autohealing, not left idle by systemd.
StartLimitIntervalSec=0

[Service]
Type=simple
Environment=HOME=${STATE_DIR}
ExecStart=/bin/bash ${RUN_SCRIPT_PATH} serve
ExecStop=/usr/bin/docker stop ${CONTAINER_NAME}
Restart=always
RestartSec=5
TimeoutStopSec=${unitStopTimeoutSec(spec.shutdownGraceMs)}
SuccessExitStatus=143

[Install]
WantedBy=multi-user.target
`;
}

/** The complete `user-data` document (`#cloud-config`). */
export function renderCloudInit(spec: WorkerStartupSpec): string {
  checkSpec(spec);
  const files: Array<{ path: string; permissions: string; owner: string; content: string }> = [
    { path: RUN_SCRIPT_PATH, permissions: '0644', owner: 'root', content: renderRunScript(spec) },
    { path: ENV_FILE_PATH, permissions: '0644', owner: 'root', content: renderEnvFile(spec.env) },
    { path: UNIT_PATH, permissions: '0644', owner: 'root', content: renderUnit(spec) },
  ];
  if (spec.serverCaPem) {
    files.push({ path: SERVER_CA_PATH, permissions: '0644', owner: 'root', content: `${pemCertificates(spec.serverCaPem).join('\n')}\n` });
  }
  const document = {
    write_files: files,
    runcmd: ['systemctl daemon-reload', `systemctl start --no-block ${UNIT_NAME}`],
  };
  // cloud-init parses with PyYAML (YAML 1.1): render for 1.1 so "yes", "on" or 0644 stay strings.
  return `#cloud-config\n${stringify(document, { version: '1.1', lineWidth: 0 })}`;
}

/** The worker's knobs as the stack configures them (names follow the worker's environment contract). */
export interface WorkerEnvInput {
  readonly dbHost: string;
  readonly dbPort: number;
  readonly dbName: string;
  readonly dbUser: string;
  /** libpq sslmode; with `verify-ca` or `verify-full` the server CA is mounted and PGSSLROOTCERT set. */
  readonly dbSslMode: string;
  readonly dbPoolSize: number;
  readonly concurrency: number;
  /** Comma-separated queue names; empty means every queue. */
  readonly queues: string;
  readonly healthPort: number;
  readonly shutdownGraceMs: number;
  readonly logLevel: string;
  readonly migrate: boolean;
  /** More variables for the worker (e.g. the backlog metric's), added as they are. */
  readonly extra?: Readonly<Record<string, string>>;
}

/** The container's environment: no password, only where the VM mounts the password file. */
export function workerEnvironment(input: WorkerEnvInput): Record<string, string> {
  const env: Record<string, string> = {
    PGHOST: input.dbHost,
    PGPORT: String(input.dbPort),
    PGDATABASE: input.dbName,
    PGUSER: input.dbUser,
    PGSSLMODE: input.dbSslMode,
    PGPASSFILE: CONTAINER_PASSFILE_PATH,
    DB_POOL_SIZE: String(input.dbPoolSize),
    WORKER_CONCURRENCY: String(input.concurrency),
    HEALTH_PORT: String(input.healthPort),
    SHUTDOWN_GRACE_MS: String(input.shutdownGraceMs),
    LOG_LEVEL: input.logLevel,
    MIGRATE: input.migrate ? 'true' : 'false',
  };
  if (input.queues !== '') env.WORKER_QUEUES = input.queues;
  if (VERIFYING_SSL_MODES.includes(input.dbSslMode)) env.PGSSLROOTCERT = CONTAINER_SERVER_CA_PATH;
  for (const [key, value] of Object.entries(input.extra ?? {})) {
    if (key in env) throw new Error(`extra worker environment may not override ${key}`);
    env[key] = value;
  }
  return env;
}
