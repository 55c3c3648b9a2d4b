/**
 * Stack configuration: defaults match Pulumi.yaml's schema, every knob is described, bad combinations are
 * errors a person can act on (the connection budget above all), and the dev stack is valid.
 */
import fs from 'node:fs';
import { parse } from 'yaml';
import { describe, expect, test } from 'vitest';
import {
  ConfigError,
  DEFAULTS,
  defaultMaxConnections,
  parseConfig,
  passwordProblem,
  SECRET_KEYS,
  type RawConfig,
} from '../../infra/config.ts';
import { physicalPrefix } from '../../infra/naming.ts';

interface Schema {
  name: string;
  main: string;
  runtime: { name: string; options: Record<string, unknown> };
  config: Record<string, { type: string; description?: string; default?: unknown; secret?: boolean; items?: { type: string } }>;
}
const project = parse(fs.readFileSync(new URL('../../Pulumi.yaml', import.meta.url), 'utf8')) as Schema;
const dev = parse(fs.readFileSync(new URL('../../Pulumi.dev.yaml', import.meta.url), 'utf8')) as { config: Record<string, unknown> };

function problems(raw: RawConfig): string[] {
  try {
    parseConfig(raw, 'p');
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  return [];
}

describe('Pulumi.yaml', () => {
  test('runs infra/ with tsx as a native ESM program', () => {
    expect(project.name).toBe('gcpmig-pgqueue');
    expect(project.main).toBe('infra/index.ts');
    expect(fs.existsSync(new URL('../../infra/index.ts', import.meta.url))).toBe(true);
    expect(project.runtime).toEqual({ name: 'nodejs', options: { typescript: false, nodeargs: '--import tsx' } });
  });

  test('declares every knob with its type, a description and the same default as the program', () => {
    const declared = Object.keys(project.config).sort();
    expect(declared).toEqual([...Object.keys(DEFAULTS), ...SECRET_KEYS].sort());
    for (const [key, fallback] of Object.entries(DEFAULTS)) {
      const entry = project.config[key]!;
      expect(entry.description?.length, key).toBeGreaterThan(20);
      const type = Array.isArray(fallback) ? 'array' : typeof fallback === 'number' ? 'integer' : typeof fallback;
      expect(entry.type, key).toBe(type);
      expect(entry.default, key).toEqual(fallback);
    }
    expect(project.config.dbPassword).toMatchObject({ type: 'string', secret: true });
    expect(project.config.dbPassword!.default).toBeUndefined();
  });

  test('the defaults are a valid configuration', () => {
    expect(problems({})).toEqual([]);
  });

  test('Pulumi.dev.yaml is valid and only sets declared knobs', () => {
    const raw: Record<string, string> = {};
    for (const [key, value] of Object.entries(dev.config)) {
      const [namespace, name] = key.split(':') as [string, string];
      expect(namespace).toBe('gcpmig-pgqueue');
      expect(Object.keys(DEFAULTS)).toContain(name);
      raw[name] = Array.isArray(value) ? JSON.stringify(value) : String(value);
    }
    expect(problems(raw)).toEqual([]);
    expect(parseConfig(raw, 'p').dbTier).toBe('db-g1-small');
  });
});

describe('the connection budget', () => {
  test('known tiers', () => {
    expect(defaultMaxConnections('db-f1-micro')).toBe(25);
    expect(defaultMaxConnections('db-g1-small')).toBe(50);
    expect(defaultMaxConnections('db-custom-1-3840')).toBe(100);
    expect(defaultMaxConnections('db-custom-2-7680')).toBe(400);
    expect(defaultMaxConnections('db-custom-4-15360')).toBe(500);
    expect(defaultMaxConnections('db-perf-optimized-N-2')).toBeUndefined();
  });

  test('(pool + 1) x (max replicas + surge) + headroom + reserved must fit', () => {
    // db-f1-micro: 25. (3 + 3) VMs x 3 + 5 + 3 = 26: one too many.
    const tooMany = problems({ dbTier: 'db-f1-micro', maxReplicas: '3' });
    expect(tooMany).toHaveLength(1);
    expect(tooMany[0]).toBe(
      'dbTier db-f1-micro allows 25 connections, but the workers can need 26: (3 maxReplicas + 3 maxSurge) VMs x 3 ' +
        'connections (dbPoolSize 2 + 1 listener) + 5 dbConnectionHeadroom + 3 reserved for superusers. Lower ' +
        'maxReplicas or dbPoolSize, or choose a larger dbTier or dbMaxConnections',
    );
    // Exactly at the limit is fine: (2 + 3) x 3 + 5 + 3 = 23; with headroom 7, 25.
    expect(problems({ dbTier: 'db-f1-micro', maxReplicas: '2', dbConnectionHeadroom: '7' })).toEqual([]);
    expect(problems({ dbTier: 'db-f1-micro', maxReplicas: '2', dbConnectionHeadroom: '8' })).toHaveLength(1);
    // The pool size counts per VM, the surge counts too.
    expect(problems({ dbTier: 'db-g1-small', maxReplicas: '8', dbPoolSize: '3' })[0]).toMatch(/allows 50 connections, but the workers can need 52/);
    expect(problems({ dbTier: 'db-g1-small', maxReplicas: '8', maxSurge: '6' })).toEqual([]);
    expect(problems({ dbTier: 'db-g1-small', maxReplicas: '8', maxSurge: '7' })[0]).toMatch(/can need 53/);
  });

  test('an explicit max_connections replaces the tier default, and unknown tiers need one', () => {
    expect(problems({ dbTier: 'db-f1-micro', maxReplicas: '10', dbMaxConnections: '60' })).toEqual([]);
    const config = parseConfig({ dbTier: 'db-f1-micro', maxReplicas: '10', dbMaxConnections: '60' }, 'p');
    expect(config.dbMaxConnectionsFlag).toBe(60);
    expect(config.dbConnectionLimit).toBe(60);
    expect(problems({ dbTier: 'db-perf-optimized-N-2', dbEdition: 'ENTERPRISE_PLUS' })).toEqual([
      'cannot tell the default max_connections of dbTier db-perf-optimized-N-2: set dbMaxConnections to the value the database should use',
    ]);
  });
});

describe('validation messages name the knob', () => {
  test.each([
    [{ maxReplicas: '1', minReplicas: '2' }, 'maxReplicas (1) must be at least minReplicas (2)'],
    [{ minReplicas: '0' }, 'minReplicas must be a whole number from 1 to 1000'],
    [{ cpuTargetPercent: '0.6' }, 'cpuTargetPercent must be a whole number from 10 to 95'],
    [{ maxSurge: '2' }, 'maxSurge (2) must be at least the number of zones (3)'],
    [{ zones: '["us-central1-a","europe-west1-b"]' }, 'zone "europe-west1-b" is not in region us-central1'],
    [{ zones: 'us-central1-a' }, 'zones must be a list of zone names'],
    [{ healthPort: '80' }, 'healthPort must be a whole number from 1024 to 65535 (the container runs as a non-root user)'],
    [{ shutdownGraceMs: '90000' }, 'shutdownGraceMs must be a whole number from 0 to 45000'],
    [{ dbVersion: 'POSTGRES_13' }, 'dbVersion must be POSTGRES_14 or newer'],
    [{ dbEdition: 'ENTERPRISE_PLUS' }, 'dbTier db-g1-small is not available in the ENTERPRISE_PLUS edition'],
    [{ dbSslMode: 'disable' }, 'dbSslMode must be one of require, verify-ca'],
    [{ dbSslMode: 'verify-full' }, 'dbSslMode must be one of require, verify-ca'],
    [{ dbBackupStartTime: '3am' }, 'dbBackupStartTime must be HH:MM (UTC)'],
    [{ dbDeletionProtection: 'yes' }, 'dbDeletionProtection must be true or false'],
    [{ region: 'mars' }, 'region must be a Compute Engine region'],
    [{ workerQueues: 'a, b' }, 'workerQueues must be a comma-separated list'],
    [{ dbUser: 'Robert"); DROP' }, 'dbUser must be a plain lower-case identifier'],
  ] as Array<[RawConfig, string]>)('%j', (raw, message) => {
    const found = problems(raw);
    expect(found.some((p) => p.startsWith(message)), found.join('\n')).toBe(true);
  });

  test('all problems are reported at once', () => {
    expect(problems({ minReplicas: '0', healthPort: '22', dbVersion: 'MYSQL_8_0' })).toHaveLength(3);
  });

  test('gcp:project is required, with the command to set it', () => {
    expect(() => parseConfig({}, undefined)).toThrow('pulumi config set gcp:project <your-project-id>');
  });

  test('passwords', () => {
    expect(passwordProblem(undefined)).toMatch(/pulumi config set --secret dbPassword/);
    expect(passwordProblem('short')).toMatch(/at least 16/);
    expect(passwordProblem('a-long-enough-password\nsecond-line')).toMatch(/line break/);
    expect(passwordProblem(`a long enough p@ss 'with' "quotes" $HOME`)).toBeUndefined();
  });

  test('the typed result', () => {
    const config = parseConfig({ cpuTargetPercent: '72', zones: '["us-central1-b","us-central1-c","us-central1-f"]' }, 'proj');
    expect(config.cpuTarget).toBe(0.72);
    expect(config.zones).toEqual(['us-central1-b', 'us-central1-c', 'us-central1-f']);
    expect(config.project).toBe('proj');
    expect(config.dbMaxConnectionsFlag).toBeUndefined();
    expect(config.dbConnectionsAtPeak).toBe((8 + 3) * 3);
  });
});

describe('names unique per stack', () => {
  test.each([
    ['dev', 'pgq-dev'],
    ['Prod_EU', 'pgq-prod-eu'],
    ['a-very-long-stack-name-indeed', 'pgq-a-very-long-stac'],
    ['---', 'pgq-stack'],
  ])('%s -> %s', (stack, prefix) => {
    expect(physicalPrefix(stack)).toBe(prefix);
    expect(`${prefix}-worker`.length).toBeLessThanOrEqual(30);
  });
});
