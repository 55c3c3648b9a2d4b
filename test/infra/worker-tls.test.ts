/**
 * The worker against a Postgres that serves TLS with a certificate from a test CA made here with openssl, and
 * checks passwords (scram-sha-256): with PGSSLMODE=verify-ca, the test CA as PGSSLROOTCERT and the password in
 * a libpq password file (PGPASSFILE, no PGPASSWORD) — what a VM gives it — it becomes ready over TLS; with
 * another CA it refuses the server; with a wrong or group-readable password file it cannot log in.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest';
import { freePort, startLocalPostgres, type LocalPostgres } from '../../scripts/local-postgres.ts';
import { withClient } from '../database.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ROLE = 'tls_worker';
const PASSWORD = 'a:b\\c scram pässword';
let dir: string;
let server: LocalPostgres;
let children: ChildProcess[] = [];

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A CA (self-signed) and, for the server, a key and a certificate it signed. */
function makeCa(name: string): void {
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=pgqueue test ${name}`, '-keyout', `${name}.key`, '-out', `${name}.pem`);
}

/** libpq's password file line: every field but the password is a wildcard; `\` and `:` escaped. */
function passfile(name: string, password: string, mode: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `*:*:*:*:${password.replace(/\\/g, '\\\\').replace(/:/g, '\\:')}\n`, { mode });
  fs.chmodSync(file, mode);
  return file;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-tls-'));
  fs.chmodSync(dir, 0o755);
  makeCa('ca');
  makeCa('other-ca');
  // Cloud SQL's server certificate does not name the address the workers dial: verify-ca checks the chain only.
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=not-the-host-name', '-keyout', 'server.key', '-out', 'server.csr');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'server.pem');
  fs.writeFileSync(
    path.join(dir, 'pg_hba.conf'),
    ['local all all trust', 'hostssl all all 127.0.0.1/32 scram-sha-256', 'host all all 127.0.0.1/32 scram-sha-256', ''].join('\n'),
  );
  fs.chmodSync(path.join(dir, 'server.key'), 0o600);
  if (process.getuid?.() === 0) {
    // The server runs as the postgres user, which must own its key.
    for (const f of ['server.key', 'server.pem', 'pg_hba.conf']) execFileSync('chown', ['postgres', path.join(dir, f)]);
  }
  server = await startLocalPostgres(path.join(dir, 'pg'), {
    settings: {
      ssl: 'on',
      ssl_cert_file: path.join(dir, 'server.pem'),
      ssl_key_file: path.join(dir, 'server.key'),
      hba_file: path.join(dir, 'pg_hba.conf'),
      password_encryption: 'scram-sha-256',
    },
  });
  await withClient(server.url, async (c) => {
    const literal = (await c.query<{ q: string }>('select quote_literal($1::text) as q', [PASSWORD])).rows[0]!.q;
    await c.query(`create role ${ROLE} login password ${literal}`);
    await c.query(`create database tls_queue owner ${ROLE}`);
  });
}, 120_000);

afterEach(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  children = [];
});

afterAll(async () => {
  await server?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

interface Worker {
  readonly child: ChildProcess;
  readonly port: number;
  output(): string;
  exited: Promise<number | null>;
}

async function startWorker(env: Record<string, string>): Promise<Worker> {
  const port = await freePort();
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG') && k !== 'DATABASE_URL'));
  const child = spawn(process.execPath, ['--import', 'tsx', 'worker/main.ts'], {
    cwd: ROOT,
    env: {
      ...base,
      PGHOST: '127.0.0.1',
      PGPORT: String(server.port),
      PGDATABASE: 'tls_queue',
      PGUSER: ROLE,
      HEALTH_PORT: String(port),
      WORKER_CONCURRENCY: '1',
      SHUTDOWN_GRACE_MS: '1000',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, port, output: () => output, exited };
}

/** Polls until /readyz answers 200, the process exits, or the output matches `failure`. */
async function outcome(worker: Worker, failure: RegExp, timeoutMs = 60_000): Promise<'ready' | 'failed'> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void worker.exited.then(() => (exited = true));
  while (Date.now() < deadline) {
    if (failure.test(worker.output()) || exited) return 'failed';
    const ready = await fetch(`http://127.0.0.1:${worker.port}/readyz`).then((r) => r.ok, () => false);
    if (ready) return 'ready';
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`neither ready nor failed:\n${worker.output()}`);
}

const CERT_FAILURE = /self[- ]signed certificate|unable to (get|verify)|certificate/i;
const AUTH_FAILURE = /password authentication failed|no password|SASL|client password must be a string/i;

test('verify-ca with the test CA and a password file: ready, over TLS, without PGPASSWORD', async () => {
  const worker = await startWorker({
    PGSSLMODE: 'verify-ca',
    PGSSLROOTCERT: path.join(dir, 'ca.pem'),
    PGPASSFILE: passfile('good.pgpass', PASSWORD, 0o600),
  });
  expect(await outcome(worker, /invalid configuration/)).toBe('ready');
  const ssl = await withClient(server.url, async (c) =>
    (await c.query<{ ssl: boolean }>('select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) where a.usename = $1', [ROLE])).rows,
  );
  expect(ssl.length).toBeGreaterThan(0);
  expect(ssl.every((r) => r.ssl)).toBe(true);
  worker.child.kill('SIGTERM');
  expect(await worker.exited).toBe(0);
}, 90_000);

test('verify-ca refuses a server whose certificate another CA signed', async () => {
  const worker = await startWorker({
    PGSSLMODE: 'verify-ca',
    PGSSLROOTCERT: path.join(dir, 'other-ca.pem'),
    PGPASSFILE: passfile('good2.pgpass', PASSWORD, 0o600),
  });
  expect(await outcome(worker, CERT_FAILURE)).toBe('failed');
  expect(worker.output()).toMatch(CERT_FAILURE);
  expect(await fetch(`http://127.0.0.1:${worker.port}/readyz`).then((r) => r.ok, () => false)).toBe(false);
}, 90_000);

test.each([
  ['a wrong password', 'not the password', 0o600],
  ['a group-readable file (ignored, as libpq does)', PASSWORD, 0o640],
])('a password file with %s does not log in', async (_, password, mode) => {
  const worker = await startWorker({
    PGSSLMODE: 'verify-ca',
    PGSSLROOTCERT: path.join(dir, 'ca.pem'),
    PGPASSFILE: passfile(`bad-${mode}.pgpass`, password, mode),
  });
  expect(await outcome(worker, AUTH_FAILURE)).toBe('failed');
}, 90_000);
