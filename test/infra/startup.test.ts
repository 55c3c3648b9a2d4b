/**
 * The VM's cloud-init: a pure rendering, parsed with a real YAML parser, and its script run under stand-ins
 * for the tools a COS VM has, with hostile values in the environment and in the password.
 */
import { createRequire } from 'node:module';
import { parse } from 'yaml';
import { afterEach, describe, expect, test } from 'vitest';
import { GCE_STOP_WINDOW_SEC, GUEST_SHUTDOWN_RESERVE_SEC, MAX_SHUTDOWN_GRACE_MS } from '../../infra/config.ts';
import {
  CONTAINER_NAME,
  CONTAINER_PASSFILE_PATH,
  CONTAINER_UID,
  fillTemplate,
  RUN_SCRIPT_TEMPLATE,
  containerStopTimeoutSec,
  ENV_FILE_PATH,
  LIBPQ_ENV_FROM_TEMPLATE,
  renderCloudInit,
  RUN_SCRIPT_PATH,
  SERVER_CA_PATH,
  UNIT_NAME,
  UNIT_PATH,
  unitStopTimeoutSec,
  workerEnvironment,
  type WorkerStartupSpec,
} from '../../infra/startup.ts';
import { bootVm, unitSettings, type Mount, type Vm } from './vm-harness.ts';

// node-postgres reads PGPASSFILE with this module: the file the VM writes must parse back to the password.
const pgpass = createRequire(import.meta.url)('pgpass/lib/helper.js') as {
  parseLine(line: string): { host: string; port: string; database: string; user: string; password: string } | null;
};
import { parseDockerEnvFile } from './vm-stubs/env-file.mjs';

const IMAGE = `europe-west4-docker.pkg.dev/my-proj/pgq-dev/worker@sha256:${'c0ffee'.repeat(10)}abcd`;
const SECRET_VERSION = 'projects/987654/secrets/pgq-db-password-1a2b/versions/3';

const HOSTILE: Record<string, string> = {
  SPACES: '  leading and trailing  ',
  QUOTES: `it's "quoted" and 'single'`,
  DOLLARS: '$HOME ${PATH} $(id) `id` $$ $1',
  BACKSLASHES: 'C:\\path\\n\\t\\\\',
  HASH_AND_EQUALS: '#not-a-comment a=b==c',
  YAML_LOOKALIKE: '- [a, b]: {c: d} | > &anchor *alias !!str',
  UNICODE: 'zaïre — 日本語 🚀',
  TAB: 'a\tb',
  EMPTY: '',
};

const CA_A = '-----BEGIN CERTIFICATE-----\nMIIBaaaa\n-----END CERTIFICATE-----';
const CA_B = '-----BEGIN CERTIFICATE-----\nMIIBbbbb\n-----END CERTIFICATE-----';

const envInput = {
  dbHost: '10.77.0.3',
  dbPort: 5432,
  dbName: 'pgqueue',
  dbUser: 'pgqueue',
  dbSslMode: 'verify-ca',
  dbPoolSize: 2,
  concurrency: 8,
  queues: '',
  healthPort: 8080,
  shutdownGraceMs: 25_000,
  logLevel: 'info',
  migrate: true,
};

function spec(overrides: Partial<WorkerStartupSpec> = {}): WorkerStartupSpec {
  return {
    image: IMAGE,
    passwordSecretVersion: SECRET_VERSION,
    shutdownGraceMs: 25_000,
    healthPort: 8080,
    env: workerEnvironment(envInput),
    serverCaPem: `${CA_A}\n`,
    ...overrides,
  };
}

/** The password file the container was given, read back the way node-postgres reads it. */
function passwordFrom(mounts: readonly Mount[]): { password: string | undefined; mount: Mount } {
  const mount = mounts.find((m) => m.target === CONTAINER_PASSFILE_PATH);
  if (!mount) throw new Error('no password file mounted');
  const lines = Buffer.from(mount.content, 'base64').toString('utf8').split('\n');
  expect(lines).toHaveLength(2);
  expect(lines[1]).toBe('');
  return { password: pgpass.parseLine(lines[0]!)?.password, mount };
}

interface CloudConfig {
  write_files: Array<{ path: string; permissions: string; owner: string; content: string }>;
  runcmd: string[];
}

function files(cloudInit: string): Map<string, string> {
  const doc = parse(cloudInit, { version: '1.1' }) as CloudConfig;
  return new Map(doc.write_files.map((f) => [f.path, f.content]));
}

describe('rendering', () => {
  test('is a #cloud-config document that a YAML parser reads the same under 1.1 and 1.2', () => {
    const text = renderCloudInit(spec());
    expect(text.split('\n')[0]).toBe('#cloud-config');
    const doc = parse(text, { version: '1.1' }) as CloudConfig;
    expect(parse(text)).toEqual(doc);
    expect(doc.write_files.map((f) => f.path).sort()).toEqual([ENV_FILE_PATH, RUN_SCRIPT_PATH, SERVER_CA_PATH, UNIT_PATH].sort());
    for (const file of doc.write_files) {
      expect(file.permissions).toBe('0644');
      expect(file.owner).toBe('root');
    }
    expect(doc.runcmd).toEqual(['systemctl daemon-reload', `systemctl start --no-block ${UNIT_NAME}`]);
  });

  test('is a pure function of its input', () => {
    expect(renderCloudInit(spec())).toBe(renderCloudInit(spec()));
    const reordered = spec({ env: Object.fromEntries(Object.entries(spec().env).reverse()) });
    expect(renderCloudInit(reordered)).toBe(renderCloudInit(spec()));
  });

  test('the unit restarts forever, runs the script from the stateful partition, stops through docker', () => {
    const unit = unitSettings(files(renderCloudInit(spec())).get(UNIT_PATH)!);
    expect(unit.get('ExecStart')).toEqual([`/bin/bash ${RUN_SCRIPT_PATH} serve`]);
    expect(unit.get('ExecStop')).toEqual([`/usr/bin/docker stop ${CONTAINER_NAME}`]);
    expect(unit.get('Restart')).toEqual(['always']);
    expect(unit.get('StartLimitIntervalSec')).toEqual(['0']);
    expect(unit.get('Environment')).toEqual(['HOME=/var/lib/pgqueue']);
    expect(unit.get('After')?.[0]).toContain('gcr-online.target');
  });

  test.each([0, 1, 24_999, 25_000, 25_001, 45_000])('stop timeouts cover a %i ms grace period', (grace) => {
    const rendered = files(renderCloudInit(spec({ shutdownGraceMs: grace })));
    const script = rendered.get(RUN_SCRIPT_PATH)!;
    const dockerTimeout = Number(/^readonly STOP_TIMEOUT='(\d+)'$/m.exec(script)?.[1]);
    expect(script).toContain('--stop-timeout="$STOP_TIMEOUT"');
    expect(dockerTimeout).toBe(containerStopTimeoutSec(grace));
    expect(dockerTimeout * 1000).toBeGreaterThanOrEqual(grace + 5000);
    const systemdTimeout = Number(unitSettings(rendered.get(UNIT_PATH)!).get('TimeoutStopSec')?.[0]);
    expect(systemdTimeout).toBe(unitStopTimeoutSec(grace));
    expect(systemdTimeout).toBeGreaterThan(dockerTimeout);
  });

  test("the longest grace period still leaves the guest its share of Compute Engine's stop window", () => {
    expect(unitStopTimeoutSec(MAX_SHUTDOWN_GRACE_MS) + GUEST_SHUTDOWN_RESERVE_SEC).toBeLessThanOrEqual(GCE_STOP_WINDOW_SEC);
    expect(GUEST_SHUTDOWN_RESERVE_SEC).toBeGreaterThanOrEqual(20);
  });

  test('the run script is infra/worker-run.sh with values substituted, nothing else', () => {
    const script = files(renderCloudInit(spec())).get(RUN_SCRIPT_PATH)!;
    const pattern = RUN_SCRIPT_TEMPLATE.split(/@@[A-Z_]+@@/).map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    expect(script).toMatch(new RegExp(`^${pattern.join("'[^'\\n]*'")}$`));
    expect(script).toContain(`readonly IMAGE='${IMAGE}'`);
    expect(script).toContain(`readonly CONTAINER_USER='${CONTAINER_UID}:${CONTAINER_UID}'`);
    expect(() => fillTemplate('a=@@A@@ b=@@B@@', { A: '1' })).toThrow(/@@B@@ with no value/);
    expect(() => fillTemplate('a=@@A@@', { A: '1', C: '3' })).toThrow(/no placeholder for C/);
    expect(fillTemplate('x=@@A@@', { A: "it's $(id)" })).toBe(`x='it'\\''s $(id)'`);
  });

  test('the env file carries every libpq variable but the password, and the worker knobs', () => {
    const env = new Map(parseDockerEnvFile(files(renderCloudInit(spec())).get(ENV_FILE_PATH)!));
    for (const key of LIBPQ_ENV_FROM_TEMPLATE) expect(env.get(key)).toBeTruthy();
    expect(env.has('PGPASSWORD')).toBe(false);
    expect(Object.fromEntries(env)).toEqual({
      PGHOST: '10.77.0.3',
      PGPORT: '5432',
      PGDATABASE: 'pgqueue',
      PGUSER: 'pgqueue',
      PGSSLMODE: 'verify-ca',
      PGSSLROOTCERT: '/etc/pgqueue/server-ca.pem',
      PGPASSFILE: CONTAINER_PASSFILE_PATH,
      DB_POOL_SIZE: '2',
      WORKER_CONCURRENCY: '8',
      HEALTH_PORT: '8080',
      SHUTDOWN_GRACE_MS: '25000',
      LOG_LEVEL: 'info',
      MIGRATE: 'true',
    });
  });

  test('values with spaces, quotes, $ and friends arrive byte for byte', () => {
    const env = { ...spec().env, ...HOSTILE };
    const text = renderCloudInit(spec({ env }));
    const parsed = Object.fromEntries(parseDockerEnvFile(files(text).get(ENV_FILE_PATH)!));
    expect(parsed).toEqual(env);
  });

  test.each([
    ['a line feed', 'a\nINJECTED=1'],
    ['a carriage return', 'a\rb'],
    ['a NUL', 'a\0b'],
    ['a lone surrogate', 'a\uD800b'],
  ])('a value with %s is refused, naming the variable', (_, value) => {
    expect(() => renderCloudInit(spec({ env: { ...spec().env, EVIL: value } }))).toThrow(/EVIL/);
  });

  test('refuses what would weaken the deployment', () => {
    expect(() => renderCloudInit(spec({ image: 'europe-west4-docker.pkg.dev/p/r/worker:latest' }))).toThrow(/digest/);
    expect(() => renderCloudInit(spec({ env: { ...spec().env, PGPASSWORD: 'x' } }))).toThrow(/password/);
    expect(() => renderCloudInit(spec({ env: { ...spec().env, DATABASE_URL: 'postgres://u:p@h/d' } }))).toThrow(/password/);
    const { PGHOST: _, ...withoutHost } = spec().env;
    expect(() => renderCloudInit(spec({ env: withoutHost }))).toThrow(/PGHOST/);
    expect(() => renderCloudInit(spec({ passwordSecretVersion: "projects/p/secrets/s'; rm -rf /" }))).toThrow(/passwordSecretVersion/);
    expect(() => renderCloudInit(spec({ env: { ...spec().env, 'BAD NAME': 'x' } }))).toThrow(/BAD NAME/);
    expect(() => renderCloudInit(spec({ env: { ...spec().env, PGPASSFILE: '/tmp/x' } }))).toThrow(/PGPASSFILE/);
  });

  test('verify-ca without a CA certificate is refused at render time, not left to crash-loop on the VM', () => {
    for (const serverCaPem of [undefined, '', 'not a certificate']) {
      expect(() => renderCloudInit(spec({ serverCaPem }))).toThrow(/CA bundle has no certificate/);
    }
    const { PGSSLROOTCERT: _, ...withoutRoot } = spec().env;
    expect(() => renderCloudInit(spec({ env: withoutRoot }))).toThrow(/PGSSLROOTCERT/);
    // require encrypts without checking: no CA needed, none mounted.
    const requireEnv = workerEnvironment({ ...envInput, dbSslMode: 'require' });
    const rendered = files(renderCloudInit(spec({ env: requireEnv, serverCaPem: undefined })));
    expect(rendered.has(SERVER_CA_PATH)).toBe(false);
    expect(rendered.get(RUN_SCRIPT_PATH)).toContain("readonly SERVER_CA=''");
  });

  test('a CA bundle is written certificate by certificate', () => {
    const two = `${CA_A}\n${CA_B}\n`;
    expect(files(renderCloudInit(spec({ serverCaPem: two }))).get(SERVER_CA_PATH)).toBe(two);
  });
});

describe('the script on a simulated VM', () => {
  let vm: Vm | undefined;
  afterEach(() => {
    vm?.dispose();
    vm = undefined;
  });

  async function execOnce(password: Buffer | string, envOverrides: Record<string, string> = {}): Promise<Vm> {
    vm = bootVm({
      cloudInit: renderCloudInit(spec({ env: { ...spec().env, ...envOverrides } })),
      password,
      secretVersion: SECRET_VERSION,
      scriptArgs: ['exec', 'node', 'dist/scripts/observe.js', '--once', '--json'],
    });
    await vm.exited();
    return vm;
  }

  test.each([
    ['plain', 'correct-horse-battery-staple'],
    ['hostile', `p@ss w'o"rd $HOME \`id\` \\ # = ${'x'.repeat(3)} 🚀 `],
    ['base64-looking', 'QUJDRA==+/'],
    ['colons-and-backslashes', 'a:b\\:c\\\\d:*:e\\'],
  ])('a %s password reaches the container exactly, as a password file from Secret Manager', async (_, password) => {
    const ran = await execOnce(password, HOSTILE);
    expect(ran.output()).toBe('');
    const run = ran.ran();
    const { password: read, mount } = passwordFrom(run.mounts);
    expect(read).toBe(password);
    expect(mount.mode).toBe('ro');
    expect(mount.fileMode).toBe(0o600);
    expect(mount.uid).toBe(CONTAINER_UID);
    expect(run.flags).toContainEqual(['--user', `${CONTAINER_UID}:${CONTAINER_UID}`]);
    // Nowhere else: not in the environment, not in docker's arguments (its container config).
    expect(run.env.PGPASSWORD).toBeUndefined();
    expect(run.env.PGPASSFILE).toBe(CONTAINER_PASSFILE_PATH);
    expect(JSON.stringify([run.flags, run.env, run.cmd])).not.toContain(password);
    for (const [key, value] of Object.entries(HOSTILE)) expect(run.env[key]).toBe(value);
    expect(run.image).toBe(IMAGE);
    expect(run.cmd).toEqual(['node', 'dist/scripts/observe.js', '--once', '--json']);
    expect(run.flags).toContainEqual(['--network', 'host']);
    expect(run.flags).toContainEqual(['--volume', `${SERVER_CA_PATH}:/etc/pgqueue/server-ca.pem:ro`]);
    // The exec password file is removed when the command ends.
    expect(run.mounts.find((m) => m.target === CONTAINER_PASSFILE_PATH)?.source).toMatch(/^\/run\/pgqueue\/exec\./);
    const curls = ran.calls().filter((c) => c.tool === 'curl');
    expect(curls).toHaveLength(2);
  });

  test('a password with a line break is refused, not truncated', async () => {
    const ran = await execOnce('first-line\nINJECTED=1');
    expect(ran.output()).toContain('contains a line break or NUL; a password file cannot carry it');
    expect(() => ran.ran()).toThrow();
    expect(await ran.exited()).not.toBe(0);
  });

  test('without an access token nothing runs', async () => {
    vm = bootVm({
      cloudInit: renderCloudInit(spec()),
      password: 'whatever-password',
      secretVersion: 'projects/1/secrets/other/versions/1',
      scriptArgs: ['exec', 'true'],
    });
    expect(await vm.exited()).not.toBe(0);
    expect(() => vm!.ran()).toThrow();
  });
});
