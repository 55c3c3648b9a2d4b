/**
 * The VM's cloud-init: a pure rendering, parsed with a real YAML parser, and its script run under stand-ins
 * for the tools a COS VM has, with hostile values in the environment and in the password.
 */
import { parse } from 'yaml';
import { afterEach, describe, expect, test } from 'vitest';
import {
  CONTAINER_NAME,
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
import { bootVm, unitSettings, type Vm } from './vm-harness.ts';
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

function spec(overrides: Partial<WorkerStartupSpec> = {}): WorkerStartupSpec {
  return {
    image: IMAGE,
    passwordSecretVersion: SECRET_VERSION,
    shutdownGraceMs: 25_000,
    healthPort: 8080,
    env: workerEnvironment({
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
    }),
    serverCaPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    ...overrides,
  };
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

  test.each([0, 1, 24_999, 25_000, 25_001, 60_000])('stop timeouts cover a %i ms grace period', (grace) => {
    const rendered = files(renderCloudInit(spec({ shutdownGraceMs: grace })));
    const script = rendered.get(RUN_SCRIPT_PATH)!;
    const dockerTimeout = Number(/^readonly STOP_TIMEOUT=(\d+)$/m.exec(script)?.[1]);
    expect(script).toContain('--stop-timeout="$STOP_TIMEOUT"');
    expect(dockerTimeout).toBe(containerStopTimeoutSec(grace));
    expect(dockerTimeout * 1000).toBeGreaterThanOrEqual(grace + 5000);
    const systemdTimeout = Number(unitSettings(rendered.get(UNIT_PATH)!).get('TimeoutStopSec')?.[0]);
    expect(systemdTimeout).toBe(unitStopTimeoutSec(grace));
    expect(systemdTimeout).toBeGreaterThan(dockerTimeout);
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
  ])('a %s password reaches the container exactly, through Secret Manager', async (_, password) => {
    const ran = await execOnce(password, HOSTILE);
    expect(ran.output()).toBe('');
    const run = ran.ran();
    expect(run.env.PGPASSWORD).toBe(password);
    for (const [key, value] of Object.entries(HOSTILE)) expect(run.env[key]).toBe(value);
    expect(run.image).toBe(IMAGE);
    expect(run.cmd).toEqual(['node', 'dist/scripts/observe.js', '--once', '--json']);
    expect(run.flags).toContainEqual(['--network', 'host']);
    expect(run.flags).toContainEqual(['--volume', `${SERVER_CA_PATH}:/etc/pgqueue/server-ca.pem:ro`]);
    const curls = ran.calls().filter((c) => c.tool === 'curl');
    expect(curls).toHaveLength(2);
  });

  test('a password with a line break is refused, not truncated', async () => {
    const ran = await execOnce('first-line\nINJECTED=1');
    expect(ran.output()).toContain('contains a line break or NUL');
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
