/**
 * The worker started exactly as a VM starts it: the rendered cloud-init's files at their paths, the unit's
 * ExecStart and Environment, the run script fetching the password from (stand-in) Secret Manager, and the
 * image's CMD, WORKDIR and ENV from the Dockerfile, run on the compiled worker against the test Postgres.
 * It must answer /healthz, complete a job, and drain to exit 0 on the unit's ExecStop.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { withClient } from '../database.ts';
import { afterAll, beforeAll, expect, inject, test } from 'vitest';
import { freePort } from '../../scripts/local-postgres.ts';
import { renderCloudInit, workerEnvironment, CONTAINER_NAME, CONTAINER_PASSFILE_PATH, CONTAINER_UID } from '../../infra/startup.ts';
import { enqueue, getJob } from '../../worker/index.ts';
import { runtimeImage } from './dockerfile.ts';
import { bootVm, type Vm } from './vm-harness.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const IMAGE = `us-central1-docker.pkg.dev/test-project/pgq-test/worker@sha256:${'d'.repeat(64)}`;
const SECRET_VERSION = 'projects/123456/secrets/pgq-db-password/versions/1';
/** The role's password: what Secret Manager holds, and what Postgres checks. */
const PASSWORD = `vm 'pa$$' "word" \\ \`x\` #1`;
const GRACE_MS = 4000;

let app: string;
let databaseUrl: string;
let role: string;
let database: string;
let vm: Vm | undefined;



async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}\n${vm?.output() ?? ''}`);
}

beforeAll(async () => {
  // The image's /app: dist compiled as `npm run build` does, migrations beside it, production node_modules.
  app = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-app-'));
  execFileSync(path.join(ROOT, 'node_modules/.bin/tsc'), ['-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', path.join(app, 'dist')], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(app, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'migrations'), path.join(app, 'migrations'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(app, 'node_modules'));

  // A role of its own with a hostile password, so the password's journey is checked by Postgres itself.
  const adminUrl = inject('adminUrl');
  const suffix = randomBytes(4).toString('hex');
  role = `vm_${suffix}`;
  database = `pgq_vm_${suffix}`;
  await withClient(adminUrl, async (c) => {
    const literal = (await c.query<{ q: string }>('select quote_literal($1::text) as q', [PASSWORD])).rows[0]!.q;
    await c.query(`create role ${role} login password ${literal}`);
    await c.query(`create database ${database} owner ${role}`);
  });
  const url = new URL(adminUrl);
  url.username = role;
  url.password = PASSWORD;
  url.pathname = `/${database}`;
  databaseUrl = url.toString();
  // The server checks passwords, so a worker that connects has really read the password file.
  url.password = 'not-the-password';
  await expect(withClient(url.toString(), async () => undefined)).rejects.toThrow(/password authentication failed/);
}, 120_000);

afterAll(async () => {
  vm?.dispose();
  if (app) fs.rmSync(app, { recursive: true, force: true });
  if (database) {
    await withClient(inject('adminUrl'), async (c) => {
      await c.query(`drop database if exists ${database} with (force)`);
      await c.query(`drop role if exists ${role}`);
    });
  }
});

test('a VM starts the worker from cloud-init: /healthz answers, a job completes, stop drains to exit 0', async () => {
  const server = new URL(inject('adminUrl'));
  const healthPort = await freePort();
  const image = runtimeImage();
  const cloudInit = renderCloudInit({
    image: IMAGE,
    passwordSecretVersion: SECRET_VERSION,
    shutdownGraceMs: GRACE_MS,
    healthPort,
    env: workerEnvironment({
      dbHost: server.hostname,
      dbPort: Number(server.port),
      dbName: database,
      dbUser: role,
      // The test server has no TLS; on GCP this is verify-ca with the mounted server CA.
      dbSslMode: 'disable',
      dbPoolSize: 2,
      concurrency: 2,
      queues: '',
      healthPort,
      shutdownGraceMs: GRACE_MS,
      logLevel: 'info',
      migrate: true,
    }),
  });
  vm = bootVm({
    cloudInit,
    password: PASSWORD,
    secretVersion: SECRET_VERSION,
    imageCmd: image.cmd,
    imageWorkdir: app,
    imageEnv: image.env,
  });

  await waitFor('/healthz', async () => ((await fetch(`http://127.0.0.1:${healthPort}/healthz`)).status === 200 ? true : undefined), 60_000);
  await waitFor('/readyz', async () => ((await fetch(`http://127.0.0.1:${healthPort}/readyz`)).status === 200 ? true : undefined), 60_000);

  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  pool.on('error', () => undefined);
  try {
    const { id } = await enqueue(pool, { task: 'sleep', payload: { workMs: 50 } });
    const state = await waitFor('the job to finish', async () => {
      const job = await getJob(pool, id);
      return job && ['succeeded', 'failed', 'expired', 'cancelled'].includes(job.state) ? job.state : undefined;
    }, 30_000);
    expect(state).toBe('succeeded');
  } finally {
    await pool.end();
  }

  // How it was started: the host firewall opened for the health port, registry auth, pull and run by digest.
  const calls = vm.calls().map((c) => `${c.tool} ${Array.isArray(c.args) ? c.args.join(' ') : c.args}`);
  expect(calls).toContain(`iptables -w -A INPUT -p tcp --dport ${healthPort} -j ACCEPT`);
  expect(calls).toContain('docker-credential-gcr configure-docker --registries=us-central1-docker.pkg.dev');
  expect(calls).toContain(`docker pull --quiet ${IMAGE}`);
  const container = vm.container();
  expect(container.image).toBe(IMAGE);
  expect(container.cmd).toEqual([]);
  expect(container.flags).toEqual(
    expect.arrayContaining([
      ['--rm'],
      ['--name', CONTAINER_NAME],
      ['--network', 'host'],
      ['--log-driver', 'gcplogs'],
      ['--stop-signal', 'SIGTERM'],
      ['--stop-timeout', String(Math.ceil(GRACE_MS / 1000) + 5)],
    ]),
  );
  for (const key of ['PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGSSLMODE']) expect(container.env[key]).toBeTruthy();
  // The worker authenticated (the server checks passwords) with no PGPASSWORD: through the password file,
  // which is in neither its environment nor docker's arguments.
  expect(container.env.PGPASSWORD).toBeUndefined();
  expect(container.env.PGPASSFILE).toBe(CONTAINER_PASSFILE_PATH);
  expect(JSON.stringify([container.flags, container.env])).not.toContain(PASSWORD);
  expect(container.flags).toContainEqual(['--user', `${CONTAINER_UID}:${CONTAINER_UID}`]);
  // The worker's own log lines reach Cloud Logging through gcplogs only, not also through the unit's journal.
  expect(vm.output()).not.toMatch(/"message":/);

  // systemctl stop: ExecStop -> docker stop -> SIGTERM -> the worker drains and exits 0.
  const stopped = Date.now();
  await vm.stop();
  expect(await vm.exited()).toBe(0);
  expect(Date.now() - stopped).toBeLessThan(GRACE_MS + 5000);
  expect(vm.output()).toContain('pgqueue: worker container exited with status 0');
}, 180_000);
