/**
 * The bad-input catalogue: what a careless or hostile caller can hand the queue, the worker's
 * environment and its endpoints, and what must come back — a clear error naming the field, and
 * nothing already queued lost; values that look like SQL stored as the text they are; nothing
 * secret shown by an endpoint or written to the log at info level.
 */
import path from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../scripts/local-postgres.ts';
import { countByState, enqueue, enqueueMany, getJob, InvalidInputError, parseWorkerConfig } from '../worker/index.ts';
import type { JobSpec } from '../worker/types.ts';
import { drain, killChildren, manualWorker, openDatabase, root, spawnWorker, waitFor } from './harness.ts';

let url: string;
let pool: pg.Pool;

beforeAll(async () => {
  ({ url, pool } = await openDatabase());
});
afterEach(killChildren);
afterAll(() => pool.end());

const INJECTIONS = [
  `x'); drop table pgq.jobs; --`,
  `"; delete from pgq.workers; --`,
  `' or '1'='1`,
  `$1; select pg_sleep(10)`,
  `pgq_jobs'); notify pgq_jobs, 'x`,
  `\\'; truncate pgq.finished_jobs; --`,
];

describe('values that look like SQL are stored and run as the text they are', () => {
  it('in queue and task names, keys and payloads, through enqueue, a queue-filtered worker and the history', async () => {
    const ran: { task: string; payload: unknown }[] = [];
    for (const evil of INJECTIONS) {
      const { id } = await enqueue(pool, { task: evil, queue: evil, idempotencyKey: evil, payload: { evil, [evil]: [evil] } });
      const w = await manualWorker(pool, {
        queues: [evil],
        tasks: { [evil]: (payload, ctx) => void ran.push({ task: ctx.job.task, payload }) },
      });
      try {
        await drain(w.worker);
      } finally {
        await w.close();
      }
      const job = await getJob(pool, id);
      expect(job).toMatchObject({ state: 'succeeded', task: evil, queue: evil, idempotencyKey: evil, payload: { evil, [evil]: [evil] } });
      // The same key again is the same job.
      expect(await enqueue(pool, { task: evil, queue: evil, idempotencyKey: evil })).toEqual({ id, created: false });
    }
    expect(ran.map((r) => r.task)).toEqual(INJECTIONS);
    const { rows } = await pool.query(`select count(*)::int as n from information_schema.tables where table_schema = 'pgq'`);
    expect(rows[0].n).toBe(7);
  });
});

describe('bad jobs are refused naming the field, and what was queued stays queued', () => {
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  let deep: unknown = {};
  for (let i = 0; i < 20_000; i++) deep = { d: deep };
  const cases: [string, JobSpec, RegExp][] = [
    ['no task', { task: '' }, /^task: /],
    ['a task that is not a string', { task: 5 as unknown as string }, /^task: /],
    ['a task name of 201 characters', { task: 'x'.repeat(201) }, /^task: /],
    ['a NUL in the task name', { task: 'a\0b' }, /^task: /],
    ['a lone surrogate in the queue name', { task: 't', queue: 'q\uD800' }, /^queue: /],
    ['a NUL in the key', { task: 't', idempotencyKey: 'k\0' }, /^idempotencyKey: /],
    ['a function payload', { task: 't', payload: () => 1 }, /^payload: not JSON-serialisable/],
    ['a BigInt in the payload', { task: 't', payload: { n: 10n } }, /^payload: not JSON-serialisable/],
    ['a circular payload', { task: 't', payload: circular }, /^payload: not JSON-serialisable/],
    ['a payload nested 20,000 deep', { task: 't', payload: deep }, /^payload: not JSON-serialisable/],
    ['a payload over 1 MiB', { task: 't', payload: { blob: 'x'.repeat(1024 * 1024) } }, /^payload: \d+ bytes of JSON exceeds/],
    ['a lone surrogate in the payload', { task: 't', payload: { s: 'emoji cut \uD83D' } }, /^payload: /],
    ['a NUL in a payload string', { task: 't', payload: { s: 'a\u0000b' } }, /^payload: /],
    ['a NUL in a payload key', { task: 't', payload: { ['k\0']: 1 } }, /^payload: /],
    ['a priority beyond 32 bits', { task: 't', priority: 2 ** 31 }, /^priority: /],
    ['maxAttempts 0', { task: 't', maxAttempts: 0 }, /^maxAttempts: /],
    ['an at-most-once job with retries', { task: 't', delivery: 'at_most_once', maxAttempts: 3 }, /^maxAttempts: /],
    ['an unknown delivery', { task: 't', delivery: 'twice' as 'at_least_once' }, /^delivery: /],
    ['an invalid date', { task: 't', runAfter: new Date('nope') }, /^runAfter: /],
    ['a date Postgres cannot hold', { task: 't', runAfter: new Date(-8.64e15) }, /^runAfter: /],
    ['an expiry before the start', { task: 't', runAfter: new Date(Date.now() + 60_000), expiresAt: new Date() }, /^expiresAt: /],
    ['a job that is not an object', null as unknown as JobSpec, /^job: /],
  ];

  it.each(cases)('%s', async (_name, spec, message) => {
    const before = await countByState(pool);
    const error = await enqueue(pool, spec).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toMatch(/\n/);
    // In a batch, the error names the job's position and nothing of the batch goes in.
    const batch = await enqueueMany(pool, [{ task: 'fine' }, spec]).catch((e: unknown) => e);
    expect((batch as Error).message).toMatch(new RegExp(`^jobs\\[1\\]\\.${message.source.slice(1)}`));
    expect(await countByState(pool)).toEqual(before);
  });

  it('the literal text \\u0000 (a backslash and five characters) is a valid payload, kept as written', async () => {
    const { id } = await enqueue(pool, { task: 't', payload: { s: '\\u0000' } });
    expect((await getJob(pool, id))?.payload).toEqual({ s: '\\u0000' });
  });
});

describe('every environment variable, wrong, is one line naming it', () => {
  const base = { DATABASE_URL: 'postgres://u@127.0.0.1:5432/db' };
  const numbers: [string, string, string][] = [
    // variable, below its range, above it
    ['WORKER_CONCURRENCY', '0', '1001'],
    ['WORKER_BATCH_SIZE', '0', '5001'],
    ['HEALTH_PORT', '-1', '65536'],
    ['HEALTH_STALL_MS', '999', '3600001'],
    ['SHUTDOWN_GRACE_MS', '-1', '3600001'],
    ['DB_POOL_SIZE', '1', '101'],
    ['DB_STATEMENT_TIMEOUT_MS', '99', '600001'],
    ['WORKER_LEASE_MS', '999', '3600001'],
    ['WORKER_POLL_MS', '9', '600001'],
    ['WORKER_RESCUE_INTERVAL_MS', '99', '600001'],
    ['JOB_RETENTION_HOURS', '-1', '1e8'],
    ['RETRY_BASE_MS', '-1', '86400001'],
    ['RETRY_MAX_MS', '-1', '604800001'],
    ['WORKER_CPU_THREADS', '0', '257'],
  ];
  const cases: [string, Record<string, string>][] = numbers.flatMap(([name, low, high]) => [
    [`${name}=${low}`, { [name]: low }],
    [`${name}=${high}`, { [name]: high }],
    [`${name}=ten`, { [name]: 'ten' }],
    [`${name}=1.5`, { [name]: name === 'JOB_RETENTION_HOURS' ? 'NaN' : '1.5' }],
  ] as [string, Record<string, string>][]);
  cases.push(
    ['WORKER_QUEUES=a,,b', { WORKER_QUEUES: 'a,,b' }],
    ['MIGRATE=maybe', { MIGRATE: 'maybe' }],
    ['LOG_LEVEL=loud', { LOG_LEVEL: 'loud' }],
    ['HEALTH_HOST=example.com', { HEALTH_HOST: 'example.com' }],
    ['PGPORT=0', { DATABASE_URL: '', PGPORT: '0' }],
    ['PGSSLMODE=prefer', { PGSSLMODE: 'prefer' }],
    ['DATABASE_URL=mysql://x/y', { DATABASE_URL: 'mysql://x/y' }],
    ['BACKLOG_METRIC=perhaps', { BACKLOG_METRIC: 'perhaps' }],
  );
  it.each(cases)('%s', (label, env) => {
    const name = label.split('=')[0]!;
    let error: unknown;
    try {
      parseWorkerConfig({ ...base, ...env });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as InvalidInputError).field).toBe(name);
    expect((error as Error).message).not.toMatch(/\n/);
  });

  it.each([
    ['WORKER_RESCUE_INTERVAL_MS', { WORKER_LEASE_MS: '5000', WORKER_RESCUE_INTERVAL_MS: '5000' }],
    ['RETRY_MAX_MS', { RETRY_BASE_MS: '5000', RETRY_MAX_MS: '4000' }],
    ['PGSSLROOTCERT', { PGSSLMODE: 'verify-full' }],
  ])('contradictory settings name %s', (name, env) => {
    expect(() => parseWorkerConfig({ ...base, ...env })).toThrow(new RegExp(`^${name}: `));
  });
});

describe('endpoints and logs keep secrets', () => {
  it('no password, payload, result or database error text in /healthz, /readyz, /metrics or the info log', async () => {
    await pool.query(`do $$ begin
      if not exists (select 1 from pg_roles where rolname = 'pgq_secret_user') then
        create role pgq_secret_user login superuser password 'hunter2-in-the-url';
      end if; end $$`);
    const secretUrl = new URL(url);
    secretUrl.username = 'pgq_secret_user';
    secretUrl.password = 'hunter2-in-the-url';
    const port = await freePort();
    const worker = spawnWorker({
      DATABASE_URL: secretUrl.toString(),
      HEALTH_PORT: String(port),
      LOG_LEVEL: 'info',
      WORKER_TASKS: path.join(root, 'test/fixtures/echo-tasks.ts'),
    });
    const jobs = await enqueueMany(pool, [
      { task: 'echo', payload: { secret: 'PAYLOAD-SECRET' } },
      { task: 'fail-with', payload: { message: 'ERROR-SECRET' }, maxAttempts: 1 },
      { task: 'no-such-task', payload: { secret: 'PAYLOAD-SECRET' } },
    ]);
    await waitFor(async () => {
      const states = await Promise.all(jobs.map(async (j) => (await getJob(pool, j.id))?.state));
      return states.every((s) => s === 'succeeded' || s === 'failed');
    }, 'the jobs to end').catch(async (error: Error) => {
      const states = await Promise.all(jobs.map(async (j) => (await getJob(pool, j.id))?.state));
      throw new Error(`${error.message}: ${states.join(',')} ${worker.stdout().slice(-1500)} ${worker.stderr().slice(-500)}`);
    });
    const bodies = await Promise.all(['/healthz', '/readyz', '/metrics', '/nope'].map(async (p) => (await fetch(`http://127.0.0.1:${port}${p}`)).text()));
    const log = worker.stdout() + worker.stderr();
    for (const text of [...bodies, log]) {
      expect(text).not.toMatch(/hunter2-in-the-url|PAYLOAD-SECRET|RESULT-SECRET/);
    }
    for (const body of bodies) expect(body).not.toMatch(/ERROR-SECRET|postgres:\/\//);
    expect(log).toMatch(/"message":"worker started"/);
  });

  it('a database that refuses the worker: /readyz says so generically, the details are in the log only', async () => {
    const port = await freePort();
    const refused = new URL(url);
    refused.pathname = '/no_such_database_here';
    refused.password = 'hunter2-in-the-url';
    const worker = spawnWorker({ DATABASE_URL: refused.toString(), HEALTH_PORT: String(port), MIGRATE: 'false' });
    const ready = await waitFor(async () => {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
      return r?.status === 503 ? r.text() : undefined;
    }, '/readyz to answer 503');
    expect(ready).not.toMatch(/no_such_database_here|hunter2|does not exist/);
    expect(worker.stdout() + worker.stderr()).not.toMatch(/hunter2/);
  });
});
