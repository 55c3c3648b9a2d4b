import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseWorkerConfig } from '../worker/config.ts';
import { countByState, enqueue } from '../worker/index.ts';
import { killChildren, openDatabase, root, spawnWorker } from './harness.ts';

afterEach(killChildren);

describe('worker configuration', () => {
  it('reads defaults and every knob', () => {
    const config = parseWorkerConfig({
      DATABASE_URL: 'postgres://u:p@db.internal:6543/jobs?sslmode=require',
      WORKER_CONCURRENCY: '12',
      WORKER_QUEUES: 'emails, reports',
      HEALTH_PORT: '9090',
      SHUTDOWN_GRACE_MS: '5000',
      MIGRATE: 'false',
      LOG_LEVEL: 'debug',
    });
    expect(config).toMatchObject({
      concurrency: 12,
      batchSize: 1000,
      queues: ['emails', 'reports'],
      healthPort: 9090,
      shutdownGraceMs: 5000,
      migrate: false,
      logLevel: 'debug',
      poolSize: 3,
      statementTimeoutMs: 10_000,
      leaseMs: 15_000,
    });
    expect(config.connection).toEqual({ connectionString: 'postgres://u:p@db.internal:6543/jobs', ssl: { rejectUnauthorized: false } });
    const libpq = parseWorkerConfig({ PGHOST: '10.0.0.5', PGPORT: '5433', PGDATABASE: 'q', PGUSER: 'w', PGPASSWORD: 'a b"$c', PGSSLMODE: 'require' });
    expect(libpq.connection).toEqual({ host: '10.0.0.5', port: 5433, database: 'q', user: 'w', password: 'a b"$c', ssl: { rejectUnauthorized: false } });
    expect(parseWorkerConfig({}).healthPort).toBe(8080);
  });

  it.each([
    ['WORKER_CONCURRENCY', 'lots', /^WORKER_CONCURRENCY: expected a whole number from 1 to 1000, got 'lots'$/],
    ['WORKER_CONCURRENCY', '0', /^WORKER_CONCURRENCY: /],
    ['WORKER_QUEUES', 'a,,b', /^WORKER_QUEUES: /],
    ['HEALTH_PORT', '70000', /^HEALTH_PORT: /],
    ['SHUTDOWN_GRACE_MS', '-1', /^SHUTDOWN_GRACE_MS: /],
    ['MIGRATE', 'maybe', /^MIGRATE: expected true or false, got 'maybe'$/],
    ['LOG_LEVEL', 'loud', /^LOG_LEVEL: /],
    ['DB_POOL_SIZE', '0', /^DB_POOL_SIZE: /],
    ['HEALTH_HOST', 'example.com', /^HEALTH_HOST: expected an IP address/],
    ['HEALTH_STALL_MS', '10', /^HEALTH_STALL_MS: /],
    ['DB_POOL_SIZE', '1', /^DB_POOL_SIZE: expected a whole number from 2 to 100, got '1'$/],
    ['DB_STATEMENT_TIMEOUT_MS', '50', /^DB_STATEMENT_TIMEOUT_MS: /],
    ['PGPORT', 'fivefour', /^PGPORT: /],
    ['PGSSLMODE', 'prefer', /^PGSSLMODE: expected one of disable, require, no-verify, verify-ca, verify-full, got 'prefer'$/],
    ['PGSSLMODE', 'verify-full', /^PGSSLROOTCERT: required with PGSSLMODE=verify-full/],
    ['DATABASE_URL', 'not a url', /^DATABASE_URL: not a URL/],
    ['DATABASE_URL', 'mysql://x/y', /^DATABASE_URL: expected the postgres:\/\/ scheme/],
    ['WORKER_LEASE_MS', '10', /^WORKER_LEASE_MS: /],
    ['WORKER_RESCUE_INTERVAL_MS', '20000', /^WORKER_RESCUE_INTERVAL_MS: must be shorter than WORKER_LEASE_MS/],
    ['JOB_RETENTION_HOURS', 'forever', /^JOB_RETENTION_HOURS: /],
  ])('%s=%s is rejected with a message naming it', (name, value, message) => {
    expect(() => parseWorkerConfig({ [name]: value })).toThrow(message);
  });

  it('reads a .env file in the working directory (variables already set win)', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-env-'));
    await fs.writeFile(path.join(dir, '.env'), 'WORKER_CONCURRENCY=from-the-file\nLOG_LEVEL=loud\n');
    // tsx is resolved from the project, since the working directory is elsewhere.
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), path.join(root, 'worker/main.ts')], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info' },
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((resolve) => child.on('exit', resolve));
    expect(code).toBe(1);
    expect(stderr.trim()).toBe("worker: invalid configuration: WORKER_CONCURRENCY: expected a whole number from 1 to 1000, got 'from-the-file'");
  });

  it('the process exits 1 with one line naming the variable, and queued jobs stay queued', async () => {
    const { url, pool } = await openDatabase();
    try {
      await enqueue(pool, { task: 'sleep', payload: { workMs: 0 } });
      for (const [name, value] of [
        ['WORKER_CONCURRENCY', 'many'],
        ['WORKER_TASKS', './no/such/module.js'],
      ] as const) {
        const worker = spawnWorker({ DATABASE_URL: url, [name]: value });
        const { code } = await worker.exited;
        expect(code).toBe(1);
        const lines = worker.stderr().trim().split('\n');
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(new RegExp(`^worker: invalid configuration: ${name}: `));
      }
      expect(await countByState(pool)).toMatchObject({ queued: 1, running: 0, failed: 0 });
    } finally {
      await pool.end();
    }
  });
});
