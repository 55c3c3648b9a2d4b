import type pg from 'pg';
import { InvalidInputError, isTransient } from './errors.ts';
import { jsonRefusal, textRefusal } from './poison.ts';
import { withPoolClient } from './pool-client.ts';
import * as q from './sql/enqueue.ts';
import type { Queryable } from './sql/shared.ts';
import { DELIVERIES, type EnqueueResult, type JobSpec } from './types.ts';

/** Where jobs go: a pool (batched with concurrent calls) or a client (the caller's transaction). */
export type Target = pg.Pool | pg.ClientBase;

/**
 * Whether `target` is a pool, from whichever copy of `pg` the application loaded: a monorepo, a
 * bundle or two versions in the tree give a pool that is no instance of our copy's class, and
 * `instanceof` would silently send it down the one-statement-per-call path. A pool counts its
 * clients; a client (pooled or not) does not.
 */
function isPool(target: Target): target is pg.Pool {
  const t = target as Partial<pg.Pool>;
  return typeof t.connect === 'function' && typeof t.totalCount === 'number' && typeof t.idleCount === 'number' && typeof t.options === 'object';
}

/** Largest payload accepted, as JSON bytes. Rows this big already slow every claim that reads them. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
const MAX_ROWS_PER_STATEMENT = 5_000;

/**
 * Check a job and turn it into a row. Errors name the field (and the job's position in a batch)
 * so a caller can tell which input was wrong.
 */
export function toRow(spec: JobSpec, where = ''): q.NewJobRow {
  const field = (name: string) => `${where}${name}`;
  if (typeof spec !== 'object' || spec === null) throw new InvalidInputError(field('job'), 'expected an object with a task');
  if (typeof spec.task !== 'string' || spec.task.trim() === '' || spec.task.length > 200) {
    throw new InvalidInputError(field('task'), `expected a task name (1-200 characters), got ${JSON.stringify(spec.task)}`);
  }
  let payload: string | undefined;
  try {
    payload = JSON.stringify(spec.payload ?? {});
  } catch (error) {
    // V8's circular-structure message runs over several lines; the first says it.
    throw new InvalidInputError(field('payload'), `not JSON-serialisable (${(error as Error).message.split('\n')[0]})`);
  }
  if (payload === undefined) throw new InvalidInputError(field('payload'), 'not JSON-serialisable');
  const refusal = jsonRefusal(payload);
  if (refusal) throw new InvalidInputError(field('payload'), refusal);
  const bytes = Buffer.byteLength(payload);
  if (bytes > MAX_PAYLOAD_BYTES) {
    throw new InvalidInputError(field('payload'), `${bytes} bytes of JSON exceeds the ${MAX_PAYLOAD_BYTES}-byte limit; store large data elsewhere and pass a reference`);
  }
  const queue = spec.queue ?? 'default';
  if (typeof queue !== 'string' || queue.trim() === '' || queue.length > 100) {
    throw new InvalidInputError(field('queue'), `expected a queue name (1-100 characters), got ${JSON.stringify(spec.queue)}`);
  }
  for (const [name, value] of [['task', spec.task], ['queue', queue], ['idempotencyKey', spec.idempotencyKey]] as const) {
    const problem = typeof value === 'string' ? textRefusal(value) : undefined;
    if (problem) throw new InvalidInputError(field(name), problem);
  }
  const priority = spec.priority ?? 0;
  if (!Number.isInteger(priority) || priority < -2147483648 || priority > 2147483647) {
    throw new InvalidInputError(field('priority'), `expected a whole number (32-bit), got ${JSON.stringify(spec.priority)}`);
  }
  const runAfter = date(spec.runAfter, field('runAfter'));
  const expiresAt = date(spec.expiresAt, field('expiresAt'));
  if (expiresAt && expiresAt.getTime() <= (runAfter ?? new Date()).getTime()) {
    throw new InvalidInputError(field('expiresAt'), `is not after ${runAfter ? 'runAfter' : 'now'}: the job could never run`);
  }
  const delivery = spec.delivery ?? 'at_least_once';
  if (!DELIVERIES.includes(delivery)) {
    throw new InvalidInputError(field('delivery'), `expected one of ${DELIVERIES.join(', ')}, got ${JSON.stringify(spec.delivery)}`);
  }
  const maxAttempts = spec.maxAttempts ?? (delivery === 'at_most_once' ? 1 : 5);
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 1000) {
    throw new InvalidInputError(field('maxAttempts'), `expected a whole number from 1 to 1000, got ${JSON.stringify(spec.maxAttempts)}`);
  }
  if (delivery === 'at_most_once' && maxAttempts !== 1) {
    throw new InvalidInputError(field('maxAttempts'), 'must be 1 for an at_most_once job: a retry would run it twice');
  }
  const key = spec.idempotencyKey ?? null;
  if (key !== null && (typeof key !== 'string' || key === '' || key.length > 500)) {
    throw new InvalidInputError(field('idempotencyKey'), `expected a string of 1-500 characters, got ${JSON.stringify(key)}`);
  }
  return { task: spec.task, payload, queue, priority, runAfter, expiresAt, maxAttempts, delivery, idempotencyKey: key };
}

// Postgres timestamps run from 4713 BC to 294276 AD; a JS Date reaches further back.
const EARLIEST_TIMESTAMP_MS = Date.UTC(-4712, 0, 1);
const LATEST_TIMESTAMP_MS = 8.64e15;

function date(value: unknown, field: string): Date | null {
  if (value === undefined || value === null) return null;
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new InvalidInputError(field, `expected a valid Date, got ${JSON.stringify(value)}`);
  }
  if (value.getTime() < EARLIEST_TIMESTAMP_MS || value.getTime() >= LATEST_TIMESTAMP_MS) {
    throw new InvalidInputError(field, `expected a date from 4713 BC to 275760 AD (what Postgres and JavaScript both hold), got ${value.toISOString()}`);
  }
  return value;
}

/** Insert validated rows through one client, unkeyed in bulk, keyed with their own statement. */
async function insertRows(db: Queryable, rows: q.NewJobRow[]): Promise<EnqueueResult[]> {
  const results: EnqueueResult[] = new Array(rows.length);
  const plain: number[] = [];
  const keyed: number[] = [];
  rows.forEach((r, i) => (r.idempotencyKey === null ? plain : keyed).push(i));
  for (let start = 0; start < plain.length; start += MAX_ROWS_PER_STATEMENT) {
    const part = plain.slice(start, start + MAX_ROWS_PER_STATEMENT);
    const ids = await q.insertJobs(db, part.map((i) => rows[i]!));
    part.forEach((rowIndex, k) => (results[rowIndex] = { id: ids[k]!, created: true }));
  }
  for (let start = 0; start < keyed.length; start += MAX_ROWS_PER_STATEMENT) {
    const part = keyed.slice(start, start + MAX_ROWS_PER_STATEMENT);
    const out = await q.insertKeyedJobs(db, part.map((i) => rows[i]!));
    // A key taken by a row earlier in the same statement, or by a transaction that committed
    // while this one waited, is not visible to the statement's snapshot: look it up afresh.
    const missing = out.flatMap((r, k) => (r.id === '' ? [rows[part[k]!]!.idempotencyKey!] : []));
    const found = missing.length > 0 ? await q.jobIdsForKeys(db, missing) : new Map<string, string>();
    part.forEach((rowIndex, k) => {
      const r = out[k]!;
      results[rowIndex] = { id: r.id || found.get(rows[rowIndex]!.idempotencyKey!) || '', created: r.created };
    });
  }
  return results;
}

/**
 * Enqueue many jobs at once. Through a pool they go in one transaction, all or none; through a
 * client they join whatever transaction the caller has open.
 */
export async function enqueueMany(target: Target, specs: readonly JobSpec[]): Promise<EnqueueResult[]> {
  const rows = specs.map((s, i) => toRow(s, `jobs[${i}].`));
  if (rows.length === 0) return [];
  // One statement is atomic by itself: no BEGIN/COMMIT round trips for the common bulk case.
  const oneStatement = rows.length <= MAX_ROWS_PER_STATEMENT && rows.every((r) => r.idempotencyKey === null);
  if (!isPool(target) || oneStatement) return insertRows(target, rows);
  return withPoolClient(target, async (client) => {
    try {
      await client.query('begin');
      const results = await insertRows(client, rows);
      await client.query('commit');
      return results;
    } catch (error) {
      await client.query('rollback').catch(() => {});
      throw error;
    }
  });
}

/**
 * Enqueue one job. Pass a client to enqueue inside your own transaction: the job exists only if
 * you commit. Through a pool, calls made at the same time share one INSERT (and one commit and
 * one NOTIFY), which is what makes many small concurrent enqueues fast.
 */
export async function enqueue(target: Target, spec: JobSpec): Promise<EnqueueResult> {
  const row = toRow(spec);
  if (!isPool(target) || row.idempotencyKey !== null) {
    const [result] = await insertRows(target, [row]);
    return result!;
  }
  return batcherFor(target).add(row);
}

interface Pending {
  row: q.NewJobRow;
  resolve: (r: EnqueueResult) => void;
  reject: (e: unknown) => void;
}

/**
 * Group commit for enqueue(): rows that arrive while earlier inserts are in flight wait and go
 * together in the next statement. A few statements may be in flight at once so one slow commit
 * does not hold everyone back.
 */
class EnqueueBatcher {
  private pending: Pending[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly maxInFlight: number,
  ) {}

  add(row: q.NewJobRow): Promise<EnqueueResult> {
    return new Promise((resolve, reject) => {
      this.pending.push({ row, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.maxInFlight || this.pending.length === 0) return;
    this.scheduled = true;
    // Let the calls made in this turn of the event loop join the batch.
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.inFlight >= this.maxInFlight || this.pending.length === 0) return;
    const batch = this.pending.splice(0, MAX_ROWS_PER_STATEMENT);
    this.inFlight++;
    try {
      await insertShared(this.pool, batch);
    } finally {
      this.inFlight--;
      this.schedule();
    }
  }
}

/**
 * Insert a shared batch. If Postgres refuses it for a reason that is not the connection, some
 * call's row is one it cannot store although it passed validation: halve until that call is
 * found, so only it gets the error and every other call's job is inserted.
 */
async function insertShared(pool: pg.Pool, batch: Pending[]): Promise<void> {
  try {
    const ids = await q.insertJobs(pool, batch.map((p) => p.row));
    batch.forEach((p, i) => p.resolve({ id: ids[i]!, created: true }));
  } catch (error) {
    if (batch.length === 1 || isTransient(error)) {
      for (const p of batch) p.reject(error);
      return;
    }
    const half = Math.ceil(batch.length / 2);
    await insertShared(pool, batch.slice(0, half));
    await insertShared(pool, batch.slice(half));
  }
}

const batchers = new WeakMap<pg.Pool, EnqueueBatcher>();

function batcherFor(pool: pg.Pool): EnqueueBatcher {
  let batcher = batchers.get(pool);
  if (!batcher) {
    batcher = new EnqueueBatcher(pool, Math.max(1, Math.min(4, pool.options.max ?? 10)));
    batchers.set(pool, batcher);
  }
  return batcher;
}
